"""Benchmark: the fast mode against the paper's generator (the ``reference`` mode), per scene.

Scenes (128 × 128 m at 0.5 m, the shipped ImpliCity-0 weights unless ``--model``):

* **Nîmes**: the bundled IGN LiDAR HD sample degraded by the stereo simulation of the demo (seed
  as in ``demo.py``), the 128 m square at the centre of its extent;
* **synthetic city**: terrain + box buildings, 4 points/m², 0.3 m noise (``bench_reconstruct.py``).

For each: windows, decoder queries and queries per output pixel, seconds (best of ``--repeat``),
the speed-up, the MedAE (and 95th percentile) between the two DSMs, the decoder's FLOP/s against
this machine's measured float32 matmul peak, seconds per km², and both DSMs' MedAE against the surface the
cloud was made from (Nîmes: the LiDAR's reference DSM; the city: its generating heights), overall and where
the two modes differ by more than 0.25 m (which mode is right there, and which lies higher), and the agreement
with the reference held to the points' own range as the fast mode holds its heights (the searches alone). Then (unless ``--no-load``) the threads part:
in a fresh process per setting (thread policy, OpenMP wait policy, nice), a fast run idle and one
next to a busy competing process (a single-threaded spinner), and the slow-down factor.
Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_reconstruct import city_points, read, truth_on_grid  # noqa: E402 - a sibling benchmark's scene

from implicity.core.pointcloud import PointCloud  # noqa: E402
from implicity.core.reconstruct import ReconstructionInputs, ReconstructionOptions, reconstruct_dsm  # noqa: E402

SIDE = 128.0
RES = 0.5


def nimes_scene() -> tuple[PointCloud, tuple[float, float, float, float]]:
    """The demo's simulated stereo cloud of the bundled Nîmes sample, and a 128 m square extent."""
    import demo
    from implicity.core.pointcloud import read_point_cloud
    from implicity.training.data.simulate import StereoSimulationConfig, simulate_stereo_cloud

    lidar = demo.find_data(demo.NIMES)
    cloud = read_point_cloud(lidar, crs=demo.NIMES_CRS)
    sim = simulate_stereo_cloud(cloud, StereoSimulationConfig(gsd=RES), seed=demo.SIMULATION_SEED).cloud
    xmin, ymin, xmax, ymax = sim.bounds
    cx, cy = np.floor((xmin + xmax) / 2), np.floor((ymin + ymax) / 2)
    return sim, (cx - SIDE / 2, cy - SIDE / 2, cx + SIDE / 2, cy + SIDE / 2)


def city_scene() -> tuple[PointCloud, tuple[float, float, float, float]]:
    cloud, _ = city_points(SIDE)
    x0, y0 = cloud.xyz[:, 0].min(), cloud.xyz[:, 1].min()
    x0, y0 = np.floor(x0), np.floor(y0)
    return cloud, (x0, y0, x0 + SIDE, y0 + SIDE)


def true_surface(key: str, extent: tuple[float, float, float, float], tmp: Path) -> np.ndarray:
    """The surface the scene's cloud was made from, on the DSMs' grid: for Nîmes the reference DSM of the
    bundled LiDAR (made as the demo makes it), for the city the heights that generated its points."""
    if key == "nimes":
        import demo
        from implicity.core.reference import make_reference_dsm

        make_reference_dsm(demo.find_data(demo.NIMES), tmp / "truth.tif", RES, points_crs=demo.NIMES_CRS,
                           extent=extent)
        return read(tmp / "truth.tif")
    _, heights = city_points(SIDE)
    return truth_on_grid(heights, RES)


def reference_in_points_range(cloud, extent, ref: np.ndarray) -> np.ndarray | None:
    """The reference DSM clipped per pixel to the points' robust range, [lo, hi] of the evidence rules
    (``core/reconstruct/evidence.py``, default options), which bound the fast mode's heights by design and
    the paper's generator not at all: what is left between the modes is their searches' difference."""
    from implicity.core.raster import GridSpec
    from implicity.core.reconstruct.evidence import window_evidence

    opts = ReconstructionOptions()
    grid = GridSpec.from_bounds(*extent, RES, None)
    if (grid.height, grid.width) != ref.shape:
        return None
    ev = window_evidence(np.asarray(cloud.xyz, dtype=np.float64), grid, 0, 0, ref.shape, opts.evidence,
                         opts.fill_max_distance)
    lo, hi = (bound.reshape(ref.shape) for bound in ev.envelope(opts.evidence.keep_margin))
    return np.where(np.isfinite(lo), np.clip(ref, lo, hi), ref)


DEVICE = "cpu"  # --device: where both modes run (the same device for both, so the ratio is fair)


