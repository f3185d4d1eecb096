"""What the input points say about each output pixel: where its height may lie, and how much of the
network's answer to keep.

Why: on real satellite photogrammetry (the Pléiades cloud over Toulouse) the network alone dug pits
up to 46 m deep at building edges, sank by metres along the ragged edge of the cloud (a frame
along the border of the extent), and produced heights in empty corners of the bounding box, far
from any point. Three rules keep the surface where the evidence is:

* **Height envelope.** A pixel's height is searched within [robust lowest − margin, robust
  highest + margin] of the points within ``radius`` (a square of ±``radius``); a pixel without
  such points (in a hole) uses the points within ``reach + radius``. Where the network's surface
  lies outside the envelope, the pixel takes the envelope's bound and is flagged (confidence 0):
  the network alone is not evidence enough to leave it. The height found is then kept within
  ``keep_margin`` (default 0) of the same range: the surface stays within the range of the points
  around it. "Robust": a cell (output pixel) whose lowest (highest) point lies more than
  ``blunder_gap`` below (above) every other cell of its own 5 × 5 cells is ignored, so one blunder
  point does not open the envelope. Where the cloud is sparse (a 5 × 5 block holds fewer than three
  cells: thin clouds, the rims of holes), that test has nothing to compare with; there a cell more
  than ``far_blunder_gap`` below (above) every other cell within ``reach + radius`` (the distance at
  which a hole pixel takes its envelope) is ignored too, so one far outlier among a few points does
  not open the envelope of a whole hole (on a held-out cloud one point 222 m low sank 13 pixels).
* **Outer edge.** The cells holding points, closed by ``reach``, are the *inside* of the data:
  holes narrower than twice the reach belong to it (the network fills them, which is what it is
  trained for), while the region beyond the cloud's outer edge and larger voids are *outside*.
  Near the outer edge the network sees points on one side only and sinks; within ``edge_width`` of
  the outside the height is blended, ``w · network + (1 − w) · points' surface`` with ``w`` rising
  smoothly from 0 at the edge to 1 at ``edge_width`` inside. The points' surface is the highest
  point of the pixel's cell (lone extremes left out), in empty cells the 3 × 3 median of the
  nearest-filled cells.
* **Reach.** No height farther than ``reach`` (the fill distance) from every point, and beyond the
  outer edge no farther than ``radius``: empty corners of the bounding box stay nodata and are
  never filled.

Everything is computed per window on the window's pixels plus a halo, from the points of a context
square around it, so results do not depend on where windows fall.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..gridding import fill_nearest, grid_points
from ..raster import GridSpec
from .options import EvidenceOptions


@dataclass
class Evidence:
    """Per-pixel evidence of one window's decode region (arrays of shape (H·W,), row-major)."""

    lo: np.ndarray  # robust lowest point height around the pixel (NaN: no point within reach)
    hi: np.ndarray  # robust highest point height around the pixel
    weight: np.ndarray  # share of the network's height to keep, in [0, 1]
    points_surface: np.ndarray  # the surface of the points themselves (NaN: none within reach)
    eligible: np.ndarray  # bool: a height is produced for this pixel (a point lies within reach)

    def envelope(self, margin: float) -> tuple[np.ndarray, np.ndarray]:
        return self.lo - margin, self.hi + margin


def context_margin(resolution: float, options: EvidenceOptions, reach: float) -> float:
    """How far around a window (map units) the points must be read to compute its evidence."""
    return _halo_px(resolution, options, reach) * resolution + resolution


def _halo_px(res: float, options: EvidenceOptions, reach: float) -> int:
    r_px = max(1, math.ceil(options.radius / res - 1e-9))
    far_px = math.ceil((reach + options.radius) / res - 1e-9)
    # The envelope of a hole pixel looks far_px away, and a cell there is tested against cells as far
    # again (_robust_cells). The closing that tells holes from the outside looks 2 x the reach
    # away, plus the edge width.
    edge_px = math.ceil((2 * max(reach, 2.0) + options.edge_width) / res - 1e-9) + 1
    return max(2 * far_px if options.far_blunder_gap > 0 else far_px + r_px, edge_px)


