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

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from affine import Affine

from ..errors import InputError
from ..raster import GridSpec, RasterReader

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_grey(bands: np.ndarray) -> np.ndarray:
    """(B, H, W) → (H, W) grey (see the module docstring for the rule)."""
    if bands.shape[0] >= 3:
        return np.tensordot(LUMA, bands[:3], axes=1).astype(np.float32)
    return bands[0].astype(np.float32)


def image_grid(crs, x0: float, y0: float, size: float, pixels: int) -> GridSpec:
    """The model's north-up image grid over a window."""
    px = size / pixels
    return GridSpec(crs, Affine(px, 0.0, x0, 0.0, -px, y0 + size), pixels, pixels)


class OrthoWindows:
    """Open orthos kept for the whole run; :meth:`read` returns one window's model input."""

    def __init__(self, paths: Sequence["str | os.PathLike[str]"], crs, normalize: Callable[[np.ndarray], np.ndarray],
                 image_size: int):
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

    def __enter__(self) -> "OrthoWindows":
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
    kind = {0: "ImpliCity-0 (points only)", 1: "ImpliCity-mono (one ortho)", 2: "ImpliCity-stereo (two orthos)"}
    raise InputError(
        f"--ortho: {n_orthos} ortho-image(s) given, but the model {model_name} is "
        f"{kind.get(n_images, f'a model with {n_images} images')} and needs exactly {n_images}. "
        f"Give {n_images} --ortho file(s) or use a model trained for {n_orthos} image(s)."
    )
