"""Reference DSM job: a DSM and a building mask from classified LiDAR, for making evaluation data.

LiDAR classes follow ASPRS LAS: 6 = building; 7 and 18 = low/high noise (dropped). The DSM is the
per-cell maximum of the remaining returns (the visible surface); small gaps (water, occlusions)
are filled with the nearest valid height within ``fill_max_distance``.
"""
from __future__ import annotations

import math
import os

import numpy as np
from rasterio.crs import CRS
from scipy import ndimage

from .baseline import load_points
from .errors import InputError
from .gridding import (
    DEFAULT_MAX_PIXELS,
    CancelFn,
    GriddingOptions,
    ProgressFn,
    check_resolution,
    count_points,
    grid_for_points,
    rasterize_to_file,
)
from .outputs import check_output_path
from .pointcloud import PointCloud
from .raster import GEOTIFF_SUFFIXES, GeoTiffStreamWriter, GridSpec

BUILDING_CLASS = 6
NOISE_CLASSES = (7, 18)
MASK_HALO = 2


def make_reference_dsm(
    points: "PointCloud | str | os.PathLike[str]",
    out_path: "str | os.PathLike[str]",
    resolution: float,
    points_crs: "str | CRS | None" = None,
    building_mask_out: "str | os.PathLike[str] | None" = None,
    fill_max_distance: float = 2.0,
    extent: "str | tuple[float, float, float, float] | None" = None,
    progress: ProgressFn | None = None,
    is_cancelled: CancelFn | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> GridSpec:
    """Write the reference DSM (and optionally a 0/1 building mask) from classified LiDAR."""
    check_resolution(resolution)
    if not math.isfinite(float(fill_max_distance)) or fill_max_distance < 0:
        raise InputError(f"fill_max_distance (--fill-max-distance) must be a finite distance >= 0, "
                         f"got {fill_max_distance}.")
    inputs = [points] if not isinstance(points, PointCloud) else [points.source]
    out = check_output_path(out_path, inputs, suffixes=GEOTIFF_SUFFIXES)
    mask_out = None
    if building_mask_out is not None:
        mask_out = check_output_path(building_mask_out, [*inputs, out], option="--building-mask-out",
                                     suffixes=GEOTIFF_SUFFIXES)
    cloud = load_points(points, points_crs)
    crs = cloud.require_crs()
    if cloud.classification is not None:
        keep = ~np.isin(cloud.classification, NOISE_CLASSES)
        cloud = cloud.subset(keep)
        if len(cloud) == 0:
            raise InputError(f"{cloud.source}: every point is classified as noise (class 7/18).")
    elif mask_out is not None:
        raise InputError(
            f"{cloud.source}: the point cloud has no classification, so no building mask can be made. "
            "Use a classified LiDAR file (class 6 = building) or omit --building-mask-out."
        )
    grid = grid_for_points(cloud.xyz, crs, resolution, extent, source=cloud.source, max_pixels=max_pixels)
    options = GriddingOptions(statistic="max", fill="nearest", fill_max_distance=fill_max_distance)
    if mask_out is None:
        rasterize_to_file(cloud.xyz, grid, out, options, progress, is_cancelled)
        return grid
    if not (cloud.classification == BUILDING_CLASS).any():
        raise InputError(
            f"{cloud.source}: no point has class 6 (building), so the building mask would be empty. "
            "Is the file classified? Omit --building-mask-out otherwise."
        )
    is_building = cloud.classification == BUILDING_CLASS
    with GeoTiffStreamWriter(mask_out, grid, dtype="uint8", nodata=None) as mask_writer:

        def write_mask(band_grid: GridSpec, sel: np.ndarray) -> None:
            halo_grid = band_grid.window(-MASK_HALO, -MASK_HALO, band_grid.height + 2 * MASK_HALO,
                                         band_grid.width + 2 * MASK_HALO)
            counts = count_points(cloud.xyz[sel], halo_grid, select=is_building[sel])
            mask = ndimage.binary_closing(counts > 0, structure=np.ones((3, 3), bool))
            core = mask[MASK_HALO:-MASK_HALO, MASK_HALO:-MASK_HALO].astype(np.uint8)
            row_off = int(round((grid.transform.f - band_grid.transform.f) / grid.resolution))
            mask_writer.write(core, row_off, 0)

        rasterize_to_file(cloud.xyz, grid, out, options, progress, is_cancelled, band_hook=write_mask)
    return grid
