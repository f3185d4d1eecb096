"""Windows over the output grid and fast access to the points of each window.

Coordinates inside the layout are offsets from the output grid's top-left corner: ``u`` eastwards
and ``v`` southwards, in map units, so that window rows run north→south like raster rows and a
row of windows finishes a band of output rows (what makes streaming possible).

Each :class:`Window` is one 64 m model patch; its *decode region* is the set of output pixels
whose centres it decodes, and :meth:`Window.weights` gives their blending weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, param
from ..raster import GridSpec


@dataclass(frozen=True)
class Window:
    """One model window and the output pixels it decodes."""

    row: int  # window row (north→south) and column (west→east)
    col: int
    x0: float  # map coordinates of the window's south-west corner
    y0: float
    size: float
    r0: int  # decode region in output pixels, [r0, r1) × [c0, c1), clipped to the grid
    r1: int
    c0: int
    c1: int
    d_u: tuple[float, float]  # decode region in u/v offsets (unclipped), for the weights
    d_v: tuple[float, float]
    ramp: str  # "overlap:<width>" (fast) or "original" (reference: the paper's generator)
    origin_px: tuple[int, int] = (0, 0)  # "original": the window's first pixel (row, col), unclipped
    n_px: int = 0  # "original": pixels per window side (patch size / resolution)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.r1 - self.r0, self.c1 - self.c0)

    def bounds(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x0 + self.size, self.y0 + self.size)

    def weights(self, res: float) -> np.ndarray:
        """(h, w) blending weights of the decode region (separable x·y ramps)."""
        if self.ramp == "original":
            wv = original_ramp(self.n_px)[self.r0 - self.origin_px[0]:self.r1 - self.origin_px[0]]
            wu = original_ramp(self.n_px)[self.c0 - self.origin_px[1]:self.c1 - self.origin_px[1]]
            return np.outer(wv, wu)  # float64, as the reference accumulates
        u = (np.arange(self.c0, self.c1) + 0.5) * res
        v = (np.arange(self.r0, self.r1) + 0.5) * res
        return np.outer(self._ramp(v, self.d_v), self._ramp(u, self.d_u)).astype(np.float32)

    def pixel_centres(self, res: float, xmin: float, ymax: float) -> np.ndarray:
        """(h·w, 2) map x, y of the decoded pixels' centres, row-major."""
        xx, yy = np.meshgrid(xmin + (np.arange(self.c0, self.c1) + 0.5) * res,
                             ymax - (np.arange(self.r0, self.r1) + 0.5) * res)
        return np.column_stack([xx.ravel(), yy.ravel()])

    def _ramp(self, t: np.ndarray, span: tuple[float, float]) -> np.ndarray:
        lo, hi = span
        width = float(self.ramp.split(":", 1)[1])
        if width <= 0:
            return np.ones_like(t)
        # Linear ramps over the overlap: two neighbours' weights sum to exactly 1 there.
        return np.clip(np.minimum(t - lo, hi - t) / width, 1e-3, 1.0)


#: Windows that may cover one pixel: the blending sums are 64-bit integers (``blending.py``).
MAX_WINDOWS_PER_PIXEL = 64


def original_ramp(n: int) -> np.ndarray:
    """The paper generator's 1-D blending weights over a window's n pixels (float64): the first
    ⌊n/2⌋ pixels rise linearly from 0.001 to 1 (a ``linspace`` over pixel indices), the last ⌊n/2⌋
    fall from 1 to 0.001, a middle pixel of an odd n weighs 1 (deviation 2 in ``options.py``)."""
    w = np.ones(n, np.float64)
    k = n // 2
    if k > 0:
        w[:k] = np.linspace(1e-3, 1.0, k)
        w[n - k:] = np.linspace(1.0, 1e-3, k)
    return w


def original_anchors(extent: float, window_size: float, stride: float) -> list[float]:
    """Window starts of the paper's sliding windows along one axis, as offsets from the extent's
    lower bound: every ``stride`` from the bound while the window stays inside, then one window
    flush with the upper bound (deviation 4 in ``options.py``). An extent narrower than a window
    gets one window ending at the upper bound."""
    starts = list(np.arange(0.0, extent - window_size, stride))
    return [float(a) for a in starts] + [extent - window_size]


def _pixel_range(lo: float, hi: float, res: float, n: int) -> tuple[int, int]:
    """Pixels whose centres lie in [lo, hi), clipped to [0, n)."""
    a = math.ceil(lo / res - 0.5 - 1e-9)
    b = math.ceil(hi / res - 0.5 - 1e-9)
    return max(0, a), min(n, max(b, 0))


