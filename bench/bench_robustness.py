"""Benchmark: the reconstruction on real satellite photogrammetry and on hostile input (issue 10).

Part 1 — the real Pléiades stereo cloud over Toulouse (``../shared/data/toulouse_pleiades``,
EPSG:32631, no CRS in its header) at 0.5 m, fast mode, shipped ImpliCity-0 model:

* **interior pits**: among the pixels outside the outer 4 px band that have input points in the
  5 m × 5 m square around them (11 × 11 px), the share whose height lies more than 3 m below the
  lowest of those points (target ≤ 0.1 %);
* **border band**: over the outer 4 px, the median |DSM − 5 × 5 median of the gridded input| (the
  per-cell highest point; target ≤ 0.5 m). The classical baseline DSM is measured the same way.

Part 2 — stray points: the same cloud as NPZ, once clean, once with a point at (0, 0, 0), once
with a point at z = 1e9 over its centre. Each is reconstructed by ``implicity reconstruct`` in a
fresh process; printed: the largest |difference| to the clean DSM (target ≤ 0.01 m) and the peak
RSS of the process (target < 1.5 GB).

Part 3 — the frame of the demo: the Nîmes scene of ``make demo`` (reference from the bundled
LiDAR, the same simulated satellite-stereo input, seed 7), ImpliCity-0 at 0.5 m; printed: the
median |DSM − reference| in the outer 4 px band and inside it, for the baseline and ImpliCity-0.

Run: ``.venv/bin/python bench/bench_robustness.py [--device cpu] [--threads N] [--skip-demo] [--symmetries N]``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

REPO = Path(__file__).resolve().parents[1]
PLEIADES = REPO.parent / "shared" / "data" / "toulouse_pleiades" / "toulouse_cars_pleiades.laz"
PLEIADES_CRS = "EPSG:32631"
BAND_PX = 4


def _nan_filter(a: np.ndarray, size: int, reduce) -> np.ndarray:
    """NaN-ignoring ``reduce`` over a size × size square around every pixel."""
    r = size // 2
    windows = sliding_window_view(np.pad(a, r, constant_values=np.nan), (size, size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return reduce(windows.reshape(a.shape[0], a.shape[1], -1), axis=-1)


def _read(path: Path):
    import rasterio

    from implicity.core.raster import GridSpec

    with rasterio.open(path) as src:
        return src.read(1, masked=True).filled(np.nan), GridSpec(src.crs, src.transform, src.width, src.height)


def _band(shape: tuple[int, int]) -> np.ndarray:
    band = np.zeros(shape, bool)
    band[:BAND_PX], band[-BAND_PX:], band[:, :BAND_PX], band[:, -BAND_PX:] = True, True, True, True
    return band


def pits_and_border(dsm: np.ndarray, grid, xyz: np.ndarray) -> dict[str, float]:
    """The two numbers of the issue's done-when criterion (see the module docstring)."""
    from implicity.core.gridding import grid_points

    size = int(round(5.0 / grid.resolution)) + 1  # 11 px = the pixel ± 2.5 m
    lowest = _nan_filter(grid_points(xyz, grid, "min").astype(np.float64), size, np.nanmin)
    band = _band(dsm.shape)
    interior = ~band & np.isfinite(lowest) & np.isfinite(dsm)
    pits = interior & (dsm < lowest - 3.0)
    smooth = _nan_filter(grid_points(xyz, grid, "max").astype(np.float64), 5, np.nanmedian)
    ok = band & np.isfinite(smooth) & np.isfinite(dsm)
    return {
        "pits_percent": 100.0 * pits.sum() / max(interior.sum(), 1),
        "deepest_pit_m": float(np.nanmax(np.where(interior, lowest - dsm, np.nan))),
        "border_medae_m": float(np.median(np.abs(dsm - smooth)[ok])),
        "interior_medae_m": float(np.median(np.abs(dsm - smooth)[interior & np.isfinite(smooth)])),
        "dsm_min": float(np.nanmin(dsm)),
        "nodata_px": int((~np.isfinite(dsm)).sum()),
    }


