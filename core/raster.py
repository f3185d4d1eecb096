"""Raster grids, reading rasters onto a grid, and atomic Cloud-Optimized GeoTIFF writing.

A :class:`GridSpec` is the one description of "which pixels": every product (DSM, residual, mask,
ortho window) is defined on one. Reading any raster *onto* a grid goes through a warped VRT, so a
different CRS, pixel size or alignment is handled by GDAL's resampling rather than silently mixed.
Writing always goes to a temporary file, then is converted to a COG and renamed into place.
"""
from __future__ import annotations

import errno
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT

from .crs import describe_crs, parse_crs
from .errors import InputError
from .outputs import remove_quietly, temporary_sibling

DEFAULT_NODATA = -9999.0
LOW_DISK_BYTES = 64 * 2 ** 20  # a write that fails with less free space than this failed on a full disk
GEOTIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class GridSpec:
    """A north-up raster grid: CRS, affine transform and size."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    @classmethod
    def from_bounds(
        cls, xmin: float, ymin: float, xmax: float, ymax: float, resolution: float,
        crs: CRS | None, snap: bool = True,
    ) -> GridSpec:
        """Grid covering the bounds; with ``snap`` its corners lie on multiples of the resolution
        so that products made from the same data at the same resolution line up pixel for pixel."""
        if not resolution or resolution <= 0 or not math.isfinite(resolution):
            raise InputError(f"Resolution must be a positive number of map units, got {resolution}.")
        if snap:
            xmin = math.floor(xmin / resolution) * resolution
            ymax = math.ceil(ymax / resolution) * resolution
        width = max(1, math.ceil(round((xmax - xmin) / resolution, 6)))
        height = max(1, math.ceil(round((ymax - ymin) / resolution, 6)))
        return cls(crs, Affine(resolution, 0.0, xmin, 0.0, -resolution, ymax), int(width), int(height))

    @property
    def resolution(self) -> float:
        return float(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        xmin, ymax = self.transform.c, self.transform.f
        return (xmin, ymax - self.height * self.resolution, xmin + self.width * self.resolution, ymax)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def window(self, row_off: int, col_off: int, height: int, width: int) -> GridSpec:
        """The sub-grid starting at (row_off, col_off); may extend past this grid."""
        x0 = self.transform.c + col_off * self.resolution
        y0 = self.transform.f - row_off * self.resolution
        return GridSpec(self.crs, Affine(self.resolution, 0.0, x0, 0.0, -self.resolution, y0), width, height)

    def xy_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """1-D arrays of pixel-centre x (per column) and y (per row)."""
        res = self.resolution
        xs = self.transform.c + (np.arange(self.width) + 0.5) * res
        ys = self.transform.f - (np.arange(self.height) + 0.5) * res
        return xs, ys

    def rowcol(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer (row, col) of map coordinates; may be outside the grid."""
        res = self.resolution
        cols = np.floor((np.asarray(x) - self.transform.c) / res).astype(np.int64)
        rows = np.floor((self.transform.f - np.asarray(y)) / res).astype(np.int64)
        return rows, cols


def open_raster(path: str | os.PathLike[str], what: str = "raster") -> rasterio.io.DatasetReader:
    """Open a raster with a clear error for missing or unreadable files."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{what} file not found: {p}. Check the path.")
    if p.is_dir():
        raise InputError(f"{what} {p} is a folder; give a raster file.")
    try:
        return rasterio.open(p)
    except (RasterioError, CPLE_BaseError) as exc:
        raise InputError(f"{p}: cannot open as a raster ({_first_line(exc)}). Is it a complete GeoTIFF/image?") from None


def _first_line(exc: BaseException) -> str:
    """The first line of an error and of its cause (GDAL puts the reason in the cause)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and "previous exception" in text:
        text = str(cause).splitlines()[0]
    return text


def unreadable(path: str | os.PathLike[str], what: str, exc: BaseException) -> InputError:
    """The error for a raster that opens but whose pixels cannot be read (truncated, corrupt)."""
    return InputError(f"{what} {path}: cannot read its pixels ({_first_line(exc)}); the file is truncated or "
                      "corrupt. Export or download it again.")


