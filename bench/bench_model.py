"""Benchmark: the ImpliCity network's speed (decoder queries/s, encoder time per patch, scatter).

The decoder is what DSM extraction spends its time in (many queries per encoded 64 m window), the
encoders run once per window, and the per-cell scatter is the point encoder's only non-dense step.
Reference-size and lite configs are timed on CPU, and on CUDA when available. Prints numbers;
asserts nothing. Weights are random: speed does not depend on them.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import torch

from implicity.core.model import HAVE_TORCH_SCATTER, build_model, load_model_config, reference_config
from implicity.core.model import scatter as sc

DECODER_BATCHES = (65_536, 262_144, 1_048_576)


def _cores() -> int:
    """Cores this process may use (affinity-aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _timed(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 1) -> float:
    """Median seconds per call after ``warmup`` untimed calls (CUDA work is synchronised)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _patch_points(n: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """A normalised 64 m patch: uniform x, y in [0, 1], heights of a few metres around the median."""
    gen = torch.Generator().manual_seed(seed)
    pts = torch.rand(1, n, 3, generator=gen)
    pts[..., 2] = (pts[..., 2] - 0.5) * 0.5
    return pts.to(device)


def bench_decoder(device: torch.device, reps_scale: int) -> None:
    print(f"\n-- decoder (one encoded patch, queries per call), {device.type}")
    for label, config in (("reference ImpliCity-0", reference_config(0)),
                          ("lite ImpliCity-0", load_model_config("implicity_0_lite.yaml"))):
        model = build_model(config).to(device).eval()
        gen = torch.Generator().manual_seed(1)
        with torch.inference_mode():
            enc = model.encode(_patch_points(16_384, device))
            for m in DECODER_BATCHES:
                query = torch.rand(1, m, 3, generator=gen).to(device)
                # CPU: full reps at 64k, half at 256k, one call at 1M (the bench stays ~2 min on 2 cores)
                reps = {65_536: reps_scale, 262_144: max(1, reps_scale // 2)}.get(m, 1)
                if device.type == "cuda":
                    reps = 10
                dt = _timed(lambda: model.decode(query, enc), device, reps, warmup=1 if m < 1_048_576 else 0)
                print(f"{label:22s} {m:>9,} queries/call: {m / dt / 1e6:6.2f} M queries/s "
                      f"({dt * 1e3:8.1f} ms/call, {reps} reps)")


def bench_encoders(device: torch.device, n_points: int) -> None:
    print(f"\n-- encoders (one 64 m patch: {n_points:,} points, 128 px ortho), {device.type}")
    reps = 3 if device.type == "cpu" else 10
    points = _patch_points(n_points, device)
    image = torch.randn(1, 1, 128, 128, generator=torch.Generator().manual_seed(2)).to(device)
    for label, config in (("reference ImpliCity-mono", reference_config(1)),
                          ("lite ImpliCity-mono", load_model_config("implicity_mono_lite.yaml"))):
        model = build_model(config).to(device).eval()
        with torch.inference_mode():
            t_pts = _timed(lambda: model.points_encoder(points), device, reps)
            t_img = _timed(lambda: model.image_encoder(image), device, reps)
            t_all = _timed(lambda: model.encode(points, image), device, reps)
        print(f"{label:26s} points encoder {t_pts * 1e3:8.1f} ms   image encoder {t_img * 1e3:8.1f} ms   "
              f"encode() {t_all * 1e3:8.1f} ms")


def bench_scatter(device: torch.device) -> None:
    n, channels, cells = 100_000, 32, 128 * 128
    print(f"\n-- scatter ({n:,} points x {channels} channels into {cells:,} cells), {device.type}")
    gen = torch.Generator().manual_seed(3)
    src = torch.randn(1, channels, n, generator=gen).to(device)
    index = torch.randint(0, cells, (1, n), generator=gen).to(device)
    backends = [("native", False)] + ([("torch_scatter", True)] if HAVE_TORCH_SCATTER else [])
    reps = 5 if device.type == "cpu" else 20
    for name, ext in backends:
        with torch.inference_mode():
            t_max = _timed(lambda: sc.scatter_max(src, index, cells, use_torch_scatter=ext), device, reps)
            t_mean = _timed(lambda: sc.scatter_mean(src, index, cells, use_torch_scatter=ext), device, reps)
            t_pool = _timed(lambda: sc.pool_and_gather(src, index, cells, use_torch_scatter=ext), device, reps)
        print(f"{name:14s} scatter_max {t_max * 1e3:7.2f} ms   scatter_mean {t_mean * 1e3:7.2f} ms   "
              f"pool_and_gather {t_pool * 1e3:7.2f} ms")
    if not HAVE_TORCH_SCATTER:
        print("torch_scatter   not installed (native kernels only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=_cores(), help="torch CPU threads (default: cores)")
    parser.add_argument("--points", type=int, default=16_384, help="points per patch for the encoders")
    parser.add_argument("--reps", type=int, default=4,
                        help="CPU decoder repetitions at 64k queries (fewer for larger batches, at least 1)")
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA even when available")
    parser.add_argument("--cuda-only", action="store_true", help="skip the CPU (a GPU lease is short)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.cuda_only and not torch.cuda.is_available():
        parser.error("--cuda-only: PyTorch sees no CUDA device here")
    devices = [] if args.cuda_only else [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    names = ", ".join("cpu" if d.type == "cpu" else f"cuda ({torch.cuda.get_device_name(0)})" for d in devices)
    load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads ({_cores()} cores, load {load}), "
          f"devices: {names}, torch_scatter: {'yes' if HAVE_TORCH_SCATTER else 'no'}")
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5:
        print("note: other processes are busy; CPU timings with several threads suffer most (try --threads 1)")
    t0 = time.perf_counter()
    for device in devices:
        bench_decoder(device, args.reps)
        bench_encoders(device, args.points)
        bench_scatter(device)
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
