"""Classical DSM gridding: points → per-cell statistic → outlier removal → hole filling.

This is the baseline that ImpliCity is compared against and the tool that turns classified LiDAR
into reference DSMs. Everything is vectorised numpy/scipy (one sort per tile, no Python loops over
points or pixels), and :func:`rasterize_to_file` works band by band so memory is bounded by the
band size, not by the extent.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .errors import InputError, param
from .progress import CancelFn, ProgressFn, check_cancelled
from .raster import GeoTiffStreamWriter, GridSpec
from .vocabulary import (
    DEFAULT_FILL,
    DEFAULT_FILL_MAX_DISTANCE,
    DEFAULT_STATISTIC,
    FILL_METHODS,
    FillMethod,
    Statistic,
    choice_list,
)

if TYPE_CHECKING:
    from rasterio.crs import CRS


def cell_index(xyz: np.ndarray, grid: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    """Flat cell index of each point inside the grid, and the mask of points inside."""
    rows, cols = grid.rowcol(xyz[:, 0], xyz[:, 1])
    inside = (rows >= 0) & (rows < grid.height) & (cols >= 0) & (cols < grid.width)
    return rows[inside] * grid.width + cols[inside], inside


def grid_points(xyz: np.ndarray, grid: GridSpec, statistic: Statistic = DEFAULT_STATISTIC) -> np.ndarray:
    """Per-cell statistic of point heights on ``grid``; NaN where a cell has no point."""
    idx, inside = cell_index(xyz, grid)
    z = xyz[inside, 2]
    n_cells = grid.width * grid.height
    out = np.full(n_cells, np.nan, dtype=np.float64)
    if idx.size == 0:
        return out.reshape(grid.shape).astype(np.float32)
    if statistic == "mean":
        counts = np.bincount(idx, minlength=n_cells)
        sums = np.bincount(idx, weights=z, minlength=n_cells)
        has = counts > 0
        out[has] = sums[has] / counts[has]
    elif statistic in ("max", "min"):
        order = np.argsort(idx, kind="stable")
        sidx, sz = idx[order], z[order]
        starts = np.flatnonzero(np.r_[True, sidx[1:] != sidx[:-1]])
        reducer = np.maximum if statistic == "max" else np.minimum
        out[sidx[starts]] = reducer.reduceat(sz, starts)
    elif statistic == "median":
        order = np.lexsort((z, idx))
        sidx, sz = idx[order], z[order]
        starts = np.flatnonzero(np.r_[True, sidx[1:] != sidx[:-1]])
        counts = np.diff(np.r_[starts, sidx.size])
        lo = sz[starts + (counts - 1) // 2]
        hi = sz[starts + counts // 2]
        out[sidx[starts]] = 0.5 * (lo + hi)
    else:
        raise InputError(f"Unknown statistic '{statistic}'; use max, median, mean or min.")
    return out.reshape(grid.shape).astype(np.float32)


def count_points(xyz: np.ndarray, grid: GridSpec, select: np.ndarray | None = None) -> np.ndarray:
    """Number of points (optionally only ``select``ed ones) per cell."""
    pts = xyz if select is None else xyz[select]
    idx, _ = cell_index(pts, grid)
    return np.bincount(idx, minlength=grid.width * grid.height).reshape(grid.shape)


def remove_outliers(dsm: np.ndarray, threshold: float, size: int = 5) -> np.ndarray:
    """Drop cells that differ from their ``size``×``size`` neighbourhood median by > threshold.

    Isolated spikes (birds, wires, matching blunders) and pits become holes that the filling step
    then closes from their neighbours.
    """
    valid = np.isfinite(dsm)
    if not valid.any():
        return dsm
    filled = fill_nearest(dsm)
    med = ndimage.median_filter(filled, size=size, mode="nearest")
    out = dsm.copy()
    out[valid & (np.abs(dsm - med) > threshold)] = np.nan
    return out


def fill_nearest(dsm: np.ndarray, max_distance_px: float | None = None) -> np.ndarray:
    """Fill NaN cells with the nearest valid cell (within ``max_distance_px`` if given)."""
    holes = ~np.isfinite(dsm)
    if not holes.any() or holes.all():
        return dsm.copy()
    dist, (ri, ci) = ndimage.distance_transform_edt(holes, return_indices=True)
    out = dsm[ri, ci]
    if max_distance_px is not None:
        out = np.where(holes & (dist > max_distance_px), np.nan, out)
    return out.astype(dsm.dtype, copy=False)


def _tie_breaker(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """A tiny deterministic offset per *global* pixel, so equidistant rim pixels are ranked the
    same way whether a hole is filled in one piece or band by band (no seams between bands)."""
    h = np.sin(rows * 12.9898 + cols * 78.233) * 43758.5453
    return (h - np.floor(h)) * 1e-3


def fill_idw(dsm: np.ndarray, max_distance_px: float, k: int = 8, power: float = 2.0,
             origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Inverse-distance-weighted filling of holes from the valid cells on their rims.

    ``origin`` is the global (row, col) of ``dsm[0, 0]`` when filling one band of a larger raster.
    """
    holes = ~np.isfinite(dsm)
    if not holes.any() or holes.all():
        return dsm.copy()
    dist = ndimage.distance_transform_edt(holes)
    target = holes & (dist <= max_distance_px)
    if not target.any():
        return dsm.copy()
    rim = ndimage.binary_dilation(holes) & ~holes
    rr, rc = np.nonzero(rim)
    tr, tc = np.nonzero(target)
    tree = cKDTree(np.column_stack([rr + _tie_breaker(rr + origin[0], rc + origin[1]), rc]))
    kk = min(k, rr.size)
    d, j = tree.query(np.column_stack([tr, tc]), k=kk, distance_upper_bound=max_distance_px * 2 + 2)
    if kk == 1:
        d, j = d[:, None], j[:, None]
    ok = np.isfinite(d)
    jj = np.where(ok, j, 0)
    w = np.where(ok, 1.0 / np.maximum(d, 1e-6) ** power, 0.0)
    vals = dsm[rr[jj], rc[jj]]
    wsum = w.sum(axis=1)
    out = dsm.copy()
    est = np.where(wsum > 0, (w * vals).sum(axis=1) / np.maximum(wsum, 1e-12), np.nan)
    out[tr, tc] = est.astype(dsm.dtype)
    return out


