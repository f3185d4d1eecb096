"""First pass of a city-scale run: stream the point cloud once into per-tile files in a scratch folder.

Why: a 100 km² LAZ at 10 pts/m² holds ~1 G points (24 GB as float64 xyz); no worker can hold it.
The cloud is read chunk by chunk (laspy's chunk iterator for LAS/LAZ/COPC, node by node for EPT)
and every finite point is appended to the file of its square scratch tile (``TILE`` map units, in
absolute coordinates, so the tiling is known before the output grid). A block task later reads
only the tiles that overlap what its windows see. Memory is one chunk, whatever the input size.

The single-process engine reads the whole cloud, drops far stray heights and places the grid on
the body of the cloud (``core/outliers.py``: rules on the 1 % tails of each axis). To give the same
grid and the same points, the pass keeps exactly what those rules look at: the smallest and
largest values of z, and of x and y together with their z (enough candidates to redo the x/y rule
after the z rule removed up to 2 % of the points). Each point is stored with its position in the
file (``i``), so a block sorts its points back into file order: the points of a window then come
in the same order as in one process, and so do the network's floating-point sums.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import CancelledError, InputError
from ..outliers import FAR_FRACTION, FAR_XY_GAP, FAR_Z_GAP, AxisBody

log = logging.getLogger(__name__)
ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]

TILE = 128.0  # map units per scratch tile side
RECORD = np.dtype([("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("i", "<i8")])
SCRATCH_PREFIX = ".implicity-scratch-"


class _Tails:
    """The ``keep`` smallest and largest values of a stream (with a companion column), exactly."""

    def __init__(self, keep: int, with_z: bool):
        self.keep = max(1, int(keep))
        self.with_z = with_z
        self.low = np.empty((0, 2 if with_z else 1))
        self.high = np.empty((0, 2 if with_z else 1))

    @staticmethod
    def _select(current: np.ndarray, new: np.ndarray, keep: int, largest: bool) -> np.ndarray:
        both = np.concatenate([current, new])
        if both.shape[0] <= keep:
            return both
        key = -both[:, 0] if largest else both[:, 0]
        idx = np.argpartition(key, keep - 1)[:keep]
        return both[idx]

    def add(self, values: np.ndarray, z: np.ndarray | None = None) -> None:
        arr = np.column_stack([values, z]) if self.with_z else values.reshape(-1, 1)
        if arr.shape[0] > 4 * self.keep:  # pre-select within the chunk (cheap), then merge
            lo = arr[np.argpartition(arr[:, 0], self.keep - 1)[:self.keep]]
            hi = arr[np.argpartition(-arr[:, 0], self.keep - 1)[:self.keep]]
        else:
            lo = hi = arr
        self.low = self._select(self.low, lo, self.keep, largest=False)
        self.high = self._select(self.high, hi, self.keep, largest=True)


def body_from_tails(low: np.ndarray, high: np.ndarray, n: int, max_gap: float,
                    max_fraction: float = FAR_FRACTION) -> AxisBody:
    """:func:`core.outliers.axis_body` of ``n`` values of which ``low``/``high`` hold (at least) the
    k + 1 smallest/largest, k = the rule's tail size: the same answer without the other values."""
    if n == 0:
        return AxisBody(float("nan"), float("nan"), 0, 0)
    lo_sorted = np.sort(low)
    hi_sorted = np.sort(high)
    if n < 3:
        return AxisBody(float(lo_sorted[0]), float(hi_sorted[-1]), 0, 0)
    k = min(n - 1, max(1, int(max_fraction * n)))
    lows = lo_sorted[:k + 1]
    gaps = np.flatnonzero(np.diff(lows) > max_gap)
    n_below = int(gaps[-1] + 1) if gaps.size else 0
    highs = hi_sorted[max(0, hi_sorted.size - (k + 1)):]
    gaps = np.flatnonzero(np.diff(highs) > max_gap)
    n_above = int(highs.size - 1 - gaps[0]) if gaps.size else 0
    return AxisBody(float(lows[n_below]), float(highs[highs.size - 1 - n_above]), n_below, n_above)


@dataclass
class ScratchStats:
    """What the first pass learnt about the whole cloud (the grid and the far-point rules need it)."""

    n_read: int = 0  # points read
    n_finite: int = 0  # ... with finite x, y, z (the others are dropped, as in one process)
    finite_min: tuple[float, float] = (math.inf, math.inf)
    finite_max: tuple[float, float] = (-math.inf, -math.inf)
    z_body: AxisBody | None = None
    kept_bounds: tuple[float, float, float, float] | None = None  # x/y bounds of the points kept by the z rule
    xy_body: tuple[AxisBody, AxisBody] | None = None  # x and y bodies of those points
    n_kept: int = 0
    tile_counts: dict[tuple[int, int], int] = field(default_factory=dict)


