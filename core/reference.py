"""Reference DSM job: a DSM and a building mask from classified LiDAR, for making evaluation data.

LiDAR classes follow ASPRS LAS: 6 = building; 7 and 18 = low/high noise (dropped). The DSM is the
per-cell maximum of the remaining returns (the visible surface); small gaps (water, occlusions)
are filled with the nearest valid height within ``fill_max_distance``.
"""
from __future__ import annotations

import os

import numpy as np
from rasterio.crs import CRS
from scipy import ndimage

from .baseline import check_fill_max_distance, load_points
from .errors import InputError, param
from .gridding import (
    DEFAULT_MAX_PIXELS,
    GriddingOptions,
    check_resolution,
    count_points,
    fill_holes,
    grid_for_points,
    grid_points,
    rasterize_to_file,
)
from .outputs import check_output_path
from .pointcloud import PointCloud
from .progress import CancelFn, ProgressFn
from .raster import GEOTIFF_SUFFIXES, GeoTiffStreamWriter, GridSpec
from .vocabulary import BUILDING_CLASS, DEFAULT_REFERENCE_FILL_MAX_DISTANCE, NOISE_CLASSES

#: Cells around a band that the class masks' 3 × 3 closing needs.
MASK_HALO = 2


def reference_gridding(fill_max_distance: float) -> GriddingOptions:
    """How a reference DSM is gridded: the highest return per cell, gaps within
    ``fill_max_distance`` map units closed with the nearest height, nothing else."""
    return GriddingOptions(statistic="max", fill="nearest", fill_max_distance=fill_max_distance)


def without_noise(cloud: PointCloud) -> PointCloud:
    """The cloud without its noise returns (ASPRS classes 7 and 18); unclassified clouds as they are."""
    if cloud.classification is None:
        return cloud
    kept = cloud.subset(~np.isin(cloud.classification, NOISE_CLASSES))
    if len(kept) == 0:
        raise InputError(f"{cloud.source}: every point is classified as noise (class 7/18).")
    return kept


def class_mask(xyz: np.ndarray, classification: np.ndarray, grid: GridSpec,
               classes: int | tuple[int, ...] | list[int]) -> np.ndarray:
    """0/1 uint8 mask of the cells holding a point of ``classes``, closed by one pixel (3 × 3)."""
    mask = count_points(xyz, grid, select=np.isin(classification, classes)) > 0
    return ndimage.binary_closing(mask, structure=np.ones((3, 3), bool)).astype(np.uint8)


def reference_surface(cloud: PointCloud, grid: GridSpec, fill_max_distance: float) -> np.ndarray:
    """The reference DSM of a noise-free cloud on ``grid``, in memory (float32, NaN = no data).

    The same surface :func:`make_reference_dsm` streams to a file band by band (the training data's
    LiDAR scenes use this one).
    """
    options = reference_gridding(fill_max_distance)
    fill_px = int(np.ceil(options.fill_max_distance / grid.resolution))
    dsm = grid_points(cloud.xyz, grid, options.statistic)
    return fill_holes(dsm, options.fill, fill_px).astype(np.float32)


def make_reference_dsm(
    points: PointCloud | str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    resolution: float,
    points_crs: str | CRS | None = None,
    building_mask_out: str | os.PathLike[str] | None = None,
    fill_max_distance: float = DEFAULT_REFERENCE_FILL_MAX_DISTANCE,
    extent: str | tuple[float, float, float, float] | None = None,
    progress: ProgressFn | None = None,
    is_cancelled: CancelFn | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> GridSpec:
    """Write the reference DSM (and optionally a 0/1 building mask) from classified LiDAR."""
    check_resolution(resolution)
    check_fill_max_distance(fill_max_distance)
    inputs = [points] if not isinstance(points, PointCloud) else [points.source]
    out = check_output_path(out_path, inputs, suffixes=GEOTIFF_SUFFIXES)
    mask_out = None
    if building_mask_out is not None:
        mask_out = check_output_path(building_mask_out, [*inputs, out], "building_mask_out", GEOTIFF_SUFFIXES)
    cloud = load_points(points, points_crs)
    crs = cloud.require_crs()
    if cloud.classification is not None:
        cloud = without_noise(cloud)
    elif mask_out is not None:
        raise InputError(
            f"{cloud.source}: the point cloud has no classification, so no building mask can be made. "
            f"Use a classified LiDAR file (class 6 = building) or omit {param('building_mask_out')}."
        )
    grid = grid_for_points(cloud.xyz, crs, resolution, extent, source=cloud.source, max_pixels=max_pixels)
    options = reference_gridding(fill_max_distance)
    if mask_out is None:
        rasterize_to_file(cloud.xyz, grid, out, options, progress, is_cancelled)
        return grid
    classification = cloud.classification
    assert classification is not None  # an unclassified cloud with a mask output was refused above
    if not np.any(classification == BUILDING_CLASS):
        raise InputError(
            f"{cloud.source}: no point has class 6 (building), so the building mask would be empty. "
            f"Is the file classified? Omit {param('building_mask_out')} otherwise."
        )
    with GeoTiffStreamWriter(mask_out, grid, dtype="uint8", nodata=None) as mask_writer:

        def write_mask(band_grid: GridSpec, sel: np.ndarray) -> None:
            halo_grid = band_grid.window(-MASK_HALO, -MASK_HALO, band_grid.height + 2 * MASK_HALO,
                                         band_grid.width + 2 * MASK_HALO)
            mask = class_mask(cloud.xyz[sel], classification[sel], halo_grid, BUILDING_CLASS)
            core = mask[MASK_HALO:-MASK_HALO, MASK_HALO:-MASK_HALO]
            row_off = int(round((grid.transform.f - band_grid.transform.f) / grid.resolution))
            mask_writer.write(core, row_off, 0)

        rasterize_to_file(cloud.xyz, grid, out, options, progress, is_cancelled, band_hook=write_mask)
    return grid
