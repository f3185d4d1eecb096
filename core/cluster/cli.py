"""The command-line flags of a city-scale run (``implicity reconstruct --workers N | --scheduler ADDR``)."""
from __future__ import annotations

import argparse

from .run import DEFAULT_BLOCK_SIZE, ClusterOptions


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    """``--workers``, ``--scheduler``, ``--block-size``, ``--scratch-dir``, ``--retries``."""
    g = p.add_argument_group("city scale (Dask)", "Without --workers or --scheduler everything runs in this process.")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="Start a local Dask cluster of N worker processes (torch threads per worker: cores / N; "
                        "with CUDA, one worker per GPU) and cut the extent into blocks, one task each. The points "
                        "are first streamed into per-block files, so the input may be larger than memory.")
    g.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="Use an existing Dask cluster. Its workers must see the inputs, the model and "
                        "--scratch-dir at the same paths (a shared filesystem).")
    g.add_argument("--block-size", type=float, default=DEFAULT_BLOCK_SIZE, metavar="M",
                   help=f"Block side in metres, rounded to whole window strides (default {DEFAULT_BLOCK_SIZE:g}); "
                        "a worker's memory grows with it, not with the input.")
    g.add_argument("--scratch-dir", default=None, metavar="DIR",
                   help="Where the per-block point files go (default: the output's folder); removed at the end, "
                        "after an error and after Ctrl-C. Needs about 32 bytes per point.")
    g.add_argument("--retries", type=int, default=2, metavar="N",
                   help="Extra attempts for a block whose task failed (default 2); a block that still fails "
                        "stops the run with its name.")


def cluster_options_from_args(args: argparse.Namespace) -> ClusterOptions | None:
    """The cluster options, or None for the single-process run (neither --workers nor --scheduler)."""
    if args.workers is None and not args.scheduler:
        return None
    return ClusterOptions(workers=args.workers, scheduler=args.scheduler, block_size=args.block_size,
                          scratch_dir=args.scratch_dir, retries=args.retries)
