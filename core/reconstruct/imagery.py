"""Ortho-image windows for the model: cut on the model's image grid, grey, normalised.

For a window with south-west corner (x0, y0) and size W the image grid is ``image_size`` pixels of
W / image_size map units, north-up, row 0 at the window's north edge (the model's convention). The
ortho is read onto that grid through GDAL's warper, so an ortho in another CRS or at another pixel
size is reprojected/resampled (bilinear) on the fly.

Grey conversion (the model was trained on one panchromatic band per image): 1 band as is; 2 bands
(grey + alpha) the first; 3 or more bands (RGB, RGBA, RGB+NIR) the luma 0.299 R + 0.587 G + 0.114 B
of the first three. Pixels without data (outside the ortho or nodata) are set to the normalised
mean, 0, after normalisation so they carry no edge.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from affine import Affine

from ..errors import InputError, param
from ..raster import GridSpec, RasterReader
from ..vocabulary import variant_description

if TYPE_CHECKING:
    from rasterio.crs import CRS

log = logging.getLogger(__name__)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_grey(bands: np.ndarray) -> np.ndarray:
    """(B, H, W) → (H, W) grey (see the module docstring for the rule)."""
    if bands.shape[0] >= 3:
        return np.tensordot(LUMA, bands[:3], axes=1).astype(np.float32)
    return bands[0].astype(np.float32)


def image_grid(crs: CRS | None, x0: float, y0: float, size: float, pixels: int) -> GridSpec:
    """The model's north-up image grid over a window."""
    px = size / pixels
    return GridSpec(crs, Affine(px, 0.0, x0, 0.0, -px, y0 + size), pixels, pixels)


class OrthoWindows:
    """Open orthos kept for the whole run; :meth:`read` returns one window's model input."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], crs: CRS | None,
                 normalize: Callable[[np.ndarray], np.ndarray], image_size: int) -> None:
        self.paths = [Path(p) for p in paths]
        self.crs = crs
        self.normalize = normalize
        self.image_size = int(image_size)
        self._readers: list[RasterReader] = []
        try:
            for i, p in enumerate(self.paths, start=1):
                self._readers.append(RasterReader(p, what=f"ortho-image {i}"))
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        for r in self._readers:
            r.close()
        self._readers = []

    def __enter__(self) -> OrthoWindows:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, x0: float, y0: float, size: float) -> np.ndarray:
        """(n_images, S, S) float32, normalised, rows north→south."""
        grid = image_grid(self.crs, x0, y0, size, self.image_size)
        out = []
        for reader in self._readers:
            grey = to_grey(reader.read_on_grid(grid, "bilinear"))
            valid = np.isfinite(grey)
            # NaN marks no-data, so a per-image normalisation computes its statistics on real pixels.
            norm = np.asarray(self.normalize(np.where(valid, grey, np.nan).astype(np.float32)), dtype=np.float32)
            out.append(np.where(valid, norm, 0.0).astype(np.float32))
        return np.stack(out) if out else np.zeros((0, self.image_size, self.image_size), np.float32)


def check_image_count(n_orthos: int, n_images: int, model_name: str) -> None:
    """Mono/stereo must match the model; say which model wants what."""
    if n_orthos == n_images:
        return
    raise InputError(
        f"{param('orthos')}: {n_orthos} ortho-image(s) given, but the model {model_name} is "
        f"{variant_description(n_images)} and needs exactly {n_images}. "
        f"Give {n_images} ortho-image(s) or use a model trained for {n_orthos} image(s)."
    )


ORTHO_WARN_COVERAGE = 0.9  # warn when valid ortho pixels cover less of the output extent than this
MAX_ORTHO_PIXEL_FACTOR = 8.0  # refuse ortho pixels coarser than this many model image pixels
COVERAGE_SAMPLES = 256  # the coverage is measured on a grid of at most this many pixels per side


def check_ortho_coverage(paths: Sequence[str | os.PathLike[str]], crs: CRS | None, grid: GridSpec, image_pixel: float,
                         min_coverage: float) -> list[float]:
    """Refuse orthos that cannot inform the network, warn about partial ones; returns the share of
    the output extent each one covers with valid pixels.

    Why: an ortho 10 km from the cloud, one that is all nodata or a 1 x 1 px image used to be
    accepted, and the network then saw a blank (or constant) image everywhere — silently.
    Refused: fewer than 2 x 2 px; pixels coarser than ``MAX_ORTHO_PIXEL_FACTOR`` × ``image_pixel``
    (the model's image pixel, 0.5 m for 64 m / 128 px); valid pixels over less than
    ``min_coverage`` of the extent. Warned: less than ``ORTHO_WARN_COVERAGE``.
    """
    from rasterio.warp import transform_bounds

    xmin, ymin, xmax, ymax = grid.bounds
    step = max(xmax - xmin, ymax - ymin) / COVERAGE_SAMPLES
    step = max(step, grid.resolution)
    coarse = GridSpec.from_bounds(xmin, ymin, xmax, ymax, step, crs, snap=False)
    shares = []
    for i, path in enumerate(paths, start=1):
        what = f"ortho-image {i}"
        with RasterReader(path, what=what) as reader:
            if reader.width < 2 or reader.height < 2:
                raise InputError(f"{param('orthos')} {path}: the image is only {reader.width} x {reader.height} px; an "
                                 "ortho-image needs at least 2 x 2 px (typically thousands) over the extent.")
            bounds = reader.bounds_in
            if reader.crs is not None and crs is not None and reader.crs != crs:
                bounds = transform_bounds(reader.crs, crs, *bounds)
            pixel = math.sqrt(max((bounds[2] - bounds[0]) * (bounds[3] - bounds[1]), 0.0)
                              / (reader.width * reader.height))
            if pixel > MAX_ORTHO_PIXEL_FACTOR * image_pixel:
                raise InputError(
                    f"{param('orthos')} {path}: its pixels are about {pixel:.3g} map units wide, too coarse for the "
                    f"model, which sees the image at {image_pixel:.3g} per pixel (at most {MAX_ORTHO_PIXEL_FACTOR:g}x "
                    "coarser is accepted). Use a finer ortho-image.")
            valid = np.isfinite(to_grey(reader.read_on_grid(coarse, "nearest")))
        share = float(valid.mean())
        shares.append(share)
        ix = max(0.0, min(xmax, bounds[2]) - max(xmin, bounds[0]))
        iy = max(0.0, min(ymax, bounds[3]) - max(ymin, bounds[1]))
        footprint = ix * iy / max((xmax - xmin) * (ymax - ymin), 1e-12)
        if share < min_coverage:
            why = (f"its footprint ({bounds[0]:.1f}, {bounds[1]:.1f}, {bounds[2]:.1f}, {bounds[3]:.1f}) covers "
                   f"{100 * footprint:.0f}% of it; check the ortho's CRS and the points' CRS"
                   if footprint < min_coverage else
                   f"its footprint covers {100 * footprint:.0f}% of it but the rest is nodata")
            raise InputError(
                f"{param('orthos')} {path}: valid pixels cover only {100 * share:.1f}% of the output extent "
                f"({xmin:.1f}, {ymin:.1f}, {xmax:.1f}, {ymax:.1f}): {why}. At least {100 * min_coverage:.0f}% is "
                f"needed ({param('min_ortho_coverage')}); give an {param('extent')} inside the ortho or another "
                "ortho-image.")
        if share < ORTHO_WARN_COVERAGE:
            log.warning("ortho-image %s covers only %.0f%% of the output extent with valid pixels; where it has none "
                        "the network sees a blank image.", path, 100 * share)
    return shares
