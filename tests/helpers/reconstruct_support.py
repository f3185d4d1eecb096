"""Test-only analytic occupancy models and a tiny scene for the reconstruction tests (no tests here).

:class:`NearestPointModel` is a stand-in network whose occupancy logit is ``k · (s − z)`` where the
surface s at a query is the height of the nearest input point of the window (+ optional terms
from the ortho-images or the position in the window). With one point per output pixel centre the
expected DSM is known exactly, so the engine must return it to within the search's final step.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import rasterio
import torch
from affine import Affine
from scipy.spatial import cKDTree

from implicity.core.pointcloud import PointCloud

from .geodata import CRS_L93

X0, Y0 = 700000.0, 6600000.0


def surface(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth terrain + a 12 m box building with sharp walls."""
    lx, ly = x - X0, y - Y0
    z = 40.0 + 3.0 * np.sin(lx / 7.0) + 2.0 * np.cos(ly / 5.0)
    box = (lx > 30) & (lx < 52) & (ly > 20) & (ly < 38)
    return np.where(box, z + 12.0, z)


def pixel_scene(width_m: float, height_m: float, res: float) -> tuple[PointCloud, np.ndarray]:
    """One point at every output pixel centre; returns the cloud and the expected (H, W) DSM."""
    cols = X0 + (np.arange(int(round(width_m / res))) + 0.5) * res
    rows = Y0 + height_m - (np.arange(int(round(height_m / res))) + 0.5) * res
    xx, yy = np.meshgrid(cols, rows)
    zz = surface(xx, yy)
    xyz = np.column_stack([xx.ravel(), yy.ravel(), zz.ravel()])
    return PointCloud(xyz=xyz, crs=CRS_L93, source="scene"), zz


class NearestPointModel(torch.nn.Module):
    """logit = slope · (z_nearest_point + offset + image terms + x_bias·(x − ½) − z), metres."""

    def __init__(self, n_images: int = 0, slope: float = 4.0, offset: float = 0.0, x_bias: float = 0.0,
                 image_gains: tuple[float, ...] = (), image_size: int = 64):
        super().__init__()
        self.n_images = n_images
        self.config = SimpleNamespace(patch_size=64, image_size=image_size, z_std=30.0)
        self.slope, self.offset, self.x_bias, self.gains = slope, offset, x_bias, image_gains
        self.encoded = 0

    def normalize_image(self, img: np.ndarray) -> np.ndarray:
        return img / 100.0

    def encode(self, points: torch.Tensor, images: torch.Tensor | None):
        self.encoded += 1
        assert (images is None) == (self.n_images == 0)
        pts = points[0].cpu().numpy()
        return pts, cKDTree(pts[:, :2]), None if images is None else images[0].cpu().numpy()

    def decode(self, query: torch.Tensor, features) -> torch.Tensor:
        pts, tree, images = features
        q = query[0].cpu().numpy().astype(np.float64)
        _, i = tree.query(q[:, :2])
        z_std = self.config.z_std
        surf = pts[i, 2].astype(np.float64) * z_std + self.offset + self.x_bias * (q[:, 0] - 0.5)
        if images is not None:
            s = images.shape[-1]
            r = np.clip(((1.0 - q[:, 1]) * s).astype(int), 0, s - 1)  # image rows run north→south
            c = np.clip((q[:, 0] * s).astype(int), 0, s - 1)
            for band, gain in enumerate(self.gains):
                surf = surf + gain * images[band, r, c]
        logits = self.slope * (surf - q[:, 2] * z_std)
        return torch.from_numpy(logits.astype(np.float32))[None]


def write_checker_ortho(path: Path, square: float, pixel: float, bands: int = 1,
                        margin: float = 80.0, size: float = 260.0) -> Path:
    """A north-up checkerboard GeoTIFF (0 / 100) with ``square`` m squares (see :func:`checker`)."""
    n = int(round(size / pixel))
    ox, oy = X0 - margin, Y0 - margin + size
    xs = ox + (np.arange(n) + 0.5) * pixel
    ys = oy - (np.arange(n) + 0.5) * pixel
    xx, yy = np.meshgrid(xs, ys)
    grey = checker(xx, yy, square) * 100.0
    data = np.repeat(grey[None], bands, axis=0).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=bands, dtype="float32",
                       crs=CRS_L93, transform=Affine(pixel, 0, ox, 0, -pixel, oy)) as dst:
        dst.write(data)
    return path


CHECKER_SHIFT = 3.0  # so that no window is mirror-symmetric: a flipped image cannot pass


def checker(x: np.ndarray, y: np.ndarray, square: float) -> np.ndarray:
    u, v = x - X0 - CHECKER_SHIFT, y - Y0 - CHECKER_SHIFT
    return ((np.floor(u / square) + np.floor(v / square)) % 2).astype(np.float64)


def distance_to_checker_edge(x: np.ndarray, y: np.ndarray, square: float) -> np.ndarray:
    fx = np.mod(x - X0 - CHECKER_SHIFT, square)
    fy = np.mod(y - Y0 - CHECKER_SHIFT, square)
    return np.minimum(np.minimum(fx, square - fx), np.minimum(fy, square - fy))


def read_dsm(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1, masked=True).filled(np.nan)
