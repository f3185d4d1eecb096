"""Far points: stray points that must not decide the output grid or the searched heights.

One point at (0, 0, 0) or at z = 1e9 in a city cloud used to stretch the output grid over
thousands of kilometres or the height search over a billion metres. Here the *body* of the cloud
is found per axis from robust order statistics: a tail is cut when it holds at most
``FAR_FRACTION`` of the points **and** is separated from the rest by an empty gap wider than the
axis' limit (``FAR_XY_GAP`` horizontally, ``FAR_Z_GAP`` vertically). Legitimate parts of a scene
are dense or close (a tower's roof is part of a continuous cloud, a second tile holds many
points), so they are never cut; what is cut is logged with its count and the reason. A user
``--extent`` always wins over the horizontal rule.

Only two partial sorts of the tails are needed (``np.partition``), so a 16 M point cloud costs a
fraction of a second per axis.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

FAR_FRACTION = 0.01  # at most this share of the points can be cut from each end of an axis
FAR_XY_GAP = 128.0  # map units: two model windows of empty space
FAR_Z_GAP = 500.0  # map units: no real surface has such a void between its heights


@dataclass(frozen=True)
class AxisBody:
    """The main body [lo, hi] of one coordinate and how many values lie beyond it."""

    lo: float
    hi: float
    n_below: int
    n_above: int

    @property
    def n_cut(self) -> int:
        return self.n_below + self.n_above


def axis_body(values: np.ndarray, max_gap: float, max_fraction: float = FAR_FRACTION) -> AxisBody:
    """[lo, hi] of ``values`` without isolated tails (see the module docstring).

    Why a gap rule and not a percentile: percentiles would trim the real edges of every cloud,
    while a stray point is, by definition, far from everything else.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    n = v.size
    if n == 0:
        return AxisBody(float("nan"), float("nan"), 0, 0)
    if n < 3:
        return AxisBody(float(v.min()), float(v.max()), 0, 0)
    k = min(n - 1, max(1, int(max_fraction * n)))
    part = np.partition(v, (k, n - 1 - k))
    low = np.sort(part[:k + 1])  # the k smallest values and the first of the body
    gaps = np.flatnonzero(np.diff(low) > max_gap)
    n_below = int(gaps[-1] + 1) if gaps.size else 0
    high = np.sort(part[n - 1 - k:])  # the first of the body and the k largest values
    gaps = np.flatnonzero(np.diff(high) > max_gap)
    n_above = int(high.size - 1 - gaps[0]) if gaps.size else 0
    return AxisBody(float(low[n_below]), float(high[high.size - 1 - n_above]), n_below, n_above)


@dataclass(frozen=True)
class XYBody:
    """The horizontal body of a cloud: its bounds and how many points lie outside them."""

    bounds: tuple[float, float, float, float]
    n_outside: int


def xy_body(xyz: np.ndarray, max_gap: float = FAR_XY_GAP, max_fraction: float = FAR_FRACTION,
            source: str = "point cloud") -> XYBody:
    """Bounds of the cloud without far stray points; logs how many were left out and why."""
    bx = axis_body(xyz[:, 0], max_gap, max_fraction)
    by = axis_body(xyz[:, 1], max_gap, max_fraction)
    bounds = (bx.lo, by.lo, bx.hi, by.hi)
    n_out = 0
    if bx.n_cut or by.n_cut:
        outside = ((xyz[:, 0] < bx.lo) | (xyz[:, 0] > bx.hi) | (xyz[:, 1] < by.lo) | (xyz[:, 1] > by.hi))
        n_out = int(np.count_nonzero(outside))
        log.warning(
            "%s: ignored %s of %s points lying more than %g map units away from the rest of the cloud "
            "(the output covers x %.2f..%.2f, y %.2f..%.2f); give --extent to include them.",
            source, f"{n_out:,}", f"{xyz.shape[0]:,}", max_gap, *bounds[0::2], *bounds[1::2])
    return XYBody(bounds, n_out)


def far_height_mask(z: np.ndarray, max_gap: float = FAR_Z_GAP, max_fraction: float = FAR_FRACTION,
                    source: str = "point cloud") -> np.ndarray | None:
    """Boolean mask of the points to keep, or ``None`` when every height belongs to the body.

    Logs how many heights were dropped and the height range kept.
    """
    body = axis_body(z, max_gap, max_fraction)
    if body.n_cut == 0:
        return None
    keep = (z >= body.lo) & (z <= body.hi)
    log.warning(
        "%s: ignored %s of %s points whose heights lie more than %g map units below or above all the "
        "others (kept heights %.2f..%.2f); they look like blunders.",
        source, f"{int((~keep).sum()):,}", f"{z.size:,}", max_gap, body.lo, body.hi)
    return keep