def _fast_origin(span: tuple[float, float], window_size: float, extent: float,
                 data: tuple[float, float] | None = None) -> float:
    """Window start for a decode span: centred on it, but slid (while still containing the part
    of the span inside the extent) to stay inside the data, so border windows see a full patch
    of points instead of mostly empty space. ``data`` is the [start, end] of the points along the
    axis (default: the extent); when the points reach beyond the extent, a border window is
    centred on its span and sees the points on both sides of the extent's edge."""
    d0, d1 = data if data is not None else (0.0, extent)
    nominal = (span[0] + span[1] - window_size) / 2
    lo_in, hi_in = max(span[0], 0.0), min(span[1], extent)
    lo_allowed, hi_allowed = hi_in - window_size, lo_in  # the window must contain [lo_in, hi_in]
    target = (d0 + d1 - window_size) / 2 if d1 - d0 < window_size else min(max(nominal, d0), d1 - window_size)
    return min(max(target, lo_allowed), hi_allowed)


def plan_windows(grid: GridSpec, window_size: float, stride: float, mode: str,
                 overlap: float = 0.0,
                 data_bounds: tuple[float, float, float, float] | None = None) -> list[list[Window]]:
    """Rows (north→south) of windows covering ``grid``.

    fast: windows at ``stride``; each decodes its central ``stride + overlap`` square (the part with
    the most context), neighbours' regions overlap by ``overlap`` and are blended with linear ramps;
    border windows slide inwards, but only as far as ``data_bounds`` (the points' xmin, ymin, xmax,
    ymax; default: the grid) requires.
    reference: the paper's generator — windows at ``stride`` from the extent's west and south
    bounds, the last flush with the east and north bounds (:func:`original_anchors`), each decoding
    every pixel it covers, blended with :func:`original_ramp`.
    """
    res = grid.resolution
    width_m, height_m = grid.width * res, grid.height * res
    if stride <= 0:
        raise InputError(f"The window stride must be positive, got {stride}.")
    if mode == "fast":
        if overlap < 0 or stride + overlap > window_size + 1e-9:
            raise InputError(
                f"stride {stride:g} + overlap {overlap:g} must not exceed the model window "
                f"({window_size:g}); lower --stride or --overlap."
            )
        spans_u = [(k * stride - overlap / 2, (k + 1) * stride + overlap / 2)
                   for k in range(max(1, math.ceil(width_m / stride - 1e-9)))]
        spans_v = [(k * stride - overlap / 2, (k + 1) * stride + overlap / 2)
                   for k in range(max(1, math.ceil(height_m / stride - 1e-9)))]
        data_u = data_v = None
        if data_bounds is not None:
            gx0, _, _, gy1 = grid.bounds
            data_u = (data_bounds[0] - gx0, data_bounds[2] - gx0)
            data_v = (gy1 - data_bounds[3], gy1 - data_bounds[1])
        origins_u = [_fast_origin(span, window_size, width_m, data_u) for span in spans_u]
        origins_v = [_fast_origin(span, window_size, height_m, data_v) for span in spans_v]
        ramp = f"overlap:{overlap}"
    elif mode == "reference":
        return _original_plan(grid, window_size, stride)
    else:
        raise InputError(f"Unknown mode '{mode}'; use fast or reference.")
    xmin, _, _, ymax = grid.bounds
    rows: list[list[Window]] = []
    for j, (ov, sv) in enumerate(zip(origins_v, spans_v)):
        r0, r1 = _pixel_range(sv[0], sv[1], res, grid.height)
        if r1 <= r0:
            continue
        row = []
        for i, (ou, su) in enumerate(zip(origins_u, spans_u)):
            c0, c1 = _pixel_range(su[0], su[1], res, grid.width)
            if c1 <= c0:
                continue
            row.append(Window(j, i, xmin + ou, ymax - ov - window_size, window_size,
                              r0, r1, c0, c1, su, sv, ramp))
        rows.append(row)
    return rows


