"""Benchmark: the fast reconstruction mode vs the reference-algorithm mode, and memory vs extent.

Part 1 runs both modes with the same network weights on the same synthetic city (points generated
here: terrain, box buildings, 0.3 m noise, 4 points/m²) and prints seconds per km² at 0.5 m for
each, the speed-up, the MedAE between the two DSMs, each mode's MedAE against the true surface, the
correlation of the confidence raster with the fast mode's error, and peak RSS.
Part 2 runs the fast mode in fresh processes on 0.25 km² and 4 km² and prints their peak RSS next to
the memory of the point cloud itself: everything else is bounded by a band of output rows.

Part 3 runs the fast mode over a whole 1 × 1 km city at 0.5 m (the speed target, measured, not
extrapolated). The network is the shipped ImpliCity-0 model unless ``--model`` names another
checkpoint or ``--random-model`` asks for the lite network with random weights (briefly fitted).
Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

from implicity.core.pointcloud import PointCloud
from implicity.core.reconstruct import ReconstructionInputs, ReconstructionOptions, reconstruct_dsm

CRS = "EPSG:2154"
X0, Y0 = 700000.0, 6600000.0


def city_heights(side: float, seed: int = 0, cell: float = 1.0) -> np.ndarray:
    """A (n, n) height raster at ``cell`` m: rolling terrain + box buildings of 4..40 m."""
    rng = np.random.default_rng(seed)
    n = int(np.ceil(side / cell))
    c = (np.arange(n) + 0.5) * cell
    xx, yy = np.meshgrid(c, c[::-1])
    h = 50.0 + 6.0 * np.sin(xx / 170.0) + 4.0 * np.cos(yy / 130.0)
    n_buildings = int(side * side / 900.0)
    for _ in range(n_buildings):
        bx, by = rng.uniform(0, side, 2)
        w, d = rng.uniform(8, 30, 2)
        r0, r1 = int((side - by - d) / cell), int((side - by) / cell)
        c0, c1 = int(bx / cell), int((bx + w) / cell)
        h[max(r0, 0):max(r1, 0), c0:c1] = np.maximum(h[max(r0, 0):max(r1, 0), c0:c1], 50.0 + rng.uniform(4, 40))
    return h.astype(np.float32)


def city_points(side: float, density: float = 4.0, seed: int = 0) -> tuple[PointCloud, np.ndarray]:
    heights = city_heights(side, seed)
    rng = np.random.default_rng(seed + 1)
    n = int(side * side * density)
    xy = rng.uniform(0, side, (n, 2))
    rows = np.clip((side - xy[:, 1]).astype(np.int64), 0, heights.shape[0] - 1)
    cols = np.clip(xy[:, 0].astype(np.int64), 0, heights.shape[1] - 1)
    z = heights[rows, cols] + rng.normal(0, 0.3, n).astype(np.float32)
    xyz = np.column_stack([xy[:, 0] + X0, xy[:, 1] + Y0, z])
    del xy, z, rows, cols
    from rasterio.crs import CRS as RioCRS

    return PointCloud(xyz=xyz, crs=RioCRS.from_user_input(CRS), source="synthetic city"), heights


def make_model(path: str | None, device: str, fit_steps: int = 0):
    """The trained checkpoint, or the lite ImpliCity-0 network (seed 0), briefly fitted if asked."""
    if path:
        return path, f"trained checkpoint {path}"
    from implicity.core.model import build_model, load_model_config

    torch.manual_seed(0)
    config = load_model_config(Path(__file__).resolve().parents[1] / "core/model/configs/implicity_0_lite.yaml")
    model = build_model(config)
    if fit_steps <= 0:
        return model.eval(), "implicity_0_lite, random weights (seed 0)"
    t0 = time.perf_counter()
    loss = quick_fit(model, fit_steps)
    return model.eval(), (f"implicity_0_lite, seed 0, fitted {fit_steps} steps on the synthetic city "
                          f"(final BCE {loss:.3f}, {time.perf_counter() - t0:.0f} s)")


def quick_fit(model: torch.nn.Module, steps: int, side: float = 256.0) -> float:
    """A short occupancy fit on another synthetic city (seed 1), so the network's surface is near the
    points and the accuracy columns mean something; this is not a training recipe."""
    cloud, heights = city_points(side, seed=1)
    rng = np.random.default_rng(2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    z_std = float(model.config.z_std)
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        ox, oy = rng.uniform(0, side - 64, 2)
        xy = cloud.xyz[:, :2] - (X0, Y0)
        sel = (xy[:, 0] >= ox) & (xy[:, 0] < ox + 64) & (xy[:, 1] >= oy) & (xy[:, 1] < oy + 64)
        pts = cloud.xyz[sel] - (X0 + ox, Y0 + oy, 0.0)
        shift = float(np.median(pts[:, 2]))
        pn = np.column_stack([pts[:, 0] / 64, pts[:, 1] / 64, (pts[:, 2] - shift) / z_std]).astype(np.float32)
        qxy = rng.uniform(0, 64, (4096, 2))
        r = np.clip((side - (qxy[:, 1] + oy)).astype(int), 0, heights.shape[0] - 1)
        c = np.clip((qxy[:, 0] + ox).astype(int), 0, heights.shape[1] - 1)
        surf = heights[r, c]
        qz = np.where(rng.random(4096) < 0.7, surf + rng.normal(0, 1.5, 4096), shift + rng.uniform(-30, 50, 4096))
        q = np.column_stack([qxy / 64, (qz - shift) / z_std]).astype(np.float32)
        label = torch.from_numpy((qz < surf).astype(np.float32))[None]
        logits = model.decode(torch.from_numpy(q)[None], model.encode(torch.from_numpy(pn)[None], None))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_value = loss.item()
    return loss_value


def read(path: Path) -> np.ndarray:
    """Band 1 of a GeoTIFF as float, NaN where no data (the DSMs the benchmarks compare)."""
    with rasterio.open(path) as src:
        return src.read(1, masked=True).filled(np.nan)


def truth_on_grid(heights: np.ndarray, resolution: float) -> np.ndarray:
    """The city's 1 m true heights repeated onto the output grid (1 m is a multiple of the resolutions used)."""
    k = int(round(1.0 / resolution))
    return np.repeat(np.repeat(heights, k, axis=0), k, axis=1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def compare(args: argparse.Namespace):
    """Part 1; returns the model used (for part 2)."""
    side = args.side
    cloud, heights = city_points(side)
    model, label = make_model(args.model, args.device, args.fit_steps)
    km2 = (side / 1000.0) ** 2
    print(f"Part 1: {side:g} x {side:g} m synthetic city, {len(cloud):,} points, 0.5 m pixels; model: {label}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up (untimed): loading the checkpoint and PyTorch's first-call allocations are a
        # per-process constant that would otherwise be charged to whichever mode runs first.
        t0 = time.perf_counter()
        reconstruct_dsm(ReconstructionInputs(points=cloud, model=model, out_path=Path(tmp) / "warm.tif",
                                             resolution=0.5, extent=(X0, Y0, X0 + 64.0, Y0 + 64.0)),
                        ReconstructionOptions(device=args.device))
        print(f"  warm-up (model load + first calls, one 64 m window, not counted): {time.perf_counter() - t0:.1f} s")
        for mode in ("fast", "reference"):
            # Timed as the reference generator runs: the DSM alone (the confidence output is optional
            # and has no counterpart there; its cost is measured separately below).
            inputs = ReconstructionInputs(points=cloud, model=model, out_path=Path(tmp) / f"{mode}.tif",
                                          resolution=0.5, extent=(X0, Y0, X0 + side, Y0 + side))
            options = ReconstructionOptions(mode=mode, device=args.device, fill="none")
            times = []
            for _ in range(3 if mode == "fast" else 1):  # the short fast run is timed 3 times (median)
                t0 = time.perf_counter()
                res = reconstruct_dsm(inputs, options)
                times.append(time.perf_counter() - t0)
            dt = float(np.median(times))
            results[mode] = (read(res.dsm_path), dt, res)
            print(f"  {mode:9s}: {dt:7.1f} s  = {dt / km2:8.0f} s/km²  ({res.tiles} windows, "
                  f"{res.stats['queries'] / max(res.stats['decoded_pixels'], 1):.1f} queries per decoded pixel, "
                  f"{res.stats['queries'] / 1e6:.1f} M queries, encode {res.stats['encode_s']:.1f} s, "
                  f"search {res.stats['search_s']:.1f} s, device {res.device})")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = ReconstructionInputs(points=cloud, model=model, out_path=Path(tmp) / "c.tif", resolution=0.5,
                                      confidence_path=Path(tmp) / "conf.tif", extent=(X0, Y0, X0 + side, Y0 + side))
        t0 = time.perf_counter()
        conf = read(reconstruct_dsm(inputs, ReconstructionOptions(device=args.device, fill="none")).confidence_path)
        conf_dt = time.perf_counter() - t0
    print(f"  fast with the confidence raster: {conf_dt:.1f} s ({conf_dt / km2:.0f} s/km²)")
    fast, ref = results["fast"][0], results["reference"][0]
    both = np.isfinite(fast) & np.isfinite(ref)
    truth = truth_on_grid(heights, 0.5)[:fast.shape[0], :fast.shape[1]]
    medae = float(np.median(np.abs(fast - ref)[both])) if both.any() else float("nan")
    # Noise floor: the same fast mode with windows at other positions (stride 40 m instead of 48 m).
    with tempfile.TemporaryDirectory() as tmp:
        inputs = ReconstructionInputs(points=cloud, model=model, out_path=Path(tmp) / "shifted.tif", resolution=0.5,
                                      extent=(X0, Y0, X0 + side, Y0 + side))
        shifted = read(reconstruct_dsm(inputs, ReconstructionOptions(mode="fast", device=args.device, fill="none",
                                                                     window_stride=40.0)).dsm_path)
    print(f"  speed-up fast vs reference: {results['reference'][1] / results['fast'][1]:.1f}x")
    print(f"  MedAE(fast, reference) = {medae:.4f} m over {both.mean() * 100:.1f} % of the pixels "
          f"(valid: fast {np.isfinite(fast).mean() * 100:.1f} %, reference {np.isfinite(ref).mean() * 100:.1f} %)")
    ok = np.isfinite(fast) & np.isfinite(shifted)
    print(f"  noise floor: MedAE(fast, fast with windows at a 40 m stride) = "
          f"{np.median(np.abs(fast - shifted)[ok]):.4f} m (how much the network depends on where the window is)")
    for mode in ("fast", "reference"):
        d = results[mode][0]
        ok = np.isfinite(d)
        print(f"  MedAE({mode}, true surface) = {np.median(np.abs(d - truth)[ok]):.3f} m")
    ok = np.isfinite(conf) & np.isfinite(fast)
    if ok.sum() > 10:
        from scipy.stats import spearmanr

        rho = spearmanr(conf[ok], np.abs(fast - truth)[ok]).correlation
        print(f"  Spearman(confidence, |fast − truth|) = {rho:.3f} (negative = confident pixels are more accurate)")
    print(f"  peak RSS of this process: {peak_rss_mb():.0f} MB")
    return model


def child_memory(side: float, resolution: float, device: str, model_path: str | None, state: str | None) -> None:
    """Run in a fresh process: fast mode over side x side m; print JSON with peak RSS."""
    cloud, _ = city_points(side)
    cloud_mb = cloud.xyz.nbytes / 2**20
    n = len(cloud)
    model, _ = make_model(model_path, device)
    if state and not model_path:
        model.load_state_dict(torch.load(state, weights_only=True))
    rss_before = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = ReconstructionInputs(points=cloud, model=model, out_path=Path(tmp) / "dsm.tif", resolution=resolution)
        del cloud
        t0 = time.perf_counter()
        res = reconstruct_dsm(inputs, ReconstructionOptions(device=device))
        dt = time.perf_counter() - t0
    print(json.dumps(dict(side=side, points=n, cloud_mb=cloud_mb, rss_before_mb=rss_before,
                          peak_rss_mb=peak_rss_mb(), seconds=dt, windows=res.tiles)))


def memory(args: argparse.Namespace, state: str | None) -> None:
    print(f"Part 2: peak RSS of the fast mode vs extent ({args.mem_resolution:g} m pixels, 4 points/m², "
          "fresh process each)")
    for side in (500.0, 2000.0):
        cmd = [sys.executable, __file__, "--child-memory", str(side), "--mem-resolution", str(args.mem_resolution),
               "--device", args.device] + (["--model", args.model] if args.model else []) \
            + (["--child-state", state] if state else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"  {side / 1000:g} x {side / 1000:g} km: {r['points']:,} points ({r['cloud_mb']:.0f} MB as float64), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB (before the run {r['rss_before_mb']:.0f} MB), "
              f"{r['windows']} windows in {r['seconds']:.0f} s")


def one_km2(args: argparse.Namespace, model) -> None:
    """Part 3: the fast mode over a whole 1 x 1 km synthetic city at 0.5 m (the speed target, measured)."""
    cloud, heights = city_points(1000.0, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = ReconstructionInputs(points=cloud, model=model, out_path=Path(tmp) / "km2.tif", resolution=0.5,
                                      extent=(X0, Y0, X0 + 1000.0, Y0 + 1000.0))
        t0 = time.perf_counter()
        res = reconstruct_dsm(inputs, ReconstructionOptions(device=args.device))
        dt = time.perf_counter() - t0
        truth = truth_on_grid(heights, 0.5)
        dsm = read(res.dsm_path)
        ok = np.isfinite(dsm)
    print(f"Part 3: 1 x 1 km at 0.5 m ({len(cloud):,} points), fast mode: {dt:.1f} s, {res.tiles} windows, "
          f"device {res.device}; MedAE vs true surface {np.median(np.abs(dsm - truth)[ok]):.3f} m")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller comparison area, skip the 4 km² run")
    parser.add_argument("--model", default=None,
                        help="trained checkpoint (default: the shipped ImpliCity-0 model; with --random-model, "
                             "the lite network with random weights, briefly fitted)")
    parser.add_argument("--random-model", action="store_true", help="use the random lite network instead")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fit-steps", type=int, default=None,
                        help="without --model: fit the random lite network this many steps first "
                             "(default 150, --quick 60; 0 = pure random weights)")
    parser.add_argument("--side", type=float, default=None, help="side of the comparison area in m")
    parser.add_argument("--mem-resolution", type=float, default=2.0,
                        help="pixel size of the memory runs (memory is what is measured; 2 m keeps them short)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--child-memory", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-state", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None and not args.random_model:
        from implicity.core.shipped_models import default_model

        shipped = default_model(0)
        args.model = str(shipped) if shipped else None
    if args.child_memory is not None:
        child_memory(args.child_memory, args.mem_resolution, args.device, args.model, args.child_state)
        return
    args.side = args.side or (64.0 if args.quick else 128.0)
    if args.fit_steps is None:
        args.fit_steps = 60 if args.quick else 150
    torch.set_num_threads(torch.get_num_threads())
    model = compare(args)
    if not args.quick:
        one_km2(args, model)
    if not (args.quick or args.skip_memory):
        with tempfile.TemporaryDirectory() as tmp:
            state = None
            if isinstance(model, torch.nn.Module):
                state = str(Path(tmp) / "weights.pt")
                torch.save(model.state_dict(), state)
            memory(args, state)


if __name__ == "__main__":
    main()
