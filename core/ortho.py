"""Ortho-images from coloured point clouds.

Many LiDAR and photogrammetric clouds carry per-point RGB sampled from an orthophoto. Rasterising
the colour of the highest point per cell gives a true-ortho image on any grid, which ImpliCity-mono
can use as its image input when no separate ortho-image is at hand.
"""
from __future__ import annotations

import os

import numpy as np

from .errors import InputError
from .gridding import cell_index, fill_nearest
from .pointcloud import PointCloud
from .raster import GridSpec, write_geotiff


def rasterize_colors(cloud: PointCloud, grid: GridSpec, fill_max_distance_px: float = 4.0) -> np.ndarray:
    """(3, H, W) float32 colours of the highest point per cell, small gaps filled, NaN elsewhere."""
    if cloud.rgb is None:
        raise InputError(f"{cloud.source}: the point cloud has no RGB colours, so no ortho can be made from it.")
    idx, inside = cell_index(cloud.xyz, grid)
    z = cloud.xyz[inside, 2]
    rgb = cloud.rgb[inside].astype(np.float32)
    if rgb.max(initial=0) > 255:  # LAS stores 16-bit colours; bring them to 8-bit range
        rgb = rgb / 256.0
    order = np.lexsort((z, idx))
    sidx = idx[order]
    last = np.flatnonzero(np.r_[sidx[1:] != sidx[:-1], True])
    n = grid.width * grid.height
    out = np.full((3, n), np.nan, dtype=np.float32)
    out[:, sidx[last]] = rgb[order[last]].T
    bands = out.reshape(3, *grid.shape)
    return np.stack([fill_nearest(b, fill_max_distance_px) for b in bands])


def write_ortho_from_points(cloud: PointCloud, grid: GridSpec, out_path: str | os.PathLike[str]) -> None:
    """Write the rasterised colours as an 8-bit RGB GeoTIFF (0 = nodata)."""
    rgb = rasterize_colors(cloud, grid)
    data = np.where(np.isfinite(rgb), np.clip(np.round(rgb), 1, 255), 0).astype(np.uint8)
    write_geotiff(out_path, data, grid, nodata=0, dtype="uint8")
