"""Progress reporting shared by the CLI (tqdm) and library callers (callbacks)."""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

ProgressFn = Callable[[float, str], None]


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
