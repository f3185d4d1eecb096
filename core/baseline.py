"""Baseline DSM job: the classical gridded DSM of a point cloud (what ImpliCity must beat)."""
from __future__ import annotations

import math
import os

from rasterio.crs import CRS

from .crs import check_coordinates_fit_crs
from .errors import InputError, param
from .gridding import DEFAULT_MAX_PIXELS, GriddingOptions, check_resolution, grid_for_points, rasterize_to_file
from .outliers import far_height_mask
from .outputs import check_output_path
from .pointcloud import PointCloud, drop_non_finite, read_point_cloud
from .progress import CancelFn, ProgressFn
from .raster import GEOTIFF_SUFFIXES, GridSpec
from .vocabulary import (
    DEFAULT_FILL,
    DEFAULT_FILL_MAX_DISTANCE,
    DEFAULT_STATISTIC,
    FILL_METHODS,
    STATISTICS,
    FillMethod,
    Statistic,
    choice_list,
)


def load_points(points: PointCloud | str | os.PathLike[str], points_crs: str | CRS | None = None,
                drop_far_heights: bool = True) -> PointCloud:
    """A PointCloud from a path or an existing object (CRS override applied either way).

    Every tool reads its points here, so the same guards apply everywhere: a geographic CRS on
    coordinates that cannot be degrees is refused, and heights far from all the others (a point at
    z = 1e9) are dropped with a warning (:mod:`implicity.core.outliers`).
    """
    if isinstance(points, PointCloud):
        cloud = points
        if points_crs is not None:
            from dataclasses import replace

            from .crs import parse_crs

            cloud = replace(points, crs=parse_crs(points_crs))
        cloud = drop_non_finite(cloud)
        if len(cloud) == 0:
            raise InputError(f"{cloud.source}: the point cloud contains no (finite) points.")
    else:
        cloud = read_point_cloud(points, crs=points_crs)
    check_coordinates_fit_crs(cloud.xyz, cloud.crs, cloud.source)
    if drop_far_heights and len(cloud) > 0:
        keep = far_height_mask(cloud.xyz[:, 2], source=cloud.source)
        if keep is not None:
            cloud = cloud.subset(keep)
    return cloud


def check_gridding_options(statistic: str, fill: str, fill_max_distance: float,
                           outlier_threshold: float | None) -> None:
    """Refuse NaN, infinite, negative or unknown gridding options before any file is read."""
    if statistic not in STATISTICS:
        raise InputError(f"{param('statistic')} '{statistic}': use {choice_list(STATISTICS)}.")
    if fill not in FILL_METHODS:
        raise InputError(f"{param('fill')} '{fill}': use {choice_list(FILL_METHODS)}.")
    check_fill_max_distance(fill_max_distance)
    if outlier_threshold is not None and (not _finite(outlier_threshold) or outlier_threshold <= 0):
        raise InputError(f"{param('outlier_threshold')} must be a finite height > 0, got {outlier_threshold}.")


def check_fill_max_distance(fill_max_distance: float) -> None:
    """Refuse a NaN, infinite or negative hole-filling distance."""
    if not _finite(fill_max_distance) or fill_max_distance < 0:
        raise InputError(f"{param('fill_max_distance')} must be a finite distance >= 0, got {fill_max_distance}.")


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def make_baseline_dsm(
    points: PointCloud | str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    resolution: float,
    points_crs: str | CRS | None = None,
    statistic: Statistic = DEFAULT_STATISTIC,
    fill: FillMethod = DEFAULT_FILL,
    fill_max_distance: float = DEFAULT_FILL_MAX_DISTANCE,
    outlier_threshold: float | None = None,
    smooth: int = 1,
    extent: str | tuple[float, float, float, float] | None = None,
    progress: ProgressFn | None = None,
    is_cancelled: CancelFn | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> GridSpec:
    """Grid a point cloud into a DSM GeoTIFF at ``out_path``; returns the output grid."""
    inputs = [points] if not isinstance(points, PointCloud) else [points.source]
    out = check_output_path(out_path, inputs, suffixes=GEOTIFF_SUFFIXES)
    check_resolution(resolution)
    check_gridding_options(statistic, fill, fill_max_distance, outlier_threshold)
    cloud = load_points(points, points_crs)
    crs = cloud.require_crs()
    grid = grid_for_points(cloud.xyz, crs, resolution, extent, source=cloud.source, max_pixels=max_pixels)
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1 or smooth % 2 == 0:
        raise InputError(f"{param('smooth')}: the median filter size must be an odd number of pixels >= 1 "
                         f"(got {smooth}).")
    options = GriddingOptions(statistic=statistic, fill=fill, fill_max_distance=fill_max_distance,
                              outlier_threshold=outlier_threshold, smooth=smooth)
    rasterize_to_file(cloud.xyz, grid, out, options, progress, is_cancelled)
    return grid


__all__ = ["make_baseline_dsm", "load_points"]
