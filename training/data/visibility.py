"""Line-of-sight masks on a DSM: which cells see a direction (the sun, a satellite).

A cell is *blocked* towards a direction (azimuth, elevation) when some cell along that direction
rises above the ray leaving the cell. With the sun this is a cast shadow; with a satellite's
viewing direction it is an occlusion (the cell is hidden behind a taller object in that image).
The ray is marched one pixel at a time over the whole raster at once (one shifted comparison per
step), so the cost is (number of steps) × (raster size) and there is no loop over pixels.
"""
from __future__ import annotations

import math

import numpy as np


def direction_steps(azimuth_deg: float) -> tuple[float, float]:
    """(d_row, d_col) per step towards ``azimuth_deg`` (clockwise from north), longest axis = 1 px.

    Rows run north→south, so going north decreases the row index.
    """
    az = math.radians(azimuth_deg)
    dx, dy = math.sin(az), math.cos(az)
    scale = max(abs(dx), abs(dy))
    return -dy / scale, dx / scale


def blocked_mask(dsm: np.ndarray, resolution: float, azimuth_deg: float, elevation_deg: float,
                 tolerance: float = 0.05) -> np.ndarray:
    """Boolean (H, W): True where the ray towards (azimuth, elevation) hits the surface.

    NaN cells never block and are reported as not blocked. ``tolerance`` (m) keeps a flat or
    gently sloped surface from shadowing itself through rounding of the marched positions.
    """
    if not 0.0 < elevation_deg <= 90.0:
        raise ValueError(f"elevation must be in (0, 90] degrees, got {elevation_deg}")
    h = np.asarray(dsm, dtype=np.float64)
    finite = np.isfinite(h)
    if not finite.any() or elevation_deg >= 89.99:
        return np.zeros(h.shape, dtype=bool)
    surf = np.where(finite, h, -np.inf)
    dr, dc = direction_steps(azimuth_deg)
    step_m = resolution * math.hypot(dr, dc)
    rise_per_step = step_m * math.tan(math.radians(elevation_deg))
    relief = float(np.nanmax(h) - np.nanmin(h))
    n_steps = int(math.ceil(relief / rise_per_step)) + 1
    n_steps = min(n_steps, int(math.hypot(*h.shape)) + 1)
    height, width = h.shape
    blocked = np.zeros(h.shape, dtype=bool)
    for t in range(1, n_steps + 1):
        orow = int(round(t * dr))
        ocol = int(round(t * dc))
        if abs(orow) >= height or abs(ocol) >= width:
            break
        # cell (r, c) looks at (r + orow, c + ocol); only the overlapping part can block
        r0, r1 = max(0, -orow), min(height, height - orow)
        c0, c1 = max(0, -ocol), min(width, width - ocol)
        ahead = surf[r0 + orow:r1 + orow, c0 + ocol:c1 + ocol]
        here = surf[r0:r1, c0:c1]
        blocked[r0:r1, c0:c1] |= ahead > here + t * rise_per_step + tolerance
    return blocked & finite
