"""`make demo`: the whole chain on bundled real data, with a table and a figure at the end.

Delft (AHN3 LiDAR, classified) is turned into a reference DSM + building mask; a degraded copy of
the same cloud plays the role of the photogrammetric input; from it we make the classical baseline
DSM and evaluate it against the reference. Outputs go to ``--out`` and their paths are printed.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from implicity.core.baseline import make_baseline_dsm
from implicity.core.errors import ImplicityError
from implicity.core.evaluation import evaluate_dsm
from implicity.core.pointcloud import PointCloud, read_point_cloud, write_point_cloud_npz
from implicity.core.reference import make_reference_dsm

REPO = Path(__file__).resolve().parent
DATA_DIRS = (REPO / "data", REPO.parent / "shared" / "data")


def find_data(relative: str) -> Path:
    """A bundled data file (repo ``data/``), else the shared data folder beside the checkout."""
    for base in DATA_DIRS:
        if (base / relative).exists():
            return base / relative
    raise ImplicityError(f"Demo data {relative} not found in: " + ", ".join(str(b) for b in DATA_DIRS))


def degrade(cloud: PointCloud, keep: float = 0.1, noise: float = 0.3, seed: int = 0) -> PointCloud:
    """A sparse, noisy copy of a LiDAR cloud (stand-in for a photogrammetric cloud)."""
    rng = np.random.default_rng(seed)
    sub = cloud.subset(rng.random(len(cloud)) < keep)
    xyz = sub.xyz.copy()
    xyz[:, 2] += rng.normal(0.0, noise, len(xyz))
    return replace(sub, xyz=xyz, classification=None, source=f"{cloud.source} (degraded)")


def hillshade(dsm: np.ndarray, res: float, azimuth: float = 315.0, altitude: float = 45.0) -> np.ndarray:
    """Classic hillshade in [0, 1] for figures."""
    gy, gx = np.gradient(np.nan_to_num(dsm, nan=float(np.nanmedian(dsm))), res)
    slope = np.pi / 2 - np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    az, alt = np.radians(360 - azimuth + 90), np.radians(altitude)
    shade = np.sin(alt) * np.sin(slope) + np.cos(alt) * np.cos(slope) * np.cos(az - aspect)
    return np.clip(shade, 0, 1)


def make_figure(out_png: Path, rasters: dict[str, Path], reference: Path) -> None:
    """Hillshades side by side, and error maps against the reference, in one PNG."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():  # Debian's mpl_toolkits beside the venv's matplotlib: harmless
        warnings.simplefilter("ignore", UserWarning)
        import matplotlib.pyplot as plt
    import rasterio

    with rasterio.open(reference) as src:
        ref = src.read(1, masked=True).filled(np.nan)
        res = src.res[0]
    names = list(rasters)
    fig, axes = plt.subplots(2, len(names) + 1, figsize=(4 * (len(names) + 1), 8), constrained_layout=True)
    axes[0, 0].imshow(hillshade(ref, res), cmap="gray")
    axes[0, 0].set_title("reference (LiDAR)")
    axes[1, 0].axis("off")
    for i, name in enumerate(names, start=1):
        with rasterio.open(rasters[name]) as src:
            dsm = src.read(1, masked=True).filled(np.nan)
        axes[0, i].imshow(hillshade(dsm, res), cmap="gray")
        axes[0, i].set_title(name)
        im = axes[1, i].imshow(dsm - ref, cmap="RdBu_r", vmin=-3, vmax=3)
        axes[1, i].set_title(f"{name} − reference (m)")
    fig.colorbar(im, ax=axes[1, -1], shrink=0.8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def run(out_dir: Path, resolution: float = 0.5) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    lidar = find_data("delft_ahn3/ahn3_cropped_1.laz")
    outputs = {
        "reference": out_dir / "delft_reference.tif", "building_mask": out_dir / "delft_buildings.tif",
        "input_cloud": out_dir / "delft_degraded_input.npz", "baseline": out_dir / "delft_baseline.tif",
        "evaluation": out_dir / "delft_evaluation.json", "figure": out_dir / "delft_demo.png",
    }
    print(f"[1/4] reference DSM + building mask from {lidar.name} (AHN3, CC0)")
    cloud = read_point_cloud(lidar, crs="EPSG:28992")
    make_reference_dsm(cloud, outputs["reference"], resolution, building_mask_out=outputs["building_mask"])
    print("[2/4] degraded input cloud (10 % of the points, 0.3 m height noise)")
    write_point_cloud_npz(outputs["input_cloud"], degrade(cloud))
    print("[3/4] baseline DSM from the degraded cloud")
    make_baseline_dsm(outputs["input_cloud"], outputs["baseline"], resolution)
    print("[4/4] evaluation against the reference\n")
    report = evaluate_dsm(outputs["baseline"], outputs["reference"], building_mask=outputs["building_mask"],
                          json_out=outputs["evaluation"])
    print("baseline vs reference:\n" + report.as_table() + "\n")
    make_figure(outputs["figure"], {"baseline": outputs["baseline"]}, outputs["reference"])
    print("Outputs:")
    for name, path in outputs.items():
        print(f"  {name:<14} {path}")
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    args = parser.parse_args(argv)
    try:
        run(Path(args.out))
    except ImplicityError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
