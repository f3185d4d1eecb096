"""The split of a reconstruction into blocks: whole groups of windows, one Dask task each.

The window plan of one process (``core/reconstruct/tiling.plan_windows``) is computed once, on the
client; a block is the set of windows whose window row and column fall in one group of
``n × n`` (``n`` = block size / window stride, ~512 m by default), so blocks follow the window grid
and every window belongs to exactly one block — none is computed twice. A block's result is the
blending sums over the union of its windows' decode regions: the block's square plus the blending
ramp that its border windows share with the neighbouring blocks. The client adds these sums
(integers, see ``BlendAccumulator``: exact in any order), which is precisely what one process
would have summed, then divides, fills holes with a halo and writes rows in order.

A block reads the points its windows see: their squares grown by the evidence context margin
(``evidence.context_margin``), nothing else.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..reconstruct.tiling import Window


@dataclass(frozen=True)
class Block:
    """One task: its windows (row-major) and what they touch."""

    key: tuple[int, int]  # (block row north→south, block column west→east)
    windows: tuple[Window, ...]
    r0: int  # output pixels the windows decode: rows [r0, r1), columns [c0, c1)
    r1: int
    c0: int
    c1: int
    read_bounds: tuple[float, float, float, float]  # the points the windows need (xmin, ymin, xmax, ymax)

    def label(self) -> str:
        b = self.read_bounds
        return (f"block {self.key[0]},{self.key[1]} (rows {self.r0}-{self.r1 - 1}, columns {self.c0}-{self.c1 - 1}; "
                f"points x {b[0]:.1f}..{b[2]:.1f}, y {b[1]:.1f}..{b[3]:.1f})")


def windows_per_block(block_size: float, stride: float) -> int:
    """Windows per block side: the block size rounded to whole window strides (at least one)."""
    if not (block_size > 0 and math.isfinite(block_size)):
        from ..errors import InputError

        raise InputError(f"block size (--block-size) must be a positive number of map units, got {block_size}.")
    return max(1, int(round(block_size / stride)))


def plan_blocks(rows: list[list[Window]], per_side: int, context: float) -> list[Block]:
    """Blocks of ``per_side`` × ``per_side`` windows, in row-major order; ``context``: how far around a
    window its evidence reads points."""
    groups: dict[tuple[int, int], list[Window]] = {}
    for row in rows:
        for win in row:
            groups.setdefault((win.row // per_side, win.col // per_side), []).append(win)
    blocks = []
    for key in sorted(groups):
        wins = groups[key]
        xs0 = min(w.x0 for w in wins) - context
        ys0 = min(w.y0 for w in wins) - context
        xs1 = max(w.x0 + w.size for w in wins) + context
        ys1 = max(w.y0 + w.size for w in wins) + context
        blocks.append(Block(key, tuple(wins), min(w.r0 for w in wins), max(w.r1 for w in wins),
                            min(w.c0 for w in wins), max(w.c1 for w in wins), (xs0, ys0, xs1, ys1)))
    return blocks
