"""Tiny geodata fixtures built in the tests (no network, no big files)."""
from __future__ import annotations

from pathlib import Path

import laspy
import numpy as np
from rasterio.crs import CRS

from implicity.core.pointcloud import PointCloud

REPO = Path(__file__).resolve().parents[2]
#: The larger real datasets beside the repository (../shared/data); tests that need them skip when absent.
SHARED_DATA = REPO.parent / "shared" / "data"
CRS_L93 = CRS.from_epsg(2154)
DELFT_LAZ = SHARED_DATA / "delft_ahn3" / "ahn3_cropped_2.laz"  # AHN3, EPSG:28992, no CRS in header
#: A 64 × 64 m crop of DELFT_LAZ (RD New metres): a few buildings and streets.
DELFT_CROP = (85000.0, 447500.0, 85064.0, 447564.0)


def write_las(path: Path, xyz: np.ndarray, classification: np.ndarray | None = None,
              rgb: np.ndarray | None = None, crs: CRS | None = None) -> Path:
    """A LAS/LAZ file (by the suffix) written by the project's LAS writer (``training/data/export.py``)."""
    from implicity.training.data.export import write_laz

    cloud = PointCloud(np.asarray(xyz, dtype=np.float64), crs, classification=classification, rgb=rgb)
    return write_laz(path, cloud)


def block_scene(seed: int = 0, size: float = 40.0, density: float = 16.0):
    """Flat ground at 10 m with one 12 m tall box building (x, y in 10..20 m); class 2/6.

    Returns (xyz, classification, surface(x, y) function).
    """
    rng = np.random.default_rng(seed)
    n = int(size * size * density)
    x0, y0 = 1000.0, 2000.0
    xy = rng.uniform(0, size, (n, 2))
    inside = (xy[:, 0] > 10) & (xy[:, 0] < 20) & (xy[:, 1] > 10) & (xy[:, 1] < 20)
    z = np.where(inside, 22.0, 10.0)
    xyz = np.column_stack([xy[:, 0] + x0, xy[:, 1] + y0, z])
    cls = np.where(inside, 6, 2).astype(np.uint8)

    def surface(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        lx, ly = x - x0, y - y0
        return np.where((lx > 10) & (lx < 20) & (ly > 10) & (ly < 20), 22.0, 10.0)

    return xyz, cls, surface


def crop_las(src: Path, dst: Path, bounds: tuple[float, float, float, float], keep_every: int = 1) -> Path:
    """Write the points of ``src`` inside ``bounds`` (every ``keep_every``-th) to ``dst`` (LAS/LAZ)."""
    las = laspy.read(str(src))
    xmin, ymin, xmax, ymax = bounds
    x, y = np.asarray(las.x), np.asarray(las.y)
    sel = np.flatnonzero((x >= xmin) & (x < xmax) & (y >= ymin) & (y < ymax))[::keep_every]
    out = laspy.LasData(las.header)
    out.points = las.points[sel]
    out.write(str(dst))
    return dst
