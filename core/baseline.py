"""Baseline DSM job: the classical gridded DSM of a point cloud (what ImpliCity must beat)."""
from __future__ import annotations

import os

from rasterio.crs import CRS

from .errors import InputError
from .gridding import CancelFn, GriddingOptions, ProgressFn, grid_for_points, rasterize_to_file
from .outputs import check_output_path
from .pointcloud import PointCloud, read_point_cloud
from .raster import GEOTIFF_SUFFIXES, GridSpec


def load_points(points: "PointCloud | str | os.PathLike[str]", points_crs: "str | CRS | None" = None) -> PointCloud:
    """A PointCloud from a path or an existing object (CRS override applied either way)."""
    if isinstance(points, PointCloud):
        if points_crs is not None:
            from dataclasses import replace

            from .crs import parse_crs

            return replace(points, crs=parse_crs(points_crs))
        return points
    return read_point_cloud(points, crs=points_crs)


def make_baseline_dsm(
    points: "PointCloud | str | os.PathLike[str]",
    out_path: "str | os.PathLike[str]",
    resolution: float,
    points_crs: "str | CRS | None" = None,
    statistic: str = "max",
    fill: str = "idw",
    fill_max_distance: float = 10.0,
    outlier_threshold: float | None = None,
    smooth: int = 1,
    extent: "str | tuple[float, float, float, float] | None" = None,
    progress: ProgressFn | None = None,
    is_cancelled: CancelFn | None = None,
) -> GridSpec:
    """Grid a point cloud into a DSM GeoTIFF at ``out_path``; returns the output grid."""
    inputs = [points] if not isinstance(points, PointCloud) else [points.source]
    out = check_output_path(out_path, inputs, suffixes=GEOTIFF_SUFFIXES)
    cloud = load_points(points, points_crs)
    crs = cloud.require_crs()
    grid = grid_for_points(cloud.xyz, crs, resolution, extent, source=cloud.source)
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1 or smooth % 2 == 0:
        raise InputError(f"smooth: the median filter size must be an odd number of pixels >= 1 (got {smooth}).")
    options = GriddingOptions(statistic=statistic, fill=fill, fill_max_distance=fill_max_distance,  # type: ignore[arg-type]
                              outlier_threshold=outlier_threshold, smooth=smooth)
    rasterize_to_file(cloud.xyz, grid, out, options, progress, is_cancelled)
    return grid


__all__ = ["make_baseline_dsm", "load_points"]
