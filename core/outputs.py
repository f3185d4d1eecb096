"""Safe output paths: never overwrite an input, always write atomically.

Every file the product writes goes through :func:`atomic_path`: the content is written to a hidden
temporary file beside the target and renamed over it only when complete, so a crash or a cancel
never leaves a half-written file and never destroys what the user had before the job succeeded.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import InputError, param

log = logging.getLogger(__name__)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


#: Flags that callers not yet converted still pass as ``option``, and the parameters they stand for.
_LEGACY_OPTIONS = {"--out": "out_path", "--confidence-out": "confidence_path"}


def check_output_path(
    out_path: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    parameter: str = "out_path",
    suffixes: tuple[str, ...] = (),
    *,
    option: str | None = None,
) -> Path:
    """Validate an output path before any work starts (fail fast, lose nothing).

    ``parameter``: the core parameter that holds the path, named in the errors. ``option`` (a flag
    such as ``--out``) is read as the parameter it stands for, for callers that still pass one.
    """
    if option is not None:
        parameter = _LEGACY_OPTIONS.get(option, option.lstrip("-").replace("-", "_"))
    option = param(parameter)
    out = Path(out_path).expanduser()
    for candidate in inputs:
        if candidate is None:
            continue
        if _same_file(out, Path(candidate).expanduser()):
            raise InputError(
                f"{option} {out} is also an input file; refusing to overwrite an input. "
                "Choose another output path."
            )
    if suffixes and out.suffix.lower() not in suffixes:
        raise InputError(
            f"{option} {out}: unsupported file extension '{out.suffix}'. Use one of: "
            + ", ".join(suffixes)
        )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(
            f"{option} {out}: the folder {parent} does not exist. Create it or choose another path."
        )
    if out.is_dir():
        raise InputError(f"{option} {out} is a folder; give a file name.")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{option} {out}: the folder {parent} is not writable.")
    return out


#: Temporary files are named ``.<stem>.<host>-<pid>.<random><suffix>.part``: the host tag and the
#: process id let a later run tell a dead run's leftovers from a live run's work in progress.
_HOST_TAG = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]
_PART_RE = re.compile(r"^\.(?P<stem>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>[0-9]+)\.[a-z0-9_]{8}(\.[^.]+)?\.part"
                      r"(\.aux\.xml|\.ovr|\.msk)?$")
_LEGACY_PART_RE = re.compile(r"^\..+\.[a-z0-9_]{8}(\.[^.]+)?\.part(\.aux\.xml|\.ovr|\.msk)?$")
LEGACY_PART_AGE_S = 24 * 3600  # leftovers named without a process id are removed only when this old


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else (or cannot tell): keep its files
    return True


def clean_stale_parts(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the hidden ``.part`` files that killed runs (SIGKILL, power loss) left in ``folder``.

    Safe by construction: a file is removed only when its name says it was written on this host by
    a process that no longer exists, or, for files named by older versions (no process id), when it
    has not been touched for a day. Files of running jobs and anything else are never touched.
    """
    base = Path(folder) if str(folder) else Path(".")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        if not name.startswith(".") or ".part" not in name:
            continue
        match = _PART_RE.match(name)
        if match is not None:
            stale = match["host"] == _HOST_TAG and not _process_alive(int(match["pid"]))
        elif _LEGACY_PART_RE.match(name):
            try:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > LEGACY_PART_AGE_S
            except OSError:
                stale = False
        else:
            stale = False
        if not stale:
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    if removed:
        log.info("Removed %d temporary file(s) left by interrupted runs in %s.", len(removed), base)
    return removed


def temporary_sibling(path: Path, suffix: str | None = None) -> Path:
    """A unique hidden path beside ``path`` (same file system, so the final rename is atomic).

    Leftovers of dead runs in the same folder are cleaned first (:func:`clean_stale_parts`).
    """
    folder = path.parent if str(path.parent) else Path(".")
    clean_stale_parts(folder)
    fd, name = tempfile.mkstemp(
        prefix=f".{path.stem}.{_HOST_TAG}-{os.getpid()}.",
        suffix=(suffix if suffix is not None else path.suffix) + ".part", dir=folder,
    )
    os.close(fd)
    os.unlink(name)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path; rename it onto ``path`` only if the block finishes without error."""
    target = Path(path)
    tmp = temporary_sibling(target, suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        remove_quietly(tmp)


def remove_quietly(*paths: str | os.PathLike[str] | None) -> None:
    """Delete leftovers (temporary files, GDAL side-cars) without raising."""
    for p in paths:
        if p is None:
            continue
        for candidate in (Path(p), Path(str(p) + ".aux.xml"), Path(str(p) + ".ovr")):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                candidate.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write a small text file (JSON, HTML) atomically."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
