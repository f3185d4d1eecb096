"""The ``implicity`` command line: one sub-command per job, each defined next to the code it runs.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, adding its sub-commands
with ``set_defaults(run=...)``. User errors (:class:`ImplicityError`) are printed as one clear
message with exit code 2, never as a traceback; the core parameters they name are written as the
sub-command's flags (a parameter named like an option's ``dest`` is that option; a sub-command
maps the others with ``set_defaults(parameter_flags={...})``).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Callable

from implicity.core.errors import CancelledError, ImplicityError

COMMAND_MODULES: tuple[str, ...] = (
    "implicity.core.commands",
    "implicity.core.reconstruct.commands",
    "implicity.training.data.commands",
    "implicity.training.trainer.commands",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``implicity`` parser with every module's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="implicity",
        description="ImpliCity: DSMs from photogrammetric point clouds and ortho-images.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def flag_namer(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Callable[[str], str]:
    """How the chosen sub-command names a core parameter: its flag (``out_path`` → ``--out``)."""
    flags: dict[str, str] = {}
    for action in parser._actions:  # argparse keeps its sub-parsers here only
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices.get(getattr(args, "command", None))
            for option in (sub._actions if sub is not None else []):
                if option.option_strings:
                    flags[option.dest] = max(option.option_strings, key=len)
    flags.update(getattr(args, "parameter_flags", {}) or {})
    return lambda name: flags.get(name, name)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``with``/``finally`` removes its temporary files."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``kill``, a batch system's time limit) exactly like Ctrl-C for the run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _configure_logging() -> None:
    """Warnings and progress notes of the library go to stderr as plain lines; the low-level
    chatter of GDAL and laspy (each failed TIFF write on a full disk, each LAZ backend tried on a
    truncated file) is left to our one-line errors."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for chatty in ("rasterio", "laspy"):  # their errors reach the user as our one-line InputErrors
        logging.getLogger(chatty).setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; user errors become one line on stderr and exit code 2 (130 when cancelled)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging()
    try:
        with _sigterm_as_interrupt():
            result = args.run(args)
    except CancelledError as exc:
        print(f"implicity {args.command}: cancelled: {exc.render(flag_namer(parser, args))}", file=sys.stderr)
        return 130
    except Terminated:
        print(f"implicity {args.command}: terminated (SIGTERM); no partial output was kept.", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"implicity {args.command}: interrupted; no partial output was kept.", file=sys.stderr)
        return 130
    except ImplicityError as exc:
        print(f"implicity {args.command}: error: {_one_line(exc.render(flag_namer(parser, args)))}",
              file=sys.stderr)
        return 2
    except MemoryError:
        print(f"implicity {args.command}: error: not enough memory for this job. Use a coarser --resolution or "
              "a smaller --extent.", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a vanished folder, a permission: the system's words, one line
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
        print(f"implicity {args.command}: error: {reason}{where}; no partial output was kept.", file=sys.stderr)
        return 2
    return int(result or 0)


def _one_line(text: str) -> str:
    return " ".join(text.split("\n")).strip()


if __name__ == "__main__":
    sys.exit(main())
