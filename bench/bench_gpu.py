"""Benchmark: 1 km² on the GPU and on the CPU of the same machine, at 0.5 m and 0.25 m.

The scene is the synthetic 1 × 1 km city of ``bench_reconstruct.py`` (terrain + box buildings,
4 points/m², 0.3 m noise), the network the shipped ImpliCity-0 (or ``--model``), the fast mode.
Per resolution and setting: seconds, seconds per km², windows, decoder queries per pixel, the
encode / search split, the decoder batch size, peak GPU memory, MedAE against the true surface and
MedAE against the CPU's DSM; then the CPU/GPU time ratio. Mixed precision (bf16, fp16) is compared
with float32 on the GPU. Each setting is warmed up once on a small extent first, so CUDA start-up
and kernel selection stay out of the numbers. Without CUDA only the CPU part runs (and says so).
Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_reconstruct import X0, Y0, city_points, read, truth_on_grid  # noqa: E402 - a sibling benchmark's scene

from implicity.core.reconstruct import ReconstructionInputs, ReconstructionOptions, reconstruct_dsm  # noqa: E402

SIDE = 1000.0


def one_run(cloud, model, resolution: float, device: str, precision: str, out: Path, side: float = SIDE):
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    result = reconstruct_dsm(
        ReconstructionInputs(points=cloud, model=model, out_path=out, resolution=resolution,
                             extent=(X0, Y0, X0 + side, Y0 + side)),
        ReconstructionOptions(device=device, precision=precision, threads="all"))
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.startswith("cuda") else float("nan")
    return result, seconds, peak


def medae(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.median(np.abs(a - b)[ok]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped ImpliCity-0)")
    p.add_argument("--resolutions", default="0.5,0.25")
    p.add_argument("--precisions", default="fp32,bf16,fp16", help="GPU settings compared (fp32 first)")
    p.add_argument("--side", type=float, default=SIDE, help="side of the square city in m (default 1000)")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU runs")
    p.add_argument("--cpu-resolutions", default=None, help="resolutions also run on the CPU (default: all)")
    args = p.parse_args(argv)
    from implicity.core.shipped_models import default_model

    model = args.model or default_model(0)
    has_cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if has_cuda else "none"
    print(f"Model: {model}; torch {torch.__version__}; GPU: {gpu}; CPU threads: {torch.get_num_threads()}")
    if not has_cuda:
        print("No CUDA device: only the CPU runs below.")
    cloud, heights = city_points(args.side, seed=3)
    print(f"Scene: synthetic city {args.side:.0f} x {args.side:.0f} m, {len(cloud):,} points; fast mode")
    cpu_res = [float(r) for r in (args.cpu_resolutions or args.resolutions).split(",")]
    rows: list[tuple[float, str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        settings = [("cuda", prec) for prec in args.precisions.split(",")] if has_cuda else []
        if not args.no_cpu:
            settings.append(("cpu", "auto"))
        for device, precision in settings:  # warm-up: CUDA context, kernels, checkpoint cache
            one_run(cloud, model, 0.5, device, precision, tmp_path / "warm.tif", side=64.0)
        for resolution in (float(r) for r in args.resolutions.split(",")):
            truth = truth_on_grid(heights, resolution)
            dsms: dict[str, np.ndarray] = {}
            for device, precision in settings:
                if device == "cpu" and resolution not in cpu_res:
                    continue
                label = f"{device} {precision if device != 'cpu' else 'fp32'}"
                out = tmp_path / f"{device}_{precision}_{resolution}.tif"
                result, seconds, peak = one_run(cloud, model, resolution, device, precision, out, args.side)
                dsm = read(out)
                dsms[label] = dsm
                px = result.width * result.height
                rows.append((resolution, label, seconds))
                q = result.stats.get("queries", 0)
                print(f"  {resolution:>5} m  {label:<10} {seconds:7.2f} s  {seconds / (args.side ** 2 / 1e6):7.2f} s/km²  "
                      f"{result.tiles:4d} windows  {q / px:5.1f} q/px  encode {result.stats.get('encode_s', 0):6.2f} s  "
                      f"search {result.stats.get('search_s', 0):6.2f} s  batch {result.stats.get('batch_size', 0):>9,}  "
                      f"GPU peak {peak:5.2f} GiB  MedAE vs truth {medae(dsm, truth):.3f} m", flush=True)
            base = dsms.get("cuda fp32")
            for label, dsm in dsms.items():
                if base is not None and label != "cuda fp32":
                    print(f"  {resolution:>5} m  {label} vs cuda fp32: MedAE {medae(dsm, base):.4f} m, "
                          f"P99 {np.nanpercentile(np.abs(dsm - base), 99):.3f} m")
    print("\nSummary (seconds per km², fast mode)")
    print(f"  {'res m':>6}{'setting':>12}{'s/km²':>9}{'CPU/this':>10}")
    for resolution, label, seconds in rows:
        cpu = next((s for r, lab, s in rows if r == resolution and lab.startswith("cpu")), None)
        ratio = f"{cpu / seconds:10.1f}" if cpu else f"{'-':>10}"
        print(f"  {resolution:>6}{label:>12}{seconds / (args.side ** 2 / 1e6):>9.2f}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