def run(cloud, extent, model, mode: str, out: Path, repeat: int, **options):
    best = None
    for _ in range(repeat):
        result = reconstruct_dsm(ReconstructionInputs(points=cloud, model=model, out_path=out, resolution=RES,
                                                      extent=extent),
                                 ReconstructionOptions(device=DEVICE, mode=mode, **options))
        if best is None or result.seconds < best.seconds:
            best = result
    return best


def decoder_flops_per_query(model) -> float:
    """Multiply-adds × 2 of the decoder's linear layers for one query (feature sampling not counted)."""
    dec = getattr(model, "decoder", None)
    if dec is None:
        return float("nan")
    flops = 0
    for m in dec.modules():
        if isinstance(m, torch.nn.Linear):
            flops += 2 * m.in_features * m.out_features
    return float(flops)


def column_flops_per_query(model) -> float:
    """The same for the fast mode's column decoding: only the residual blocks, the output layer and
    the height term run per query (features and their projections run once per pixel)."""
    dec = getattr(model, "decoder", None)
    if dec is None:
        return float("nan")
    flops = 2 * dec.fc_p.out_features + 2 * dec.fc_out.in_features * dec.fc_out.out_features
    for block in dec.blocks:
        flops += sum(2 * m.in_features * m.out_features for m in block.modules() if isinstance(m, torch.nn.Linear))
    return float(flops)


def matmul_peak_gflops(n: int = 1024, reps: int = 10) -> float:
    """float32 matmul rate on DEVICE (a larger product on CUDA, synchronised before reading the clock)."""
    device = torch.device(DEVICE)
    if device.type == "cuda":
        n, reps = 8192, 20
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        x += 1


def compare(name: str, cloud, extent, model, repeat: int, peak: float, tmp: Path,
            truth: np.ndarray | None = None) -> None:
    from implicity.core.model import load_model

    net = load_model(model)[0] if isinstance(model, (str, Path)) else model
    fpq = {"reference": decoder_flops_per_query(net), "fast": column_flops_per_query(net)}
    ref = run(cloud, extent, model, "reference", tmp / f"{name}_ref.tif", 1)
    fast = run(cloud, extent, model, "fast", tmp / f"{name}_fast.tif", repeat)
    a, b = read(fast.dsm_path), read(ref.dsm_path)
    signed = (a - b)[np.isfinite(a) & np.isfinite(b)]
    d = np.abs(signed)
    px = fast.width * fast.height
    km2 = px * RES * RES / 1e6
    print(f"\n{name}: {len(cloud):,} points in the cloud, {fast.width} x {fast.height} px at {RES} m")
    print(f"  {'mode':<10}{'windows':>8}{'queries':>12}{'q/pixel':>9}{'encode s':>10}{'search s':>10}"
          f"{'total s':>9}{'s/km²':>9}{'dec GFLOP/s':>13}")
    for label, r in (("reference", ref), ("fast", fast)):
        q = r.stats.get("queries", 0)
        search = r.stats.get("search_s", float("nan"))
        gflops = q * fpq[label] / search / 1e9 if search > 0 else float("nan")
        print(f"  {label:<10}{r.tiles:>8}{q / 1e6:>11.2f}M{q / px:>9.1f}{r.stats.get('encode_s', 0):>10.2f}"
              f"{search:>10.2f}{r.seconds:>9.2f}{r.seconds / km2:>9.0f}{gflops:>13.2f}")
    print(f"  speed-up fast vs reference: {ref.seconds / fast.seconds:.1f}x")
    print(f"  fast vs reference: MedAE {np.median(d):.5f} m, P95 {np.percentile(d, 95):.3f} m, "
          f"share > 0.25 m {np.mean(d > 0.25):.3f} ({d.size} px)")
    # The reference keeps the highest occupied sample of its last round, on average half its final
    # step below the crossing that the fast mode interpolates: that part of the MedAE is by design.
    half = ReconstructionOptions().reference_search.final_step / 2
    print(f"  signed median fast - reference {np.median(signed):+.3f} m (the reference's final step / 2: "
          f"{half:.3f} m); MedAE without that offset {np.median(np.abs(signed - half)):.3f} m")
    if truth is not None and truth.shape == a.shape:  # which mode is right where they disagree
        ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(truth)
        far = ok & (np.abs(a - b) > 0.25)
        err = {"fast": np.abs(a - truth), "reference": np.abs(b - truth)}
        print(f"  against the true surface: MedAE fast {np.median(err['fast'][ok]):.3f} m, reference "
              f"{np.median(err['reference'][ok]):.3f} m; where the modes differ by > 0.25 m "
              f"({far.sum() / max(ok.sum(), 1):.1%} of px): fast {np.median(err['fast'][far]):.3f} m, "
              f"reference {np.median(err['reference'][far]):.3f} m, fast closer on "
              f"{np.mean(err['fast'][far] < err['reference'][far]):.1%} of them, the reference higher on "
              f"{np.mean(b[far] > a[far]):.1%}")
    kept = reference_in_points_range(cloud, extent, b)
    if kept is not None:  # the search alone: the reference held to the range the fast mode keeps heights in
        dk = np.abs(a - kept)[np.isfinite(a) & np.isfinite(kept)]
        print(f"  fast vs reference kept within the points' own range (as the fast mode keeps its heights; no "
              f"despeckle or edge blend): MedAE {np.median(dk):.5f} m, share > 0.25 m {np.mean(dk > 0.25):.3f}")
    print(f"  decoder work per query: reference {fpq['reference'] / 1e3:.1f} kFLOP (whole decoder), fast "
          f"{fpq['fast'] / 1e3:.1f} kFLOP (column decoding); {DEVICE} float32 matmul peak {peak:.1f} GFLOP/s "
          "(measured); GFLOP/s above = decoder FLOPs / search seconds (search also holds the bookkeeping)")


