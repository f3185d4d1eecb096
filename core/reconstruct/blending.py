"""Blending overlapping windows and streaming finished output rows to the GeoTIFF writers.

:class:`BlendAccumulator` keeps weighted sums only for the band of output rows that windows still
touch; rows that no later window row can reach are handed out and dropped, so memory depends on
the extent's width, never on its height (and the windows, hence the band, are a fixed size).
:class:`FillingRowSink` fills holes in the finished rows with a halo of context rows on both sides,
which gives the same result as filling the whole raster at once, then writes them.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..gridding import fill_halo, fill_holes

# Heights and weights are summed as integers of 2**-40 (~1e-12): exact, in any order. 40 bits, not
# fewer: the reference mode's corner pixels weigh 0.001² = 1e-6, and at 2**-30 that weight alone
# was rounded by 5e-4 of itself, moving those heights by 2 cm.
FIXED_BITS = 40
_FIXED = float(2 ** FIXED_BITS)
MAX_ABS_HEIGHT = 2.0 ** 16  # |height| above this could overflow the integer sums of up to 64 windows


def _fixed(values: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(values, np.float64) * _FIXED).astype(np.int64)


class BlendAccumulator:
    """Σ w·h, Σ w (and Σ w·c for confidence) for output rows [base, base + n), columns [col0, col0 + width).

    The sums are integers (fixed point, 2**-40): integer addition is exact and associative, so the
    blended result does not depend on the order the windows are added in. That is what makes a run
    cut into blocks (``core/cluster``: each block sums its own windows, the client adds the blocks'
    sums) give the very same DSM as one process, bit for bit.

    It also remembers which pixels any window found *eligible* (a point within reach): a pixel that
    no window decoded comes out as NaN (a hole, to fill) when eligible and as −inf (never filled,
    nodata) when not.
    """

    def __init__(self, width: int, with_confidence: bool, base: int = 0, col0: int = 0):
        self.width = width
        self.base = base
        self.col0 = col0
        self.with_confidence = with_confidence
        self._num = np.zeros((0, width), np.int64)
        self._den = np.zeros((0, width), np.int64)
        self._conf = np.zeros((0, width), np.int64) if with_confidence else None
        self._elig = np.zeros((0, width), bool)

    def _ensure(self, row_end: int) -> None:
        need = row_end - self.base - self._num.shape[0]
        if need > 0:
            pad = np.zeros((need, self.width), np.int64)
            self._num = np.vstack([self._num, pad])
            self._den = np.vstack([self._den, pad])
            self._elig = np.vstack([self._elig, np.zeros((need, self.width), bool)])
            if self._conf is not None:
                self._conf = np.vstack([self._conf, pad])

    def _slice(self, r0: int, c0: int, h: int, w: int) -> tuple[slice, slice]:
        if r0 < self.base:
            raise RuntimeError("rows already written cannot be blended any more")
        self._ensure(r0 + h)
        return (slice(r0 - self.base, r0 - self.base + h), slice(c0 - self.col0, c0 - self.col0 + w))

    def add(self, r0: int, c0: int, height: np.ndarray, weight: np.ndarray,
            confidence: np.ndarray | None = None, eligible: np.ndarray | None = None) -> None:
        """Add one window's (h, w) heights (NaN = nothing found) with their weights; ``eligible``
        (default: all) marks the pixels that may be filled when no window found a height."""
        h, w = height.shape
        sl = self._slice(r0, c0, h, w)
        valid = np.isfinite(height)
        if valid.any() and float(np.abs(height[valid]).max()) > MAX_ABS_HEIGHT:
            from ..errors import InputError

            raise InputError(f"heights beyond ±{MAX_ABS_HEIGHT:g} map units cannot be blended; check the point "
                             "cloud's z values and units.")
        wv = np.where(valid, np.asarray(weight, np.float64), 0.0)
        self._num[sl] += _fixed(wv * np.where(valid, height, 0.0))
        self._den[sl] += _fixed(wv)
        self._elig[sl] |= True if eligible is None else eligible.astype(bool)
        if self._conf is not None and confidence is not None:
            self._conf[sl] += _fixed(wv * np.where(valid, confidence, 0.0))

    def add_sums(self, r0: int, c0: int, num: np.ndarray, den: np.ndarray, conf: np.ndarray | None,
                 eligible: np.ndarray) -> None:
        """Add the sums of another accumulator (a block's, see :meth:`take`) at (r0, c0)."""
        sl = self._slice(r0, c0, *num.shape)
        self._num[sl] += num
        self._den[sl] += den
        self._elig[sl] |= eligible
        if self._conf is not None and conf is not None:
            self._conf[sl] += conf

    def take(self, row_end: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """The raw sums of rows [base, row_end) as (first row, Σw·h, Σw, Σw·c or None, eligible); dropped here."""
        self._ensure(row_end)
        n = row_end - self.base
        out = (self.base, self._num[:n], self._den[:n], None if self._conf is None else self._conf[:n],
               self._elig[:n])
        self._num, self._den, self._elig = self._num[n:], self._den[n:], self._elig[n:]
        if self._conf is not None:
            self._conf = self._conf[n:]
        self.base = row_end
        return out

    def pop(self, row_end: int) -> tuple[int, np.ndarray, np.ndarray | None]:
        """Finished rows [base, row_end) as (first row, heights, confidence); NaN = a hole to fill,
        −inf = no data within reach (never filled)."""
        first, num, den, conf_sum, elig = self.take(row_end)
        with np.errstate(invalid="ignore", divide="ignore"):
            dsm = np.where(den > 0, num / den, np.where(elig, np.nan, -np.inf)).astype(np.float32)
            conf = None
            if conf_sum is not None:
                conf = np.where(den > 0, conf_sum / den, np.nan).astype(np.float32)
        return first, dsm, conf


Write = Callable[[np.ndarray, int], None]


class FillingRowSink:
    """Receives finished rows in order, fills holes with a halo, writes rows when final."""

    def __init__(self, write_dsm: Write, write_conf: Write | None, fill: str, max_distance_px: float,
                 total_rows: int):
        self.write_dsm, self.write_conf = write_dsm, write_conf
        self.fill = fill
        self.max_px = max_distance_px
        # IDW looks up to 2·max + 2 pixels away (see core.gridding.rasterize_to_file).
        self.halo = 0 if fill == "none" else fill_halo(max_distance_px)
        self.total = total_rows
        self._start = 0  # first row held in the buffer (context rows included)
        self._written = 0  # rows [0, written) are on disk
        self._dsm = np.zeros((0, 0), np.float32)
        self._conf: np.ndarray | None = None
        self.filled_pixels = 0
        self.empty_pixels = 0

    def push(self, first_row: int, dsm: np.ndarray, conf: np.ndarray | None) -> None:
        if dsm.shape[0] == 0:
            return
        if self._dsm.size == 0:
            self._dsm, self._conf, self._start = dsm, conf, first_row
        else:
            self._dsm = np.vstack([self._dsm, dsm])
            if conf is not None and self._conf is not None:
                self._conf = np.vstack([self._conf, conf])
        end = self._start + self._dsm.shape[0]
        self._emit(end if end >= self.total else end - self.halo)

    def close(self) -> None:
        self._emit(self._start + self._dsm.shape[0])

    def _emit(self, upto: int) -> None:
        if upto <= self._written:
            return
        out_of_reach = np.isneginf(self._dsm)  # no point within reach: nodata, never filled
        dsm = np.where(out_of_reach, np.nan, self._dsm).astype(np.float32)
        filled = np.where(out_of_reach, np.nan, fill_holes(dsm, self.fill, self.max_px, origin=(self._start, 0)))
        a, b = self._written - self._start, upto - self._start
        out = filled[a:b].astype(np.float32)
        holes = ~np.isfinite(dsm[a:b]) & ~out_of_reach[a:b]
        self.filled_pixels += int((holes & np.isfinite(out)).sum())
        self.empty_pixels += int((~np.isfinite(out)).sum())
        self.write_dsm(out, self._written)
        if self.write_conf is not None and self._conf is not None:
            conf = np.where(holes & np.isfinite(out), 0.0, self._conf[a:b])
            conf = np.where(np.isfinite(out), conf, np.nan).astype(np.float32)
            self.write_conf(conf, self._written)
        self._written = upto
        keep = max(self._start, upto - self.halo) - self._start
        self._dsm = self._dsm[keep:]
        if self._conf is not None:
            self._conf = self._conf[keep:]
        self._start += keep
