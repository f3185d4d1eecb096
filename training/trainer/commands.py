"""CLI sub-command ``implicity train CONFIG.yaml [--resume] [--device ...]``.

Multi-GPU / multi-process: ``torchrun --nproc-per-node N -m implicity.cli train CONFIG.yaml``.
"""
from __future__ import annotations

import argparse

from implicity.core.commands import add_quiet_arg


def _run_train(args: argparse.Namespace) -> int:
    from implicity.core.errors import InputError, param

    from .session import run_training

    if args.max_steps is not None and args.max_steps < 1:
        raise InputError(f"{param('max_steps')} must be a positive number of optimizer steps, got "
                         f"{args.max_steps}; omit it to train for the config's schedule.max_steps.")

    result = run_training(args.config, resume=args.resume, device=args.device, out_dir=args.out_dir,
                          max_steps=args.max_steps, data_root=args.data,
                          progress_bar=not args.quiet)
    print(f"Training finished after {result['steps']} steps ({result['wall_time_s']:.0f} s).")
    print(f"Final model: {result['final']}")
    if result["best"]:
        print(f"Best model:  {result['best']} ({result['best_metrics']})")
    print(f"Run summary: {result['summary']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` to the ``implicity`` command."""
    p = subparsers.add_parser(
        "train", help="Train an ImpliCity network from a training YAML.",
        description="Train an ImpliCity network (headless). Logs (CSV, TensorBoard), the resume "
                    "checkpoint, best.pt, final.pt and run_summary.json go to the config's out_dir. "
                    "Ctrl-C saves a resume checkpoint. For several processes/GPUs start it with "
                    "torchrun --nproc-per-node N -m implicity.cli train CONFIG.yaml.")
    p.add_argument("config", metavar="CONFIG.yaml", help="Training config (may use inherit_from).")
    p.add_argument("--resume", action="store_true", help="Continue the run in out_dir from its last checkpoint.")
    p.add_argument("--device", default=None, metavar="DEV", help="auto, cpu, cuda or cuda:N (overrides the config).")
    p.add_argument("--out-dir", default=None, metavar="DIR", help="Run folder (overrides the config's out_dir).")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="Prepared patches (folder or manifest from `implicity prepare`; overrides data.root).")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="Optimizer steps to train in total (overrides schedule.max_steps; e.g. to extend a run).")
    add_quiet_arg(p)
    p.set_defaults(run=_run_train)