def part1(args: argparse.Namespace, tmp: Path) -> None:
    from implicity.core.baseline import make_baseline_dsm
    from implicity.core.pointcloud import read_point_cloud
    from implicity.core.reconstruct import ReconstructionInputs, ReconstructionOptions, reconstruct_dsm
    from implicity.core.shipped_models import default_model

    cloud = read_point_cloud(PLEIADES, crs=PLEIADES_CRS)
    print(f"Part 1: Pléiades stereo cloud, {len(cloud):,} points, z {cloud.xyz[:, 2].min():.2f}.."
          f"{cloud.xyz[:, 2].max():.2f}; 0.5 m, fast mode, {default_model(0).name}, {args.symmetries} copies")
    t0 = time.perf_counter()
    res = reconstruct_dsm(ReconstructionInputs(points=cloud, model=default_model(0), out_path=tmp / "pl.tif",
                                               resolution=0.5),
                         ReconstructionOptions(device=args.device, symmetries=args.symmetries))
    dt = time.perf_counter() - t0
    make_baseline_dsm(cloud, tmp / "pl_baseline.tif", 0.5)
    for name, path in (("ImpliCity-0", tmp / "pl.tif"), ("baseline (max, IDW)", tmp / "pl_baseline.tif")):
        dsm, grid = _read(path)
        m = pits_and_border(dsm, grid, cloud.xyz)
        print(f"  {name:<20} interior pits {m['pits_percent']:.3f} % (deepest {m['deepest_pit_m']:.2f} m below the "
              f"local lowest point), border band median |DSM - 5x5 median of gridded input| "
              f"{m['border_medae_m']:.3f} m (interior {m['interior_medae_m']:.3f} m), DSM min {m['dsm_min']:.2f}, "
              f"nodata {m['nodata_px']} px")
    s = res.stats
    print(f"  reconstruction: {dt:.1f} s, {res.tiles} windows, {s.get('clamped_pixels', 0):,} px clamped to the "
          f"envelope, {s.get('edge_blended_pixels', 0):,} px blended near the outer edge, "
          f"{s.get('out_of_reach_pixels', 0):,} px out of reach (decodings counted per window)")


# The child reports its own high-water mark (VmHWM): getrusage would also count the pages it
# shared with this (large) parent between fork and exec.
_CHILD = """
import sys
from implicity.cli import main
try:
    rc = main(sys.argv[1:])
finally:
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print("VmHWM_KB", hwm.split()[1], file=sys.stderr)
sys.exit(rc)
"""


def _run_measured(argv: list[str], log: Path) -> tuple[int, float, float]:
    """Run ``implicity ARGV`` in a fresh process; (exit code, seconds, peak RSS in MB)."""
    t0 = time.perf_counter()
    with open(log, "w") as err:
        rc = subprocess.run([sys.executable, "-c", _CHILD, *argv], stdout=subprocess.DEVNULL, stderr=err,
                            cwd=REPO).returncode
    dt = time.perf_counter() - t0
    kb = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("VmHWM_KB")]
    return rc, dt, float(kb[-1]) / 1024.0 if kb else float("nan")


