"""A small synthetic city as a LAZ file: gentle terrain, box buildings, a courtyard hole (cluster tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.crs import CRS

from .geodata import write_las


def city_points(x0: float, y0: float, width: float, height: float, density: float, seed: int) -> np.ndarray:
    """(n, 3) points: terrain sloping 2 %, boxes 6-25 m tall every ~40 m, 0.15 m noise, a 12 m empty
    square (a hole the engine fills) and nothing in the north-east corner (nodata)."""
    rng = np.random.default_rng(seed)
    n = int(width * height * density)
    xy = rng.uniform(0, 1, (n, 2)) * [width, height]
    z = 50.0 + 0.02 * xy[:, 0] + 0.01 * xy[:, 1]
    cell = np.floor(xy / 40.0)
    local = xy - cell * 40.0
    tall = 6.0 + (np.sin(cell[:, 0] * 12.9898 + cell[:, 1] * 78.233) * 43758.5453 % 1.0) * 19.0
    roof = (local[:, 0] > 8) & (local[:, 0] < 30) & (local[:, 1] > 6) & (local[:, 1] < 28)
    z = z + np.where(roof, tall, 0.0) + rng.normal(0, 0.15, n)
    hole = (np.abs(xy[:, 0] - width * 0.35) < 6) & (np.abs(xy[:, 1] - height * 0.5) < 6)
    corner = (xy[:, 0] > width - 30) & (xy[:, 1] > height - 30)
    keep = ~hole & ~corner
    return np.column_stack([xy[keep, 0] + x0, xy[keep, 1] + y0, z[keep]])


def write_city_laz(path: Path, width: float = 200.0, height: float = 150.0, density: float = 3.0,
                   seed: int = 0) -> Path:
    return write_las(path, city_points(700000.0, 6600000.0, width, height, density, seed), crs=CRS.from_epsg(2154))
