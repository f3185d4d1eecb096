"""Copy a training run's selected model into ``models/`` as a shipped model (float16 storage).

The shipped file keeps the config, the normalisation constants and the run's metadata (data,
recipe, steps, wall time, validation history), so the model card can be checked against it.

    .venv/bin/python tools/ship_model.py runs/implicity_0_lite implicity-0-lite
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ship(run_dir: Path, name: str, which: str = "best.pt", selection: str = "") -> Path:
    from implicity.training.selection import ship_checkpoint

    return ship_checkpoint(run_dir / which, REPO / "models" / f"{name}.pt",
                           {"from": f"{run_dir.name}/{which}", "selection": selection})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the training run's out_dir")
    parser.add_argument("name", help="shipped name, implicity-<0|mono|stereo>[-variant]")
    parser.add_argument("--which", default="best.pt", help="best.pt (default) or final.pt")
    parser.add_argument("--selection", default="", help="why this checkpoint (recorded in the shipped file)")
    args = parser.parse_args(argv)
    target = ship(args.run_dir, args.name, args.which, args.selection)
    print(f"Shipped {args.run_dir / args.which} as {target} ({target.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
