"""`make demo`: the shipped ImpliCity models on a bundled real scene, against the classical baseline.

Scene: the city centre of Nîmes (IGN LiDAR HD, bundled in ``data/``, Etalab 2.0). The LiDAR gives
the reference DSM; a **simulated** satellite-stereo cloud made from it (sparser, noisy, occlusion
holes, smeared building edges: see ``training/data/simulate.py``) is the input; the ortho-image is
rasterised from the LiDAR's per-point colours (taken from a real orthophoto). From that input we
make the baseline DSM (median gridding + outlier filter + IDW fill), the same baseline
median-filtered over 3 × 3 pixels, and the ImpliCity-0, -mono and (when shipped) -stereo DSMs —
stereo's second view is the ortho parallax-warped with the reference heights, a simulation —,
evaluate them against the reference, and draw one figure.

The shipped models were trained on synthetic cities and on the three western quarters of this
scene; the eastern quarter (the "held-out" row of the tables) was never seen in training.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from implicity.core.baseline import make_baseline_dsm
from implicity.core.errors import ImplicityError
from implicity.core.evaluation import EvaluationReport, evaluate_dsm
from implicity.core.ortho import write_ortho_from_points
from implicity.core.pointcloud import read_point_cloud, write_point_cloud_npz
from implicity.core.raster import read_band, read_raster_on_grid, write_geotiff
from implicity.core.reference import make_reference_dsm

REPO = Path(__file__).resolve().parent
DATA_DIRS = (REPO / "data", REPO.parent / "shared" / "data")
NIMES = "nimes_lidarhd/subsampled_nimes.laz"
NIMES_CRS = "EPSG:2154"               # the LAZ header carries none
HELD_OUT_FROM = 0.75                  # the prepare configs' strips [train, train, val, test] along x
SIMULATION_SEED = 7                   # another noise draw than the training data's (seed 1)
BASELINE = {"statistic": "median", "outlier_threshold": 3.0, "fill": "idw"}


def find_data(relative: str) -> Path:
    """A bundled data file (repo ``data/``), else the shared data folder beside the checkout."""
    for base in DATA_DIRS:
        if (base / relative).exists():
            return base / relative
    raise ImplicityError(f"Demo data {relative} not found in: " + ", ".join(str(b) for b in DATA_DIRS))


def hillshade(dsm: np.ndarray, res: float, azimuth: float = 315.0, altitude: float = 45.0) -> np.ndarray:
    """Classic hillshade in [0, 1] for figures."""
    gy, gx = np.gradient(np.nan_to_num(dsm, nan=float(np.nanmedian(dsm))), res)
    slope = np.pi / 2 - np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    az, alt = np.radians(360 - azimuth + 90), np.radians(altitude)
    shade = np.sin(alt) * np.sin(slope) + np.cos(alt) * np.cos(slope) * np.cos(az - aspect)
    return np.clip(shade, 0, 1)


def make_figure(out_png: Path, rasters: dict[str, Path], reference: Path) -> None:
    """Hillshades side by side (top) and error maps against the reference (bottom), one PNG."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():  # Debian's mpl_toolkits beside the venv's matplotlib: harmless
        warnings.simplefilter("ignore", UserWarning)
        import matplotlib.pyplot as plt

    ref, grid = read_band(reference, "reference DSM")
    names = list(rasters)
    aspect = grid.height / grid.width
    fig, axes = plt.subplots(2, len(names) + 1, figsize=(4.2 * (len(names) + 1), 8.4 * aspect + 1.2),
                             constrained_layout=True)
    axes[0, 0].imshow(hillshade(ref, grid.resolution), cmap="gray")
    axes[0, 0].set_title("reference (LiDAR)")
    axes[1, 0].imshow(ref, cmap="terrain")
    axes[1, 0].set_title("reference height (m)")
    held_out_col = HELD_OUT_FROM * grid.width
    for i, name in enumerate(names, start=1):
        dsm = read_raster_on_grid(str(rasters[name]), grid, "nearest", what=name)[0]
        axes[0, i].imshow(hillshade(dsm, grid.resolution), cmap="gray")
        axes[0, i].set_title(name)
        im = axes[1, i].imshow(dsm - ref, cmap="RdBu_r", vmin=-3, vmax=3)
        axes[1, i].set_title(f"{name} − reference (m)")
        axes[1, i].axvline(held_out_col, color="k", lw=0.8, ls="--")
    fig.colorbar(im, ax=axes[1, -1], shrink=0.8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Nîmes (IGN LiDAR HD): simulated satellite-stereo input; right of the dashed line = held out")
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def write_masks(reference: Path, held_out: Path, elevated: Path) -> None:
    """0/1 masks on the reference grid: the held-out eastern quarter, and elevated objects.

    Nîmes' LiDAR is unclassified, so there is no building mask; "elevated" (more than 2.5 m above
    a 40 m morphological ground estimate: buildings and trees) stands in for it in the tables.
    """
    from scipy import ndimage

    ref, grid = read_band(reference, "reference DSM")
    cols = np.arange(grid.width)[None, :].repeat(grid.height, axis=0)
    write_geotiff(held_out, (cols >= HELD_OUT_FROM * grid.width).astype(np.uint8), grid, nodata=None, dtype="uint8")
    filled = np.where(np.isfinite(ref), ref, np.nanmin(ref))
    size = int(round(40.0 / grid.resolution))
    ground = ndimage.grey_opening(filled, size=(size, size))
    write_geotiff(elevated, ((filled - ground) > 2.5).astype(np.uint8), grid, nodata=None, dtype="uint8")


def run(out_dir: Path, resolution: float = 0.5, device: str = "auto") -> dict[str, Path]:
    """Write every demo output (inputs, DSMs, evaluation, figure) to ``out_dir``; returns their paths."""
    from implicity.core.reconstruct import ReconstructionInputs, ReconstructionOptions, reconstruct_dsm
    from implicity.core.shipped_models import default_model
    from implicity.training.data.simulate import StereoSimulationConfig, simulate_stereo_cloud

    out_dir.mkdir(parents=True, exist_ok=True)
    lidar = find_data(NIMES)
    o = {name: out_dir / f"nimes_{name}" for name in (
        "reference.tif", "ortho.tif", "ortho_view2.tif", "input_cloud.npz", "baseline.tif", "baseline_smooth3.tif",
        "implicity0.tif", "implicity_mono.tif", "implicity_mono_confidence.tif", "implicity_stereo.tif",
        "held_out.tif", "elevated.tif", "evaluation.json", "demo.png")}
    models = {n: default_model(n) for n in (0, 1, 2)}
    if models[0] is None or models[1] is None:
        raise ImplicityError("no shipped model in models/ (need implicity-0*.pt and implicity-mono*.pt); "
                             "train them with `implicity train training/configs/implicity_0_lite.yaml` etc.")

    steps = 6 if models[2] is None else 7
    print(f"[1/{steps}] reference DSM from {lidar.name} (IGN LiDAR HD, Etalab 2.0)")
    cloud = read_point_cloud(lidar, crs=NIMES_CRS)
    grid = make_reference_dsm(cloud, o["reference.tif"], resolution)
    extent = grid.bounds
    write_masks(o["reference.tif"], o["held_out.tif"], o["elevated.tif"])
    print(f"[2/{steps}] ortho-image from the points' colours; simulated satellite-stereo input cloud")
    write_ortho_from_points(cloud, grid, o["ortho.tif"])
    simulated = simulate_stereo_cloud(cloud, StereoSimulationConfig(gsd=resolution), seed=SIMULATION_SEED).cloud
    write_point_cloud_npz(o["input_cloud.npz"], simulated)
    print(f"      {len(cloud):,} LiDAR points -> {len(simulated):,} simulated stereo points")
    print(f"[3/{steps}] baseline DSMs (median per cell, 3 m outlier filter, IDW fill; and the same, 3 x 3 median-filtered)")
    make_baseline_dsm(o["input_cloud.npz"], o["baseline.tif"], resolution, extent=extent, **BASELINE)
    make_baseline_dsm(o["input_cloud.npz"], o["baseline_smooth3.tif"], resolution, extent=extent, smooth=3,
                      **BASELINE)
    runs = [("ImpliCity-0", o["implicity0.tif"], (), None, models[0]),
            ("ImpliCity-mono", o["implicity_mono.tif"], (o["ortho.tif"],), o["implicity_mono_confidence.tif"],
             models[1])]
    if models[2] is not None:
        from implicity.training.data.stereo_view import parallax_view

        ortho, _ = read_band(o["ortho.tif"], "ortho")
        ref, _ = read_band(o["reference.tif"], "reference DSM")
        write_geotiff(o["ortho_view2.tif"], parallax_view(ortho, ref, resolution), grid)
        runs.append(("ImpliCity-stereo", o["implicity_stereo.tif"], (o["ortho.tif"], o["ortho_view2.tif"]), None,
                     models[2]))
    for step, (name, path, orthos, confidence, model) in enumerate(runs, start=4):
        print(f"[{step}/{steps}] {name} DSM with the shipped model {model.name}")
        result = reconstruct_dsm(
            ReconstructionInputs(points=o["input_cloud.npz"], model=model, out_path=path, resolution=resolution,
                                 orthos=orthos, confidence_path=confidence, extent=extent),
            ReconstructionOptions(device=device))
        print(f"      {result.tiles} windows on {result.device} in {result.seconds:.1f} s")
    print(f"[{steps}/{steps}] evaluation against the reference\n")
    masks = {"held-out": o["held_out.tif"], "elevated": o["elevated.tif"]}
    reports: dict[str, EvaluationReport] = {}
    dsms = {"baseline": o["baseline.tif"], "baseline 3×3 median": o["baseline_smooth3.tif"],
            **{name: path for name, path, *_ in runs}}
    for name, path in dsms.items():
        reports[name] = evaluate_dsm(path, o["reference.tif"], extra_masks=masks)
        print(f"{name} vs reference (m):\n{reports[name].as_table()}\n")
    import json

    o["evaluation.json"].write_text(json.dumps({k: r.to_dict() for k, r in reports.items()}, indent=2))
    make_figure(o["demo.png"], {k: v for k, v in dsms.items() if k != "baseline"}, o["reference.tif"])
    print("Outputs:")
    for name, path in o.items():
        if not path.exists():
            continue
        print(f"  {name:<32} {path}")
    return o


def main(argv: list[str] | None = None) -> int:
    """``python -m implicity.demo``: run the demo, print where its outputs are."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda[:N]")
    args = parser.parse_args(argv)
    try:
        run(Path(args.out), device=args.device)
    except ImplicityError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
