"""Patch normalisation in one place: what the network sees, and how to get back to map units.

One convention serves inference (``core/reconstruct``), data preparation (``training/data/prepare``)
and the training dataset (``training/data/dataset``):

* a patch (a 64 m inference window, a prepared training patch) maps to x, y in [0, 1] from its
  south-west corner (y grows northwards): ``(x − x0) / size``, ``(y − y0) / size``;
* heights become ``(z − z_shift) / z_std``, where ``z_shift`` is the median height of the patch's
  input points (:func:`height_shift`); the shift is what makes the network independent of absolute
  terrain height, ``z_std`` (:data:`DEFAULT_Z_STD`, the reference implementation's) its scale;
* ortho-images keep raster order (row 0 = north) and are normalised by :func:`normalize_image`.

The subtractions happen in float64: projected coordinates (e.g. 2.6e6 m) lose decimetres in float32
before the shift. Torch-free (numpy only), so the vocabulary of the format can be read without it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: The reference implementation's height scale: z → (z − z_shift) / z_std.
DEFAULT_Z_STD = 29.83779098
#: Per-image normalisation: spreads below this (in the image's own units) count as a flat image.
MIN_SPREAD = 1e-6
#: Per-image normalisation clips at ± this many robust standard deviations.
CLIP = 5.0


def height_shift(z: np.ndarray) -> float:
    """The height shift of a patch: the median of its input points' heights (float64)."""
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    if z.size == 0:
        raise ValueError("the height shift of a patch without points is undefined")
    return float(np.median(z))


def normalize_xy(xy: np.ndarray, x0: float, y0: float, size: float) -> np.ndarray:
    """(…, 2) map coordinates to the patch frame: [0, 1] from the south-west corner, float32."""
    v = np.asarray(xy, dtype=np.float64)
    return ((v - np.array([x0, y0])) / float(size)).astype(np.float32)


def normalize_z(z: np.ndarray, z_shift: float, z_std: float) -> np.ndarray:
    """Heights in map units to normalised heights, float32."""
    return ((np.asarray(z, dtype=np.float64) - float(z_shift)) / float(z_std)).astype(np.float32)


def denormalize_z(z: np.ndarray, z_shift: float, z_std: float) -> np.ndarray:
    """Normalised heights back to map units, float64."""
    return np.asarray(z, dtype=np.float64) * float(z_std) + float(z_shift)


def normalize_points(xyz: np.ndarray, x0: float, y0: float, size: float, z_shift: float,
                     z_std: float) -> np.ndarray:
    """(N, 3) map coordinates to the network frame (see the module docstring), float32."""
    v = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    out = (v - np.array([x0, y0, z_shift])) / np.array([size, size, z_std])
    return out.astype(np.float32)


@dataclass(frozen=True)
class PatchFrame:
    """Where a patch is: its south-west corner, side, height shift and height scale (map units)."""

    x0: float
    y0: float
    size: float
    z_shift: float
    z_std: float = DEFAULT_Z_STD

    @classmethod
    def of_points(cls, xyz: np.ndarray, x0: float, y0: float, size: float,
                  z_std: float = DEFAULT_Z_STD) -> PatchFrame:
        """The frame of the patch at (x0, y0) whose input points are ``xyz`` (shift = their median z)."""
        return cls(float(x0), float(y0), float(size), height_shift(np.asarray(xyz)[:, 2]), float(z_std))

    def local(self, xyz: np.ndarray) -> np.ndarray:
        """Map coordinates relative to the patch origin and height shift, in map units (float64)."""
        return np.asarray(xyz, dtype=np.float64).reshape(-1, 3) - np.array([self.x0, self.y0, self.z_shift])

    def normalize_points(self, xyz: np.ndarray) -> np.ndarray:
        return normalize_points(xyz, self.x0, self.y0, self.size, self.z_shift, self.z_std)

    def normalize_xy(self, xy: np.ndarray) -> np.ndarray:
        return normalize_xy(xy, self.x0, self.y0, self.size)

    def normalize_z(self, z: np.ndarray) -> np.ndarray:
        return normalize_z(z, self.z_shift, self.z_std)

    def denormalize_z(self, z: np.ndarray) -> np.ndarray:
        return denormalize_z(z, self.z_shift, self.z_std)

    def to_dict(self) -> dict[str, float]:
        """The frame as the training samples' ``normalizer`` dict (``patch_size`` = size)."""
        d = asdict(self)
        d["patch_size"] = d.pop("size")
        return d


def normalize_image(array: Any, config: Any) -> Any:
    """Ortho intensities to network input, no-data (NaN) → 0, float32; numpy (or a torch tensor).

    ``config`` is anything with ``image_normalization``, ``image_mean`` and ``image_std`` (a
    ModelConfig, a PatchDataset). ``"dataset"`` (the reference's way): (value − image_mean) /
    image_std with the training data's statistics. ``"per_image"``: each image (the last two axes) is
    centred on its own median and scaled by its own robust spread (1.4826 · MAD), then clipped to ±5 —
    so 8-bit, 16-bit, dark or bright orthos all reach the network alike, in training and at inference.
    """
    if not isinstance(array, np.ndarray) and hasattr(array, "detach"):  # a torch tensor, numpy inside
        import torch

        return torch.from_numpy(normalize_image(array.detach().cpu().numpy(), config)).to(array.device)
    if getattr(config, "image_normalization", "dataset") == "per_image":
        return _per_image(array)
    mean = np.float32(config.image_mean)
    std = np.float32(float(config.image_std) or 1.0)
    out = (np.asarray(array, dtype=np.float32) - mean) / std
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _per_image(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array, dtype=np.float32)
    flat = a.reshape(-1, a.shape[-2] * a.shape[-1]) if a.ndim >= 2 else a.reshape(1, -1)
    out = np.zeros_like(flat)
    for i, row in enumerate(flat):
        ok = np.isfinite(row)
        if not ok.any():
            continue
        med = float(np.median(row[ok]))
        spread = 1.4826 * float(np.median(np.abs(row[ok] - med)))
        if spread < MIN_SPREAD:
            spread = float(np.std(row[ok]))
        scale = 1.0 / spread if spread >= MIN_SPREAD else 0.0
        out[i] = np.where(ok, np.clip((row - med) * scale, -CLIP, CLIP), 0.0)
    return out.reshape(a.shape)
