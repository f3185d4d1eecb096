"""Progress and cancel, in one place for every job of core, the CLI (tqdm) and the plugin.

A long job takes ``progress(fraction, message)`` (a :data:`ProgressFn`: fraction in [0, 1], a short
note of what is being done) and ``is_cancelled()`` (a :data:`CancelFn`, asked between units of work:
bands, LAZ chunks, decoder batches); :func:`check_cancelled` turns a cancel into
:class:`~implicity.core.errors.CancelledError`, after which the job removes its partial outputs.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Callable

from .errors import CancelledError

#: ``progress(fraction, message)``: fraction of the job done (0–1) and what it is doing.
ProgressFn = Callable[[float, str], None]
#: ``is_cancelled()``: True once the user asked to stop.
CancelFn = Callable[[], bool]


def check_cancelled(is_cancelled: CancelFn | None, what: str = "the job") -> None:
    """Raise :class:`CancelledError` ("<what> stopped by the user; …") when ``is_cancelled()`` says so."""
    if is_cancelled is not None and is_cancelled():
        raise CancelledError(f"{what} stopped by the user; no output was written")


@contextlib.contextmanager
def tqdm_progress(description: str, enabled: bool = True) -> Iterator[ProgressFn]:
    """Yield a ``progress(fraction, message)`` callback that drives a tqdm bar (0–100 %)."""
    if not enabled:
        yield lambda fraction, message: None
        return
    from tqdm import tqdm

    bar = tqdm(total=100, desc=description, unit="%", file=sys.stderr, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")

    def update(fraction: float, message: str) -> None:
        target = max(0.0, min(100.0, 100.0 * fraction))
        bar.update(target - bar.n)
        bar.set_postfix_str(message, refresh=True)

    try:
        yield update
    finally:
        bar.close()