LOAD_CONFIGS = (  # (label, threads policy, OMP_WAIT_POLICY, nice increment)
    ("torch default: all cores, OpenMP default wait", "all", None, 0),
    ("all cores, passive wait", "all", "PASSIVE", 0),
    ("auto (free cores), OpenMP default wait [default]", "auto", None, 0),
    ("auto (free cores), passive wait", "auto", "PASSIVE", 0),
    ("auto, passive wait, nice +10", "auto", "PASSIVE", 10),
)


def load_child(policy: str, nice: int, repeat: int) -> None:
    """In a fresh process (so the OpenMP setting applies): fast-mode seconds idle and next to one busy
    single-threaded competitor; prints one JSON line."""
    import json
    import os

    if nice:
        os.nice(nice)
    from implicity.core.shipped_models import default_model

    model = default_model(0)
    cloud, extent = nimes_scene()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        run(cloud, extent, model, "fast", tmp_path / "warm.tif", 1, threads=policy)
        idle = run(cloud, extent, model, "fast", tmp_path / "idle.tif", repeat, threads=policy).seconds
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        spinner = ctx.Process(target=_spin, args=(stop,), daemon=True)
        spinner.start()
        time.sleep(1.0)
        try:
            busy = run(cloud, extent, model, "fast", tmp_path / "busy.tif", repeat, threads=policy).seconds
        finally:
            stop.set()
            spinner.join(5)
    print(json.dumps({"idle": idle, "busy": busy}))


def load_test(repeat: int) -> None:
    """Fast-mode time idle and next to one busy competitor, per thread / wait / priority setting."""
    import json
    import os
    import subprocess

    print(f"\nThreads under load: Nîmes 128 m, fast mode, best of {repeat} runs, one fresh process per setting; "
          "competitor = one single-threaded busy loop")
    print(f"  {'setting':<46}{'idle s':>8}{'busy s':>8}{'busy/idle':>11}")
    for label, policy, wait, nice in LOAD_CONFIGS:
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        if wait:
            env["OMP_WAIT_POLICY"] = wait
        cmd = [sys.executable, __file__, "--load-child", policy, "--nice", str(nice), "--repeat", str(repeat)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"  {label:<46}{r['idle']:>8.2f}{r['busy']:>8.2f}{r['busy'] / r['idle']:>11.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped ImpliCity-0)")
    p.add_argument("--repeat", type=int, default=2, help="fast-mode runs per measurement (best is kept)")
    p.add_argument("--scenes", default="nimes,city")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]: both modes run there")
    p.add_argument("--no-load", action="store_true", help="skip the threads-under-load part")
    p.add_argument("--load-only", action="store_true", help="only the load part")
    p.add_argument("--load-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--nice", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if args.load_child:
        load_child(args.load_child, args.nice, args.repeat)
        return 0
    if args.load_only:
        load_test(args.repeat)
        return 0
    from implicity.core.shipped_models import default_model

    model = args.model or default_model(0)
    print(f"Model: {model}; torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, device {DEVICE}")
    peak = matmul_peak_gflops()
    scenes = {"nimes": ("Nîmes 128 m (simulated stereo)", nimes_scene), "city": ("synthetic city 128 m", city_scene)}
    with tempfile.TemporaryDirectory() as tmp:
        warm_cloud, warm_extent = city_scene()
        x0, y0 = warm_extent[:2]
        run(warm_cloud, (x0, y0, x0 + 64, y0 + 64), model, "fast", Path(tmp) / "warm.tif", 1)
        for key in args.scenes.split(","):
            label, make = scenes[key]
            cloud, extent = make()
            compare(label, cloud, extent, model, args.repeat, peak, Path(tmp), true_surface(key, extent, Path(tmp)))
    if not args.no_load:
        load_test(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