def fill_holes(dsm: np.ndarray, method: FillMethod = DEFAULT_FILL, max_distance_px: float = 20.0,
               origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Close gaps no wider than ``max_distance_px`` (larger gaps stay NaN = nodata)."""
    if method == "none":
        return dsm
    if method == "nearest":
        return fill_nearest(dsm, max_distance_px)
    if method == "idw":
        return fill_idw(dsm, max_distance_px, origin=origin)
    raise InputError(f"{param('fill')} '{method}': use {choice_list(FILL_METHODS)}.")


@dataclass(frozen=True)
class GriddingOptions:
    """How points become a DSM; shared by the baseline and the reference DSM."""

    statistic: Statistic = DEFAULT_STATISTIC
    fill: FillMethod = DEFAULT_FILL
    fill_max_distance: float = DEFAULT_FILL_MAX_DISTANCE  # map units
    outlier_threshold: float | None = None  # map units; None = keep all cells
    smooth: int = 1  # side (odd, pixels) of a final median filter; 1 = none
    band_rows: int = 1024  # rows per processing band (memory bound)


def median_smooth(dsm: np.ndarray, size: int) -> np.ndarray:
    """A ``size`` × ``size`` median filter that keeps no-data cells no-data.

    Why: the median-filtered gridding is the classical DSM that users compare against. Cells next
    to a hole use the nearest valid heights in place of the hole, so holes neither spread nor leak.
    """
    if size <= 1:
        return dsm
    if size % 2 == 0:
        raise InputError(f"smooth: the median filter size must be odd (got {size}); use 3, 5, 7, ...")
    valid = np.isfinite(dsm)
    if not valid.any():
        return dsm
    filled = fill_nearest(dsm) if not valid.all() else dsm
    return np.where(valid, ndimage.median_filter(filled, size=size, mode="nearest"), np.nan).astype(dsm.dtype)


BAND_PIXELS = 4_000_000  # cells per band of rasterize_to_file (with its halo)


def fill_halo(fill_px: float) -> int:
    """Rows/columns of context a band (a block) needs so that :func:`fill_holes` within ``fill_px``
    pixels gives the whole-raster result: ``2·fill_px + 3`` (a gap is filled from data up to
    ``fill_px`` away on either side, plus a margin of 3). Used by the banded gridding here and the
    reconstruction's row sink."""
    return int(np.ceil(2 * fill_px + 3))


def rasterize_to_file(
    xyz: np.ndarray, grid: GridSpec, out_path: str | os.PathLike[str], options: GriddingOptions,
    progress: ProgressFn | None = None, is_cancelled: CancelFn | None = None,
    band_hook: Callable[[GridSpec, np.ndarray], None] | None = None,
) -> None:
    """Grid, clean and fill ``xyz`` onto ``grid`` band by band, streaming into a COG.

    Each band is processed with a halo wide enough for the outlier filter and the hole filling, so
    the result equals a whole-raster computation while memory stays bounded by the band size.
    ``band_hook(band_grid, point_indices)`` receives each finished band's grid (no halo) and the
    indices of the points around it, so callers can rasterise extra layers (e.g. a building mask)
    from the same selection.
    """
    res = grid.resolution
    fill_px = 0 if options.fill == "none" else int(np.ceil(options.fill_max_distance / res))
    # IDW looks up to 2·fill_px + 2 pixels away for rim pixels, the outlier filter 2 more.
    halo = fill_halo(fill_px) + (3 if options.outlier_threshold is not None else 0) + options.smooth // 2
    rows, _ = grid.rowcol(xyz[:, 0], xyz[:, 1])
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    # Bands hold about BAND_PIXELS cells whatever the width, so a wide grid cannot exhaust memory.
    band_rows = min(options.band_rows, max(16, BAND_PIXELS // max(1, grid.width + 2 * halo)))
    n_bands = int(np.ceil(grid.height / band_rows))
    with GeoTiffStreamWriter(out_path, grid) as writer:
        for b in range(n_bands):
            check_cancelled(is_cancelled, "gridding")
            r0 = b * band_rows
            r1 = min(r0 + band_rows, grid.height)
            h0, h1 = r0 - halo, r1 + halo
            lo, hi = np.searchsorted(sorted_rows, [h0, h1])
            sel = order[lo:hi]
            band_grid = grid.window(h0, -halo, h1 - h0, grid.width + 2 * halo)
            dsm = grid_points(xyz[sel], band_grid, options.statistic)
            if options.outlier_threshold is not None:
                dsm = remove_outliers(dsm, options.outlier_threshold)
            dsm = fill_holes(dsm, options.fill, max(fill_px, 0), origin=(h0, -halo))
            dsm = median_smooth(dsm, options.smooth)
            core = dsm[halo:halo + (r1 - r0), halo:halo + grid.width]
            writer.write(core, r0, 0)
            if band_hook is not None:
                band_hook(grid.window(r0, 0, r1 - r0, grid.width), sel)
            if progress is not None:
                progress((b + 1) / n_bands, f"gridded rows {r1}/{grid.height}")


def parse_extent(text: str | tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
    """'xmin,ymin,xmax,ymax' → tuple, validated."""
    if text is None or text == "":
        return None
    if isinstance(text, str):
        parts = [p for p in text.replace(" ", ",").split(",") if p]
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            values = ()
    else:
        values = tuple(float(v) for v in text)
    if len(values) != 4 or not all(np.isfinite(values)) or not (values[0] < values[2] and values[1] < values[3]):
        raise InputError(
            f"{param('extent')} '{text}': give xmin,ymin,xmax,ymax in the point cloud's CRS with xmin < xmax "
            "and ymin < ymax."
        )
    return values


DEFAULT_MAX_PIXELS = 100_000_000  # 10,000 x 10,000 px: 400 MB per float32 raster, 25 km² at 0.5 m


def check_grid_size(grid: GridSpec, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Refuse a grid larger than ``max_pixels`` before anything is allocated for it.

    Why: a typo in the resolution or the extent (1e-6, a 10,000 km extent) used to end in a
    MemoryError traceback after eating all memory; the message says what the size is and which
    parameter raises the limit.
    """
    if max_pixels is None:
        return
    if not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels < 1:
        raise InputError(f"{param('max_pixels')} must be a positive whole number of pixels, got {max_pixels!r}.")
    n = grid.width * grid.height
    if n > max_pixels:
        raise InputError(
            f"The output grid would be {grid.width:,} x {grid.height:,} px ({n:,} pixels, "
            f"{n * 4 / 2 ** 30:,.1f} GiB per float32 raster) at resolution {grid.resolution:g}, above the "
            f"limit of {max_pixels:,} pixels. Use a coarser {param('resolution')} or a smaller {param('extent')}, "
            f"or raise the limit with {param('max_pixels')}.", parameter="max_pixels"
        )


def check_resolution(resolution: float) -> float:
    """The resolution as a float, or an InputError naming the parameter."""
    try:
        value = float(resolution)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"{param('resolution')} must be a positive number of map units, got {resolution}.")
    return value


def grid_for_points(xyz: np.ndarray, crs: CRS | None, resolution: float,
                    extent: str | tuple[float, float, float, float] | None = None, source: str = "point cloud",
                    max_pixels: int | None = DEFAULT_MAX_PIXELS) -> GridSpec:
    """Output grid: the user's extent or the extent of the body of the points, snapped to the
    resolution, and no larger than ``max_pixels``.

    Without an extent, far stray points (see :mod:`implicity.core.outliers`) do not stretch the
    grid: they are left outside it, and a warning says how many.
    """
    from .outliers import xy_body

    resolution = check_resolution(resolution)
    bounds = parse_extent(extent)
    if bounds is None:
        xmin, ymin, xmax, ymax = xy_body(xyz, source=source).bounds
        grid = GridSpec.from_bounds(xmin, ymin, xmax + resolution * 1e-3, ymax, resolution, crs)
        check_grid_size(grid, max_pixels)
        return grid
    xmin, ymin, xmax, ymax = bounds
    mn, mx = xyz[:, :2].min(axis=0), xyz[:, :2].max(axis=0)
    if xmin > mx[0] or xmax < mn[0] or ymin > mx[1] or ymax < mn[1]:
        raise InputError(
            f"{param('extent')} {xmin},{ymin},{xmax},{ymax} does not overlap the {source} "
            f"(which covers {mn[0]:.2f},{mn[1]:.2f},{mx[0]:.2f},{mx[1]:.2f}). Check the extent's CRS."
        )
    grid = GridSpec.from_bounds(xmin, ymin, xmax, ymax, resolution, crs)
    check_grid_size(grid, max_pixels)
    return grid