LONE_CELLS = 5  # a cell far below (above) all others of its 5 x 5 cells is left out


def _drop_extremes(values: np.ndarray, half: int, low: bool, gap: float, min_cells: int) -> np.ndarray:
    """``values`` (±inf = no cell) with each cell removed that lies more than ``gap`` below (above)
    every other cell of its (2 ``half`` + 1)² square, where that square holds at least ``min_cells``
    cells (itself included) — a blunder, not the top of a smooth roof or the bottom of a slope."""
    fill = np.inf if low else -np.inf
    finite = np.isfinite(values)
    if not finite.any():
        return values
    others = _ring_extreme(values, half, low)
    size = 2 * half + 1
    count = np.rint(ndimage.uniform_filter(finite.astype(np.float64), size=size, mode="constant") * size * size)
    with np.errstate(invalid="ignore"):
        drop = finite & (count >= min_cells) & ((values < others - gap) if low else (values > others + gap))
    return np.where(drop, fill, values)


def _robust_cells(values: np.ndarray, has: np.ndarray, low: bool, options: EvidenceOptions,
                  far_half: int) -> np.ndarray:
    """Per-cell lowest (highest) heights without blunders (±inf where none): a cell more than
    ``blunder_gap`` beyond every other of its 5 × 5 cells (three at least), then, where that block is
    too sparse to tell, one more than ``far_blunder_gap`` beyond every other cell within ``far_half``
    cells (four at least; 0 = off)."""
    v = _drop_extremes(np.where(has, values, np.inf if low else -np.inf), LONE_CELLS // 2, low,
                       options.blunder_gap, min_cells=3)
    if options.far_blunder_gap > 0 and far_half >= 1:
        v = _drop_extremes(v, far_half, low, options.far_blunder_gap, min_cells=4)
    return v