def _original_plan(grid: GridSpec, window_size: float, stride: float) -> list[list[Window]]:
    """The paper generator's windows, rows north→south (see :func:`plan_windows`)."""
    res = grid.resolution
    width_m, height_m = grid.width * res, grid.height * res
    if math.ceil(window_size / stride) ** 2 > MAX_WINDOWS_PER_PIXEL:
        raise InputError(f"{param('window_stride')} {stride:g}: the reference mode would decode each pixel in "
                         f"{math.ceil(window_size / stride) ** 2} windows, more than the {MAX_WINDOWS_PER_PIXEL} "
                         f"its blending sums can hold; use a stride of at least {window_size / 8:g}.")
    n = int(round(window_size / res))
    xmin, ymin, _, _ = grid.bounds
    xs = original_anchors(width_m, window_size, stride)
    ys = sorted(original_anchors(height_m, window_size, stride), reverse=True)  # north first
    rows: list[list[Window]] = []
    for j, ay in enumerate(ys):
        v0 = height_m - ay - window_size  # offset of the window's top below the extent's top
        pr = math.floor(v0 / res + 0.5 + 1e-9)  # the pixel holding the window's first pixel centre
        r0, r1 = max(0, pr), min(grid.height, pr + n)
        if r1 <= r0:
            continue
        row = []
        for i, ax in enumerate(xs):
            pc = math.floor(ax / res + 0.5 + 1e-9)
            c0, c1 = max(0, pc), min(grid.width, pc + n)
            if c1 <= c0:
                continue
            row.append(Window(j, i, xmin + ax, ymin + ay, window_size, r0, r1, c0, c1,
                              (ax, ax + window_size), (v0, v0 + window_size), "original", (pr, pc), n))
        rows.append(row)
    return rows


class PointIndex:
    """Points binned on a square grid and sorted by bin, so a window reads only its bins.

    Coordinates are stored as float32 offsets from the index origin (1 mm precision over tens of
    kilometres) to halve the memory of a second copy of a large cloud.
    """

    def __init__(self, xyz: np.ndarray, bounds: tuple[float, float, float, float], bin_size: float) -> None:
        xmin, ymin, xmax, ymax = bounds
        keep = (xyz[:, 0] >= xmin) & (xyz[:, 0] < xmax) & (xyz[:, 1] >= ymin) & (xyz[:, 1] < ymax)
        pts = xyz[keep]
        self.origin = (float(xmin), float(ymin))
        self.bin = float(bin_size)
        self.nbx = max(1, math.ceil((xmax - xmin) / bin_size))
        self.nby = max(1, math.ceil((ymax - ymin) / bin_size))
        bx = np.clip(((pts[:, 0] - xmin) / bin_size).astype(np.int64), 0, self.nbx - 1)
        by = np.clip(((pts[:, 1] - ymin) / bin_size).astype(np.int64), 0, self.nby - 1)
        key = by * self.nbx + bx
        del bx, by
        order = np.argsort(key, kind="stable")
        self._starts = np.searchsorted(key[order], np.arange(self.nbx * self.nby + 1))
        del key
        self._pts = np.empty((order.size, 3), dtype=np.float32)
        self._pts[:, 0] = pts[order, 0] - xmin
        self._pts[:, 1] = pts[order, 1] - ymin
        self._pts[:, 2] = pts[order, 2]

    def __len__(self) -> int:
        return int(self._pts.shape[0])

    @property
    def bounds(self) -> tuple[float, float, float, float] | None:
        """(xmin, ymin, xmax, ymax) of the indexed points; None when there are none."""
        if self._pts.shape[0] == 0:
            return None
        mn = self._pts[:, :2].min(axis=0).astype(np.float64)
        mx = self._pts[:, :2].max(axis=0).astype(np.float64)
        ox, oy = self.origin
        return float(mn[0] + ox), float(mn[1] + oy), float(mx[0] + ox), float(mx[1] + oy)

    def query(self, xmin: float, ymin: float, xmax: float, ymax: float) -> np.ndarray:
        """(n, 3) float64 map coordinates of the points with xmin ≤ x < xmax, ymin ≤ y < ymax."""
        ox, oy = self.origin
        bx0 = max(0, math.floor((xmin - ox) / self.bin))
        bx1 = min(self.nbx - 1, math.floor((xmax - ox) / self.bin))
        by0 = max(0, math.floor((ymin - oy) / self.bin))
        by1 = min(self.nby - 1, math.floor((ymax - oy) / self.bin))
        if bx1 < bx0 or by1 < by0:
            return np.empty((0, 3))
        parts = [self._pts[self._starts[by * self.nbx + bx0]:self._starts[by * self.nbx + bx1 + 1]]
                 for by in range(by0, by1 + 1)]
        sel = np.concatenate(parts) if parts else np.empty((0, 3), np.float32)
        out = sel.astype(np.float64)
        out[:, 0] += ox
        out[:, 1] += oy
        inside = (out[:, 0] >= xmin) & (out[:, 0] < xmax) & (out[:, 1] >= ymin) & (out[:, 1] < ymax)
        return out[inside]

