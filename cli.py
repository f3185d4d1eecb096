"""The ``implicity`` command line: one sub-command per job, each defined next to the code it runs.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, adding its sub-commands
with ``set_defaults(run=...)``. User errors (:class:`ImplicityError`) are printed as one clear
message with exit code 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from implicity.core.errors import CancelledError, ImplicityError

COMMAND_MODULES: tuple[str, ...] = (
    "implicity.core.commands",
    "implicity.core.reconstruct.commands",
    "implicity.training.data.commands",
    "implicity.training.trainer.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="implicity",
        description="ImpliCity: DSMs from photogrammetric point clouds and ortho-images.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.run(args)
    except CancelledError as exc:
        print(f"implicity {args.command}: cancelled: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"implicity {args.command}: interrupted; no partial output was kept.", file=sys.stderr)
        return 130
    except ImplicityError as exc:
        print(f"implicity {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