def _ring_extreme(values: np.ndarray, half: int, low: bool) -> np.ndarray:
    """The lowest (highest) value of every cell's (2 ``half`` + 1)² square without the cell itself.

    Why not a footprint filter: a 51 × 51 footprint costs 2,601 comparisons per cell. The square minus
    its centre is four rectangles (the rows above, the rows below, the left and the right of the
    centre's row), each an extreme of 1-D running extremes, so the cost does not grow with ``half``."""
    run = ndimage.minimum_filter1d if low else ndimage.maximum_filter1d
    pick = np.minimum if low else np.maximum
    fill = np.inf if low else -np.inf
    a, b = half // 2, half - 1 - half // 2  # a run of length ``half`` covers offsets -a … +b

    def beside(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:  # offsets -half…-1 and +1…+half
        pad = [(0, 0)] * x.ndim
        pad[axis] = (half + 1, half + 1)  # so that the runs beyond the border see ``fill``, not nothing
        g = run(np.pad(x, pad, constant_values=fill), half, axis=axis, mode="constant", cval=fill)
        n = x.shape[axis]
        # x[i] sits at g's index i + half + 1; the run ending at i - 1 is centred b before it, the one
        # starting at i + 1, a after it.
        return (np.take(g, np.arange(n) + half - b, axis=axis),
                np.take(g, np.arange(n) + half + 2 + a, axis=axis))

    rows = run(values, 2 * half + 1, axis=1, mode="constant", cval=fill)
    above, below = beside(rows, axis=0)
    left, right = beside(values, axis=1)
    return pick(pick(above, below), pick(left, right))


def _inside(has: np.ndarray, reach: float, res: float, distance_px: np.ndarray | None = None) -> np.ndarray:
    """The cells inside the data: those holding points closed by ``reach``.

    What stays empty after the closing is *outside*: the region beyond the cloud's outer edge and
    voids wider than twice the reach; holes narrower than that are inside (the network fills
    them). Closing = erosion of a dilation, both done with distance transforms, so the cost does
    not grow with the reach.
    """
    closing = max(reach, 2.0) / res
    if distance_px is None:
        distance_px = ndimage.distance_transform_edt(~has)
    dilated = distance_px <= closing
    if dilated.all():  # (an all-foreground input has no distances to measure)
        return dilated
    return ndimage.distance_transform_edt(dilated) > closing


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def window_evidence(points: np.ndarray, grid: GridSpec, r0: int, c0: int, shape: tuple[int, int],
                    options: EvidenceOptions, reach: float) -> Evidence:
    """Evidence for the output pixels [r0, r0 + H) × [c0, c0 + W) from ``points`` (N, 3), which must
    hold every point within :func:`context_margin` of that region."""
    res = grid.resolution
    h, w = shape
    halo = _halo_px(res, options, reach)
    sub = grid.window(r0 - halo, c0 - halo, h + 2 * halo, w + 2 * halo)
    zmin = grid_points(points, sub, "min").astype(np.float64)
    zmax = grid_points(points, sub, "max").astype(np.float64)
    has = np.isfinite(zmax)
    core = (slice(halo, halo + h), slice(halo, halo + w))
    if not has.any():
        nan = np.full(h * w, np.nan)
        return Evidence(nan, nan.copy(), np.zeros(h * w), nan.copy(), np.zeros(h * w, bool))
    k = 2 * max(1, math.ceil(options.radius / res - 1e-9)) + 1
    far_half = math.ceil((reach + options.radius) / res - 1e-9)
    lo_cells = _robust_cells(zmin, has, True, options, far_half)
    hi_cells = _robust_cells(zmax, has, False, options, far_half)
    k_far = 2 * far_half + 1
    lo = ndimage.minimum_filter(lo_cells, size=k, mode="constant", cval=np.inf)[core]
    hi = ndimage.maximum_filter(hi_cells, size=k, mode="constant", cval=-np.inf)[core]
    if k_far > k:
        far = ~np.isfinite(lo)
        if far.any():
            lo = np.where(far, ndimage.minimum_filter(lo_cells, size=k_far, mode="constant", cval=np.inf)[core], lo)
            hi = np.where(far, ndimage.maximum_filter(hi_cells, size=k_far, mode="constant", cval=-np.inf)[core], hi)
    distance_px = ndimage.distance_transform_edt(~has)
    distance = distance_px[core] * res
    inside = _inside(has, reach, res, distance_px)
    # Holes are filled up to the reach; beyond the outer edge of the cloud, heights reach out only
    # as far as the points bound them (``radius``): extrapolating further invents terrain.
    eligible = ((distance <= reach + 1e-9) & (inside[core] | (distance <= options.radius + 1e-9))
                & np.isfinite(lo) & np.isfinite(hi))
    lo = np.where(eligible, lo, np.nan)
    hi = np.where(eligible, hi, np.nan)

    kept = np.isfinite(hi_cells)
    cells = np.where(kept, hi_cells, np.nan)
    if kept.any():  # empty cells: the 3 x 3 median of the nearest-filled cells; others keep their own
        # The 3 x 3 median only where it is used: the core and its 1-cell ring (what the core's
        # windows see); the same values as filtering the whole halo, at a fraction of the cost.
        ring = (slice(halo - 1, halo + h + 1), slice(halo - 1, halo + w + 1))
        gaps = ndimage.median_filter(fill_nearest(cells)[ring], size=3, mode="nearest")[1:-1, 1:-1]
        surface = np.where(kept[core], cells[core], gaps)
    else:
        surface = np.full((h, w), np.nan)
    surface = np.where(eligible, np.clip(surface, lo, hi), np.nan)

    if options.blend:  # from 0 at the outer edge of the data to 1 at edge_width inside it
        if inside.all():
            weight = np.ones((h, w))
        else:
            to_outside = (ndimage.distance_transform_edt(inside)[core] - 0.5) * res  # centre to cell edge
            weight = _smoothstep(to_outside / max(options.edge_width, 1e-6))
    else:
        weight = np.ones((h, w))
    weight = np.where(eligible, weight, 0.0)
    return Evidence(lo.ravel(), hi.ravel(), weight.ravel(), surface.ravel(), eligible.ravel())