def write_failed(path: str | os.PathLike[str], exc: BaseException) -> InputError:
    """The error for a failed raster write; says so when the disk is full."""
    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    errno_ = getattr(exc, "errno", None) or getattr(exc.__cause__, "errno", None)
    if errno_ in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < LOW_DISK_BYTES) \
            or "no space left" in str(exc).lower():
        free_text = f"{free / 2 ** 20:,.1f} MiB free" if free is not None else "no space left"
        return InputError(f"{path}: the disk is full ({free_text} in {folder}); nothing was written. Free some "
                          "space or write the output to another folder.")
    return InputError(f"{path}: writing failed ({_first_line(exc)}); nothing was written. Check the folder "
                      "and the free disk space.")


def grid_of(path: str | os.PathLike[str], what: str = "raster") -> GridSpec:
    """The grid of an existing raster (must be north-up)."""
    with open_raster(path, what) as src:
        t = src.transform
        if t.b != 0 or t.d != 0 or t.e >= 0 or abs(abs(t.e) - t.a) > 1e-9 * abs(t.a):
            raise InputError(
                f"{path}: {what} must be north-up with square pixels (transform {tuple(t)[:6]}). "
                "Warp it first, e.g. with gdalwarp."
            )
        return GridSpec(src.crs, t, src.width, src.height)


class RasterReader:
    """An open raster that reads windows onto arbitrary grids (kept open across many tiles)."""

    def __init__(self, path: str | os.PathLike[str], crs: str | CRS | None = None, what: str = "raster") -> None:
        self.path = Path(path)
        self.what = what
        self._src = open_raster(path, what)
        user_crs = parse_crs(crs, what=f"CRS of {self.path.name}")
        self.crs = user_crs or self._src.crs
        self.count = self._src.count
        self.width, self.height = int(self._src.width), int(self._src.height)
        self.nodata = self._src.nodata
        if self._src.transform == Affine.identity() and not self._src.gcps[0]:
            self.close()
            raise InputError(f"{self.path}: {what} has no georeferencing (no transform or world file).")

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def bounds_in(self) -> tuple[float, float, float, float]:
        return tuple(self._src.bounds)

    def read_on_grid(self, grid: GridSpec, resampling: str = "bilinear",
                     bands: list[int] | None = None) -> np.ndarray:
        """Bands as float32 (bands, H, W) on ``grid``; NaN where no data or outside the raster."""
        if grid.crs is not None and self.crs is None:
            raise InputError(
                f"{self.path}: {self.what} has no CRS, so it cannot be matched to data in "
                f"{describe_crs(grid.crs)}. Give its CRS or add a .prj/.aux.xml."
            )
        method = Resampling[resampling]
        indexes = bands or list(range(1, self.count + 1))
        vrt_opts: dict[str, Any] = dict(
            crs=grid.crs or self.crs, transform=grid.transform, width=grid.width, height=grid.height,
            resampling=method,
        )
        if self.crs is not None:
            vrt_opts["src_crs"] = self.crs
        if self.nodata is not None:
            # Keep the source dtype and nodata: GDAL drops the nodata mask when asked to change dtype.
            vrt_opts["src_nodata"] = self.nodata
            vrt_opts["nodata"] = self.nodata
        # Without nodata, an alpha band is the only way the warper says "outside the raster" (it
        # would read as 0 otherwise, e.g. black ortho pixels or zero heights 10 km away).
        alpha = self.nodata is None and not self._has_mask()
        if alpha:
            vrt_opts["add_alpha"] = True
        try:
            with WarpedVRT(self._src, **vrt_opts) as vrt:
                data = vrt.read(indexes, masked=True)
                if alpha:
                    outside = vrt.read(vrt.count) == 0
                    data = np.ma.masked_array(data, mask=np.ma.getmaskarray(data) | outside[None])
        except (RasterioError, CPLE_BaseError) as exc:
            raise unreadable(self.path, self.what, exc) from None
        arr = np.ma.filled(data.astype(np.float32), np.nan)
        return arr

    def _has_mask(self) -> bool:
        """Whether the raster marks its own invalid pixels (alpha band or mask band)."""
        from rasterio.enums import ColorInterp, MaskFlags

        if ColorInterp.alpha in self._src.colorinterp:
            return True
        return any(MaskFlags.all_valid not in flags for flags in self._src.mask_flag_enums)


