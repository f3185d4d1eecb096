"""Train recipes under several seeds at once, with one LR cycle fitted to a time budget.

    python tools/train_seeds.py training/configs/implicity_mono_seeds_lite.yaml --seeds 1 2 3 4 \\
        --budget-s 420 --device cuda --data prepared/family_mono --out seeds_out
    python tools/train_seeds.py A.yaml B.yaml --seeds 0 ...      # runs A_seed0 and B_seed0 side by side

Why: a lent GPU machine is held for minutes, and a lite network's batch-1 step leaves most of the GPU
idle, so several runs fit beside each other. Runs that share a start and a recipe but not the order
and augmentation of their samples (the ``seed``) end in one basin at different points; their average
(a "model soup") is a candidate that no single run gives. Several recipes side by side compare
variants in the time of one.

How: all runs first train ``--probe-steps`` steps together (a probe, thrown away) to measure the
seconds per step with this many runs sharing the machine; the real runs then get one LR cycle of as
many steps as fit ``--budget-s`` (and ``--total-s``, the probe included; 27 % up, 73 % down, as the
225-step leaning cycle). A run still going at the budget's end plus ``--grace-s`` is stopped with
SIGINT (the trainer saves its resume state). Each run's folder in ``--out`` (``seedK``, or
``STEM_seedK`` for several recipes) holds its final.pt (the averaged weights when the recipe has
``optim.ema_decay``), train_log.csv, val_log.csv and run_summary.json (and last.ckpt for a run that
was stopped); ``plan.json`` says what was measured and chosen.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

UP_FRACTION = 60 / 225       # the leaning cycle's share of steps with a rising LR
OVERHEAD_S = 45.0            # a run's start-up, last validation and export, beside its steps
KEPT_FILES = ("final.pt", "train_log.csv", "val_log.csv", "run_summary.json", "train.out")


def _runs(recipes: list[Path], seeds: list[int]) -> dict[str, tuple[Path, int]]:
    """{run name: (recipe, seed)}: ``seedK`` for one recipe, ``STEM_seedK`` for several."""
    if len({r.stem for r in recipes}) < len(recipes):
        raise SystemExit("two recipes share a file name; give each its own")
    return {(f"{r.stem}_" if len(recipes) > 1 else "") + f"seed{s}": (r, s) for r in recipes for s in seeds}


def _run_config(name: str, base: Path, seed: int, folder: Path, steps: int, probe: bool) -> Path:
    """A YAML that inherits ``base`` and sets the seed and a one-cycle schedule of ``steps`` steps."""
    up = max(1, round(steps * UP_FRACTION))
    lines = [f"inherit_from: {base.resolve()}", f"name: {name}", f"seed: {seed}",
             "optim:", f"  step_size_up: {up}", f"  step_size_down: {max(1, steps - up)}",
             "schedule:", f"  max_steps: {steps}", f"  val_every: {steps}", f"  checkpoint_every: {steps}",
             f"  log_every: {1 if probe else 5}"]
    if probe:                      # the probe only times steps: validate on one patch
        lines += ["data:", "  max_val_patches: 1"]
    path = folder / f"{name}{'_probe' if probe else ''}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _launch(config: Path, out_dir: Path, args: argparse.Namespace, n_runs: int) -> subprocess.Popen:
    out_dir.mkdir(parents=True, exist_ok=True)
    # What `implicity train` calls, without the command's parser: a run needs only the trainer.
    data = repr(str(Path(args.data).resolve())) if args.data else "None"
    code = ("from implicity.training.trainer.session import run_training; "
            f"run_training({str(config)!r}, device={args.device!r}, out_dir={str(out_dir)!r}, "
            f"data_root={data}, progress_bar=False)")
    cmd = [sys.executable, "-c", code]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // (2 * n_runs))))
    with open(out_dir / "train.out", "w") as log:   # the child keeps its own copy of the handle
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _run_all(configs: dict[str, Path], folder: Path, args: argparse.Namespace,
             deadline: float | None) -> dict[str, int]:
    """Run every config at once; SIGINT whatever still runs at ``deadline``; exit codes by run name."""
    procs = {name: _launch(cfg, folder / name, args, len(configs)) for name, cfg in configs.items()}
    stopped = False
    while any(p.poll() is None for p in procs.values()):
        if deadline is not None and not stopped and time.monotonic() > deadline:
            for p in procs.values():
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGINT)
            stopped = True
        time.sleep(1.0)
    return {name: p.returncode for name, p in procs.items()}


def _seconds_per_step(log: Path, first: int) -> float:
    """Wall seconds per optimizer step after step ``first`` (start-up excluded), from train_log.csv."""
    with open(log, newline="") as f:
        rows = [(int(r["step"]), float(r["elapsed_s"])) for r in csv.DictReader(f)]
    later = [r for r in rows if r[0] >= first]
    if len(later) < 2:
        raise SystemExit(f"{log}: too few logged steps after step {first} to time the probe")
    (s0, t0), (s1, t1) = later[0], later[-1]
    return (t1 - t0) / (s1 - s0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", type=Path, nargs="+", help="the recipes (training YAMLs); each run inherits one")
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--budget-s", type=float, required=True, help="seconds of training for the real runs")
    ap.add_argument("--total-s", type=float, default=None,
                    help="seconds for everything, probe included: the real runs' steps are cut to fit")
    ap.add_argument("--grace-s", type=float, default=30.0, help="extra seconds before runs are stopped")
    ap.add_argument("--probe-steps", type=int, default=10)
    ap.add_argument("--min-steps", type=int, default=60)
    ap.add_argument("--max-steps", type=int, default=450)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=None, help="prepared patches (overrides the recipe's data.root)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    for recipe in args.configs:
        if not recipe.is_file():
            raise SystemExit(f"{recipe}: no such training YAML; give the path of a recipe, e.g. "
                             "training/configs/implicity_mono_seeds_lite.yaml")
    if len(set(args.seeds)) < len(args.seeds):
        raise SystemExit(f"--seeds {' '.join(map(str, args.seeds))}: each seed once")
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} already holds files (an earlier run?); give a new --out folder, so that "
                         "nothing there is overwritten")

    args.out.mkdir(parents=True, exist_ok=True)
    configs_dir = args.out / "configs"
    configs_dir.mkdir(exist_ok=True)
    t_start = time.monotonic()

    probe_dir = args.out / "probe"
    runs = _runs(args.configs, args.seeds)
    probe = {n: _run_config(n, r, s, configs_dir, args.probe_steps, probe=True) for n, (r, s) in runs.items()}
    codes = _run_all(probe, probe_dir, args, deadline=None)
    if any(codes.values()):
        bad = [n for n, c in codes.items() if c]
        print(f"probe failed for {', '.join(bad)}; see {probe_dir}/*/train.out", file=sys.stderr)
        return 1
    first = max(2, args.probe_steps // 3)
    rate = max(_seconds_per_step(probe_dir / n / "train_log.csv", first) for n in runs)
    probe_wall = time.monotonic() - t_start
    budget = args.budget_s
    if args.total_s is not None:   # start-up, the last validation and the export take ~OVERHEAD_S too
        budget = min(budget, args.total_s - probe_wall - args.grace_s - OVERHEAD_S)
    steps = int(min(args.max_steps, max(args.min_steps, budget // rate)))
    plan = {"runs": list(runs), "seeds": args.seeds, "probe_steps": args.probe_steps, "seconds_per_step": round(rate, 4),
            "probe_wall_s": round(probe_wall, 1), "steps": steps,
            "step_size_up": max(1, round(steps * UP_FRACTION)), "budget_s": round(budget, 1),
            "device": args.device, "configs": [str(c) for c in args.configs]}
    print(json.dumps(plan), flush=True)

    t_real = time.monotonic()
    real = {n: _run_config(n, r, s, configs_dir, steps, probe=False) for n, (r, s) in runs.items()}
    deadline = t_real + budget + OVERHEAD_S + args.grace_s
    codes = _run_all(real, args.out / "runs", args, deadline=deadline)
    plan.update(real_wall_s=round(time.monotonic() - t_real, 1), exit_codes=codes)
    for n in runs:
        run = args.out / "runs" / n
        keep = args.out / n
        keep.mkdir(exist_ok=True)
        names = KEPT_FILES if (run / "final.pt").exists() else KEPT_FILES + ("last.ckpt",)
        for name in names:
            if (run / name).exists():
                (keep / name).write_bytes((run / name).read_bytes())
    (args.out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    print(json.dumps(plan), flush=True)
    return 0 if not any(codes.values()) else 2


if __name__ == "__main__":
    sys.exit(main())
