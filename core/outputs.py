"""Safe output paths: never overwrite an input, always write atomically.

Every file the product writes goes through :func:`atomic_path`: the content is written to a hidden
temporary file beside the target and renamed over it only when complete, so a crash or a cancel
never leaves a half-written file and never destroys what the user had before the job succeeded.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import InputError

PathLike = "str | os.PathLike[str]"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def check_output_path(
    out_path: "str | os.PathLike[str]",
    inputs: Iterable["str | os.PathLike[str] | None"] = (),
    option: str = "--out",
    suffixes: tuple[str, ...] = (),
) -> Path:
    """Validate an output path before any work starts (fail fast, lose nothing)."""
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


def temporary_sibling(path: Path, suffix: str | None = None) -> Path:
    """A unique hidden path beside ``path`` (same file system, so the final rename is atomic)."""
    fd, name = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=(suffix if suffix is not None else path.suffix) + ".part",
        dir=path.parent if str(path.parent) else ".",
    )
    os.close(fd)
    os.unlink(name)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: "str | os.PathLike[str]", suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path; rename it onto ``path`` only if the block finishes without error."""
    target = Path(path)
    tmp = temporary_sibling(target, suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        remove_quietly(tmp)


def remove_quietly(*paths: "str | os.PathLike[str] | None") -> None:
    """Delete leftovers (temporary files, GDAL side-cars) without raising."""
    for p in paths:
        if p is None:
            continue
        for candidate in (Path(p), Path(str(p) + ".aux.xml"), Path(str(p) + ".ovr")):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                candidate.unlink()


def write_text_atomic(path: "str | os.PathLike[str]", text: str) -> Path:
    """Write a small text file (JSON, HTML) atomically."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