def read_raster_on_grid(path: str | os.PathLike[str], grid: GridSpec, resampling: str = "bilinear",
                        crs: str | CRS | None = None, what: str = "raster") -> np.ndarray:
    """One-shot :meth:`RasterReader.read_on_grid`."""
    with RasterReader(path, crs=crs, what=what) as reader:
        return reader.read_on_grid(grid, resampling)


def _profile(grid: GridSpec, count: int, dtype: str, nodata: float | int | None) -> dict[str, Any]:
    return dict(
        driver="GTiff", width=grid.width, height=grid.height, count=count, dtype=dtype,
        crs=grid.crs, transform=grid.transform, nodata=nodata, tiled=True, blockxsize=256,
        blockysize=256, compress="deflate", predictor=3 if dtype.startswith("float") else 2,
        BIGTIFF="IF_SAFER",
    )


def _finalize_cog(tmp_gtiff: Path, target: Path, dtype: str) -> None:
    """Convert the finished temporary GeoTIFF to a COG with overviews and rename it into place."""
    from rasterio.shutil import copy as rio_copy

    tmp_cog = temporary_sibling(target, ".tif")
    try:
        rio_copy(
            str(tmp_gtiff), str(tmp_cog), driver="COG", COMPRESS="DEFLATE",
            PREDICTOR="FLOATING_POINT" if dtype.startswith("float") else "YES",
            BLOCKSIZE=256, OVERVIEWS="AUTO", RESAMPLING="AVERAGE" if dtype.startswith("float") else "NEAREST",
            BIGTIFF="IF_SAFER",
        )
        _verify_complete(tmp_cog)
        os.replace(tmp_cog, target)
    finally:
        remove_quietly(tmp_cog)


def _verify_complete(path: Path, rows_per_read: int = 1024) -> None:
    """Read a just-written raster back, band by band and strip by strip.

    Why: GDAL's COG copy can meet a full disk (or a file size limit) and still return normally,
    leaving a truncated file that would be renamed into place with exit code 0. A COG stores its
    full-resolution tiles last, so a complete read of them proves the file is whole.
    """
    with rasterio.open(path) as src:
        for row in range(0, src.height, rows_per_read):
            window = rasterio.windows.Window(0, row, src.width, min(rows_per_read, src.height - row))
            src.read(window=window)


