"""Co-registration of a DSM to a reference DSM before differencing.

Why: a DSM that is right in shape but displaced as a whole — a stereo cloud's vertical bias, a
planimetric offset of its orientation — is charged the displacement at every pixel: the
vertical offset everywhere, the horizontal one on every slope and building edge. Photogrammetric
accuracy reports therefore co-register the two surfaces first and give the metrics both ways.
The shift is estimated from the reference, so it is an evaluation tool, never something a
reconstruction could do.

Method: the horizontal shift (dx, dy) minimises the mean absolute residual about its median,
searched on whole pixels within ``max_shift`` and then refined on half, quarter and eighth
pixels (bilinear resampling); the vertical shift dz is then the median residual. The L1 cost
is robust to the few pixels that are simply wrong and, unlike NMAD, still sees edges line up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError, param
from .vocabulary import DEFAULT_MAX_SHIFT

MAX_SAMPLES = 250_000  # pixels the cost is evaluated on: enough for 1 cm, bounded time on large rasters
MAX_SHIFT_PX = 16  # whole-pixel candidates grow with its square; beyond it, align the rasters first
COARSE_SAMPLES = 100_000  # of them, those the whole-pixel search reads (it only has to find the basin)
REFINEMENTS = (0.5, 0.25, 0.125)  # sub-pixel steps of the horizontal search, in pixels
MIN_GAIN = 1e-6  # relative cost decrease a move must bring (flat areas keep a zero shift)


@dataclass(frozen=True)
class Coregistration:
    """The shift that moves the DSM onto the reference: east ``dx``, north ``dy``, up ``dz``."""

    dx: float
    dy: float
    dz: float
    pixels: int  # pixels the shift was estimated from

    def to_dict(self) -> dict:
        return {"dx": self.dx, "dy": self.dy, "dz": self.dz, "pixels": self.pixels}

    def describe(self, units: str = "m") -> str:
        return (f"DSM shifted by dx = {self.dx:+.3f} {units} (east), dy = {self.dy:+.3f} {units} (north), "
                f"dz = {self.dz:+.3f} {units} (up), estimated on {self.pixels} pixels")


def _bilinear(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``values`` at fractional (row, col); NaN where a neighbour is NaN or outside the raster."""
    h, w = values.shape
    r0, c0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    fr, fc = rows - r0, cols - c0
    inside = (r0 >= 0) & (c0 >= 0) & (r0 + 1 < h + (fr == 0)) & (c0 + 1 < w + (fc == 0))
    r0c, c0c = np.clip(r0, 0, h - 1), np.clip(c0, 0, w - 1)
    r1c, c1c = np.clip(r0 + 1, 0, h - 1), np.clip(c0 + 1, 0, w - 1)
    top = _lerp(values[r0c, c0c], values[r0c, c1c], fc)
    bottom = _lerp(values[r1c, c0c], values[r1c, c1c], fc)
    return np.where(inside, _lerp(top, bottom, fr), np.nan)


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation a + t (b − a): exactly ``a`` where t = 0, even if ``b`` is NaN (beside a hole)."""
    return np.where(t == 0, a, a * (1 - t) + b * t)


def _shift_px(dx: float, dy: float, resolution: float) -> tuple[float, float]:
    """(row, col) offsets to read a DSM moved by (dx, dy): rows run south, columns east."""
    return dy / resolution, -dx / resolution


def shift_dsm(dsm: np.ndarray, shift: Coregistration, resolution: float) -> np.ndarray:
    """``dsm`` moved by ``shift`` on its own grid (bilinear; NaN where it has no value)."""
    dr, dc = _shift_px(shift.dx, shift.dy, resolution)
    rows, cols = np.indices(dsm.shape, dtype=np.float64)
    moved = _bilinear(dsm.astype(np.float64), rows + dr, cols + dc) + shift.dz
    return moved.astype(np.float32)


def estimate_shift(dsm: np.ndarray, reference: np.ndarray, resolution: float, max_shift: float = DEFAULT_MAX_SHIFT,
                   seed: int = 0) -> Coregistration:
    """Estimate the shift of ``dsm`` onto ``reference`` (same grid, NaN = no value)."""
    if not (isinstance(max_shift, (int, float)) and math.isfinite(max_shift) and max_shift >= 0):
        raise InputError(f"{param('max_shift')} must be a distance >= 0 in map units, got {max_shift!r}.")
    if not (math.isfinite(resolution) and resolution > 0):
        raise InputError(f"The reference grid's pixel size must be positive, got {resolution!r}.")
    if max_shift / resolution > MAX_SHIFT_PX:
        raise InputError(
            f"{param('max_shift')} {max_shift:g} is {max_shift / resolution:.0f} pixels of the reference grid; at most "
            f"{MAX_SHIFT_PX} are searched (here {MAX_SHIFT_PX * resolution:g} map units). Give a smaller value, or "
            "align the two rasters first if they are that far apart.")
    if dsm.shape != reference.shape:
        raise ValueError(f"dsm {dsm.shape} and reference {reference.shape} must be on the same grid")
    values = dsm.astype(np.float64)
    flat = np.flatnonzero(np.isfinite(values) & np.isfinite(reference))
    if flat.size == 0:
        raise InputError("The DSM and the reference have no valid pixels in common: nothing to co-register.")
    rng = np.random.default_rng(seed)
    if flat.size > MAX_SAMPLES:
        flat = np.sort(rng.choice(flat, MAX_SAMPLES, replace=False))
    fine = _Misfit(values, reference, flat)
    coarse = _Misfit(values, reference, np.sort(rng.choice(flat, COARSE_SAMPLES, replace=False))) \
        if flat.size > COARSE_SAMPLES else fine
    limit = max_shift / resolution
    whole = int(math.floor(limit))
    best = _descend(coarse, (0.0, 0.0), [(float(i), float(j)) for i in range(-whole, whole + 1)
                                          for j in range(-whole, whole + 1)], limit)
    for step in REFINEMENTS:
        for _ in range(8):  # walk downhill on this step's lattice; a few moves at most
            centre = best
            best = _descend(fine, centre, [(centre[0] + i * step, centre[1] + j * step)
                                           for i in (-1, 0, 1) for j in (-1, 0, 1)], limit)
            if best == centre:
                break
    r = fine.residual(*best)
    dz = -float(np.median(r[np.isfinite(r)]))
    dr, dc = best
    return Coregistration(dx=-dc * resolution + 0.0, dy=dr * resolution + 0.0, dz=dz, pixels=int(flat.size))


class _Misfit:
    """The L1 misfit about the median between the moved DSM and the reference, on sampled pixels."""

    def __init__(self, values: np.ndarray, reference: np.ndarray, flat: np.ndarray) -> None:
        self.values = values
        rows, cols = np.unravel_index(flat, values.shape)
        self.rows, self.cols = rows.astype(np.float64), cols.astype(np.float64)
        self.ref = reference.ravel()[flat].astype(np.float64)
        self._costs: dict[tuple[float, float], float] = {}  # the descent revisits its centres

    def residual(self, dr: float, dc: float) -> np.ndarray:
        return _bilinear(self.values, self.rows + dr, self.cols + dc) - self.ref

    def cost(self, dr: float, dc: float) -> float:
        if (dr, dc) not in self._costs:
            r = self.residual(dr, dc)
            r = r[np.isfinite(r)]
            # A shift that leaves less than half the pixels comparable is not a fair candidate.
            fair = r.size >= max(1, self.ref.size // 2)
            self._costs[dr, dc] = float(np.mean(np.abs(r - np.median(r)))) if fair else math.inf
        return self._costs[dr, dc]


def _descend(misfit: _Misfit, start: tuple[float, float], candidates: list[tuple[float, float]],
             limit: float) -> tuple[float, float]:
    """The candidate (row, col offset) within ``limit`` pixels with the lowest misfit; ``start``
    unless another one is better by more than :data:`MIN_GAIN`."""
    best, best_cost = start, misfit.cost(*start)
    for dr, dc in candidates:
        if (dr, dc) == start or math.hypot(dr, dc) > limit + 1e-9:
            continue
        c = misfit.cost(dr, dc)
        if c < best_cost * (1 - MIN_GAIN):
            best, best_cost = (dr, dc), c
    return best


__all__ = ["Coregistration", "estimate_shift", "shift_dsm"]