def part2(args: argparse.Namespace, tmp: Path) -> None:
    from implicity.core.pointcloud import PointCloud, read_point_cloud, write_point_cloud_npz

    cloud = read_point_cloud(PLEIADES, crs=PLEIADES_CRS)
    cx, cy = (float(v) for v in cloud.xyz[:, :2].mean(axis=0))
    files = {"clean": cloud.xyz, "(0, 0, 0)": np.vstack([cloud.xyz, [[0.0, 0.0, 0.0]]]),
             "z = 1e9": np.vstack([cloud.xyz, [[cx, cy, 1e9]]])}
    print("Part 2: stray points, `implicity reconstruct` at 0.5 m in a fresh process each")
    dsms = {}
    for i, (name, xyz) in enumerate(files.items()):
        pts = tmp / f"stray{i}.npz"
        write_point_cloud_npz(pts, PointCloud(xyz=xyz, crs=cloud.crs, source=name))
        out = tmp / f"stray{i}.tif"
        rc, dt, rss = _run_measured(["reconstruct", "--points", str(pts), "--resolution", "0.5", "--out", str(out),
                                     "--device", args.device, "--quiet"], tmp / f"stray{i}.log")
        note = next((line.strip() for line in (tmp / f"stray{i}.log").read_text().splitlines() if "ignored" in line),
                    "")
        if rc != 0:
            print(f"  {name:<10} exit {rc}: {(tmp / f'stray{i}.log').read_text()[-300:]}")
            continue
        dsms[name] = _read(out)[0]
        diff = "" if name == "clean" else (
            f", max |DSM - clean DSM| = {np.nanmax(np.abs(dsms[name] - dsms['clean'])):.4f} m"
            if dsms[name].shape == dsms["clean"].shape else f", shape {dsms[name].shape} != {dsms['clean'].shape}")
        print(f"  {name:<10} exit {rc}, {dt:.1f} s, peak RSS {rss:,.0f} MB{diff}" + (f"\n             log: {note}" if note else ""))


def part3(args: argparse.Namespace, tmp: Path) -> None:
    from implicity.core.baseline import make_baseline_dsm
    from implicity.core.pointcloud import read_point_cloud
    from implicity.core.reconstruct import ReconstructionInputs, ReconstructionOptions, reconstruct_dsm
    from implicity.core.reference import make_reference_dsm
    from implicity.core.shipped_models import default_model
    from implicity.demo import BASELINE, NIMES, NIMES_CRS, SIMULATION_SEED, find_data
    from implicity.training.data.simulate import StereoSimulationConfig, simulate_stereo_cloud

    lidar = read_point_cloud(find_data(NIMES), crs=NIMES_CRS)
    grid = make_reference_dsm(lidar, tmp / "ref.tif", 0.5)
    sim = simulate_stereo_cloud(lidar, StereoSimulationConfig(gsd=0.5), seed=SIMULATION_SEED).cloud
    print(f"Part 3: the demo's Nîmes scene ({len(sim):,} simulated stereo points), 0.5 m, |DSM - LiDAR reference|")
    make_baseline_dsm(sim, tmp / "nimes_baseline.tif", 0.5, extent=grid.bounds, **BASELINE)
    reconstruct_dsm(ReconstructionInputs(points=sim, model=default_model(0), out_path=tmp / "nimes_i0.tif",
                                         resolution=0.5, extent=grid.bounds), ReconstructionOptions(device=args.device))
    ref, _ = _read(tmp / "ref.tif")
    band = _band(ref.shape)
    for name, path in (("baseline", tmp / "nimes_baseline.tif"), ("ImpliCity-0", tmp / "nimes_i0.tif")):
        err = np.abs(_read(path)[0] - ref)
        print(f"  {name:<12} median |error| outer {BAND_PX} px {np.nanmedian(err[band]):.3f} m, inside "
              f"{np.nanmedian(err[~band]):.3f} m; bottom row median signed error "
              f"{np.nanmedian((_read(path)[0] - ref)[-1]):+.2f} m")


def main() -> int:
    from implicity.core.vocabulary import SYMMETRY_COUNTS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda[:N]")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in this process (default: all)")
    parser.add_argument("--skip-demo", action="store_true", help="skip part 3 (the Nîmes scene)")
    parser.add_argument("--symmetries", type=int, default=1, choices=SYMMETRY_COUNTS,
                        help="part 1: average this many turned / mirrored copies (reconstruct --symmetries)")
    args = parser.parse_args()
    if not PLEIADES.is_file():
        print(f"bench_robustness: {PLEIADES} not found (the shared data folder beside the checkout)")
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        part1(args, Path(tmp))
        part2(args, Path(tmp))
        if not args.skip_demo:
            part3(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