def _prepare(array: np.ndarray, nodata: float | int | None, dtype: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    if nodata is not None and np.issubdtype(np.dtype(dtype), np.floating):
        arr = np.where(np.isfinite(arr), arr, nodata)
    return arr.astype(dtype, copy=False)


def write_geotiff(path: str | os.PathLike[str], array: np.ndarray, grid: GridSpec,
                  nodata: float | int | None = DEFAULT_NODATA, dtype: str = "float32",
                  band_names: list[str] | None = None) -> Path:
    """Write (H, W) or (B, H, W) as a COG, atomically; NaN becomes ``nodata`` for float data."""
    arr = _prepare(array, nodata, dtype)
    if arr.shape[1:] != grid.shape:
        raise ValueError(f"array shape {arr.shape[1:]} does not match grid {grid.shape}")
    with GeoTiffStreamWriter(path, grid, count=arr.shape[0], dtype=dtype, nodata=nodata,
                             band_names=band_names) as writer:
        writer.write(arr, 0, 0)
    return Path(path)


def check_free_space(path: str | os.PathLike[str], grid: GridSpec, count: int = 1, dtype: str = "float32") -> None:
    """Refuse to start a raster that clearly cannot fit on its disk.

    The temporary GeoTIFF and the final COG coexist for a moment; DEFLATE rarely shrinks heights
    more than 4:1 overall, so a quarter of the uncompressed size is the least the two need. Failing
    here gives a clean message before any work; later failures are still caught (``write_failed``).
    """
    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    need = grid.width * grid.height * count * np.dtype(dtype).itemsize // 4
    if free < need:
        raise InputError(f"{path}: the disk is full: the output needs about {need / 2 ** 20:,.1f} MiB but only "
                         f"{free / 2 ** 20:,.1f} MiB are free in {folder}. Free some space or write the output to "
                         "another folder.")


class GeoTiffStreamWriter:
    """Write a large GeoTIFF window by window; the file appears only when everything succeeded.

    Memory stays bounded by the windows the caller holds. On a clean ``with`` exit the temporary
    GeoTIFF becomes a COG at the target path; on any exception (including cancellation) all
    temporary files are removed and the target path is left untouched.
    """

    def __init__(self, path: str | os.PathLike[str], grid: GridSpec, count: int = 1,
                 dtype: str = "float32", nodata: float | int | None = DEFAULT_NODATA,
                 band_names: list[str] | None = None) -> None:
        self.path = Path(path)
        self.grid = grid
        self.count = count
        self.dtype = dtype
        self.nodata = nodata
        self.band_names = band_names
        self._tmp = temporary_sibling(self.path, ".tif")
        self._dst: Any = None  # the open rasterio dataset between __enter__ and __exit__

    def __enter__(self) -> GeoTiffStreamWriter:
        check_free_space(self.path, self.grid, self.count, self.dtype)
        try:
            dst = rasterio.open(self._tmp, "w", **_profile(self.grid, self.count, self.dtype, self.nodata))
        except (RasterioError, CPLE_BaseError, OSError) as exc:
            error = write_failed(self.path, exc)
            remove_quietly(self._tmp)
            raise error from None
        self._dst = dst
        if self.band_names:
            for i, name in enumerate(self.band_names, start=1):
                dst.set_band_description(i, name)
        return self

    def write(self, array: np.ndarray, row_off: int, col_off: int) -> None:
        """Write a (H, W) or (B, H, W) block at (row_off, col_off); parts outside are clipped."""
        arr = _prepare(array, self.nodata, self.dtype)
        h, w = arr.shape[1:]
        r0, c0 = max(row_off, 0), max(col_off, 0)
        r1, c1 = min(row_off + h, self.grid.height), min(col_off + w, self.grid.width)
        if r1 <= r0 or c1 <= c0:
            return
        block = arr[:, r0 - row_off:r1 - row_off, c0 - col_off:c1 - col_off]
        try:
            with rasterio.Env():  # GDAL's errors go through rasterio (logged), not raw to stderr
                self._dst.write(block, window=rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0))
        except (RasterioError, CPLE_BaseError, OSError) as exc:
            raise write_failed(self.path, exc) from None

    def abort(self) -> None:
        try:
            if self._dst is not None and not self._dst.closed:
                with rasterio.Env():
                    self._dst.close()  # may fail again on a full disk: the temporary file goes anyway
        except Exception:  # noqa: BLE001 - closing a failed dataset may fail again; the file goes anyway
            pass
        finally:
            remove_quietly(self._tmp)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            with rasterio.Env():
                self._dst.close()
                _finalize_cog(self._tmp, self.path, self.dtype)
        except (RasterioError, CPLE_BaseError, OSError) as exc:
            raise write_failed(self.path, exc) from None
        finally:
            remove_quietly(self._tmp)


def read_band(path: str | os.PathLike[str], what: str = "raster") -> tuple[np.ndarray, GridSpec]:
    """The first band as float32 with NaN for nodata, and its grid."""
    grid = grid_of(path, what)
    with open_raster(path, what) as src:
        try:
            data = src.read(1, masked=True).astype(np.float32)
        except (RasterioError, CPLE_BaseError) as exc:
            raise unreadable(path, what, exc) from None
    return np.ma.filled(data, np.nan), grid