class ScratchTiles:
    """A scratch folder of per-tile point files (see the module docstring); removed by :meth:`remove`."""

    def __init__(self, folder: "str | os.PathLike[str]", tile: float = TILE):
        self.folder = Path(folder)
        self.tile = float(tile)
        self.stats = ScratchStats()

    @classmethod
    def create(cls, parent: "str | os.PathLike[str]", tile: float = TILE) -> "ScratchTiles":
        parent = Path(parent)
        parent.mkdir(parents=True, exist_ok=True)
        return cls(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent), tile)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def tile_path(self, tx: int, ty: int) -> Path:
        return self.folder / f"t_{tx}_{ty}.bin"

    def tiles_for(self, bounds: tuple[float, float, float, float]) -> list[tuple[int, int]]:
        tx0, ty0 = math.floor(bounds[0] / self.tile), math.floor(bounds[1] / self.tile)
        tx1, ty1 = math.floor(bounds[2] / self.tile), math.floor(bounds[3] / self.tile)
        return [(tx, ty) for ty in range(ty0, ty1 + 1) for tx in range(tx0, tx1 + 1)
                if (tx, ty) in self.stats.tile_counts]

    def count_in(self, bounds: tuple[float, float, float, float]) -> int:
        """Points stored in the tiles that overlap ``bounds`` (an upper bound of what a read returns)."""
        return sum(self.stats.tile_counts[t] for t in self.tiles_for(bounds))

    # -- writing ------------------------------------------------------------------------------------

    def write(self, chunks: Iterator[np.ndarray], total: int | None, keep_bounds=None,
              progress: ProgressFn | None = None, is_cancelled: CancelFn | None = None) -> ScratchStats:
        """Stream (n, 3) float64 chunks into the tiles; only points inside ``keep_bounds`` (when given)
        are stored, but every point counts in the statistics, as in one process."""
        report = progress or (lambda f, m: None)
        st = self.stats
        keep_tail = int(FAR_FRACTION * max(total or 0, 1)) + 1 if total else None
        tails: dict[str, _Tails] | None = None
        buffered: list[np.ndarray] = []  # without a known total, tails need the count: size them on the fly
        seq = 0
        for xyz in chunks:
            if is_cancelled is not None and is_cancelled():
                raise CancelledError("reading the points stopped by the user; no output was written")
            n = xyz.shape[0]
            st.n_read += n
            ok = np.isfinite(xyz).all(axis=1)
            if not ok.all():
                xyz = xyz[ok]
            if xyz.shape[0]:
                st.finite_min = (min(st.finite_min[0], float(xyz[:, 0].min())),
                                 min(st.finite_min[1], float(xyz[:, 1].min())))
                st.finite_max = (max(st.finite_max[0], float(xyz[:, 0].max())),
                                 max(st.finite_max[1], float(xyz[:, 1].max())))
            if keep_tail is None:
                buffered.append(xyz)  # only for sources read whole anyway (PLY, NPZ, in-memory clouds)
            else:
                if tails is None:
                    tails = {"z": _Tails(keep_tail, False), "x": _Tails(3 * keep_tail, True),
                             "y": _Tails(3 * keep_tail, True)}
                self._add_tails(tails, xyz)
            ids = np.arange(seq, seq + xyz.shape[0], dtype=np.int64)
            seq += xyz.shape[0]
            st.n_finite += xyz.shape[0]
            self._append(xyz, ids, keep_bounds)
            if total:
                report(min(1.0, st.n_read / total), f"splitting the points: {st.n_read:,} of {total:,}")
        if keep_tail is None:
            allp = np.concatenate(buffered) if buffered else np.empty((0, 3))
            keep = int(FAR_FRACTION * max(allp.shape[0], 1)) + 1
            tails = {"z": _Tails(keep, False), "x": _Tails(3 * keep, True), "y": _Tails(3 * keep, True)}
            self._add_tails(tails, allp)
            del allp, buffered
        self._finish(tails)
        return st

    @staticmethod
    def _add_tails(tails: dict[str, _Tails], xyz: np.ndarray) -> None:
        if xyz.shape[0] == 0:
            return
        tails["z"].add(xyz[:, 2])
        tails["x"].add(xyz[:, 0], xyz[:, 2])
        tails["y"].add(xyz[:, 1], xyz[:, 2])

    def _append(self, xyz: np.ndarray, ids: np.ndarray, keep_bounds) -> None:
        if keep_bounds is not None and xyz.shape[0]:
            inside = ((xyz[:, 0] >= keep_bounds[0]) & (xyz[:, 0] < keep_bounds[2])
                      & (xyz[:, 1] >= keep_bounds[1]) & (xyz[:, 1] < keep_bounds[3]))
            xyz, ids = xyz[inside], ids[inside]
        if xyz.shape[0] == 0:
            return
        tx = np.floor(xyz[:, 0] / self.tile).astype(np.int64)
        ty = np.floor(xyz[:, 1] / self.tile).astype(np.int64)
        key = (ty - ty.min()) * (int(tx.max() - tx.min()) + 1) + (tx - tx.min())
        order = np.argsort(key, kind="stable")  # file order kept inside each tile
        rec = np.empty(xyz.shape[0], RECORD)
        rec["x"], rec["y"], rec["z"], rec["i"] = xyz[order, 0], xyz[order, 1], xyz[order, 2], ids[order]
        k = key[order]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        ends = np.r_[starts[1:], k.size]
        for a, b in zip(starts, ends):
            t = (int(tx[order[a]]), int(ty[order[a]]))
            with open(self.tile_path(*t), "ab") as fh:
                rec[a:b].tofile(fh)
            self.stats.tile_counts[t] = self.stats.tile_counts.get(t, 0) + int(b - a)

    def _finish(self, tails: dict[str, _Tails]) -> None:
        st = self.stats
        n = st.n_finite
        zt = tails["z"]
        st.z_body = body_from_tails(zt.low[:, 0], zt.high[:, 0], n, FAR_Z_GAP)
        st.n_kept = n - st.z_body.n_cut
        lo, hi = st.z_body.lo, st.z_body.hi
        bodies = []
        bounds = []
        for axis in ("x", "y"):
            t = tails[axis]
            low = t.low[(t.low[:, 1] >= lo) & (t.low[:, 1] <= hi), 0] if st.z_body.n_cut else t.low[:, 0]
            high = t.high[(t.high[:, 1] >= lo) & (t.high[:, 1] <= hi), 0] if st.z_body.n_cut else t.high[:, 0]
            bodies.append(body_from_tails(low, high, st.n_kept, FAR_XY_GAP))
            bounds.append((float(low.min()) if low.size else math.nan, float(high.max()) if high.size else math.nan))
        st.xy_body = (bodies[0], bodies[1])
        st.kept_bounds = (bounds[0][0], bounds[1][0], bounds[0][1], bounds[1][1])

    def keeps(self, z: np.ndarray) -> np.ndarray | None:
        """The z rule of one process (``far_height_mask``) on some points; None = keep all."""
        b = self.stats.z_body
        if b is None or b.n_cut == 0:
            return None
        return (z >= b.lo) & (z <= b.hi)

    # -- reading ------------------------------------------------------------------------------------

    def read(self, bounds: tuple[float, float, float, float]) -> np.ndarray:
        """(n, 3) float64 points kept by the z rule with xmin ≤ x < xmax, ymin ≤ y < ymax, in file order."""
        parts = []
        for t in self.tiles_for(bounds):
            path = self.tile_path(*t)
            try:
                rec = np.fromfile(path, dtype=RECORD)
            except OSError as exc:
                raise InputError(f"scratch file {path} cannot be read ({exc}); with a remote scheduler the scratch "
                                 "folder (--scratch-dir) must be on a filesystem every worker sees.") from None
            inside = ((rec["x"] >= bounds[0]) & (rec["x"] < bounds[2]) & (rec["y"] >= bounds[1])
                      & (rec["y"] < bounds[3]))
            parts.append(rec[inside])
        if not parts:
            return np.empty((0, 3))
        rec = np.concatenate(parts)
        rec = rec[np.argsort(rec["i"], kind="stable")]
        xyz = np.column_stack([rec["x"], rec["y"], rec["z"]])
        keep = self.keeps(xyz[:, 2])
        return xyz if keep is None else xyz[keep]

    def data_bounds(self, region: tuple[float, float, float, float]) -> tuple[float, float, float, float] | None:
        """(xmin, ymin, xmax, ymax) of the kept points inside ``region`` (what one process's point index
        reports), reading only the tiles that can still move a bound."""
        tiles = self.tiles_for(region)
        if not tiles:
            return None
        # Tiles nearest the region's border first; a tile wholly inside the bounds found so far is skipped.
        def border_distance(t):
            x0, y0 = t[0] * self.tile, t[1] * self.tile
            return min(x0 - region[0], region[2] - x0 - self.tile, y0 - region[1], region[3] - y0 - self.tile)

        best = [math.inf, math.inf, -math.inf, -math.inf]
        for t in sorted(tiles, key=border_distance):
            x0, y0 = t[0] * self.tile, t[1] * self.tile
            if x0 > best[0] and y0 > best[1] and x0 + self.tile < best[2] and y0 + self.tile < best[3]:
                continue
            tb = (max(x0, region[0]), max(y0, region[1]), min(x0 + self.tile, region[2]),
                  min(y0 + self.tile, region[3]))
            pts = self.read(tb)
            if pts.shape[0]:
                best = [min(best[0], float(pts[:, 0].min())), min(best[1], float(pts[:, 1].min())),
                        max(best[2], float(pts[:, 0].max())), max(best[3], float(pts[:, 1].max()))]
        return None if not math.isfinite(best[0]) else (best[0], best[1], best[2], best[3])

