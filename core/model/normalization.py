"""Patch normalisation in one place: what the network sees, and how to get back to metres.

A 64 m patch maps to x, y in [0, 1] from its south-west corner (y grows northwards), and heights
become (z − median z of the patch's input points) / z_std. The median shift is what makes the
network independent of absolute terrain height. Ortho-images keep raster order (row 0 = north).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from implicity.core.errors import InputError

from .config import DEFAULT_Z_STD

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class PatchNormalizer:
    """Affine map between CRS coordinates of one patch and the network's normalised frame."""

    x0: float                      # south-west corner of the patch, CRS units
    y0: float
    z_shift: float                 # median z of the patch's input points
    patch_size: float = 64.0
    z_std: float = DEFAULT_Z_STD

    @classmethod
    def from_points(cls, xyz: Any, x0: float, y0: float, patch_size: float = 64.0,
                    z_std: float = DEFAULT_Z_STD) -> "PatchNormalizer":
        """The normaliser of the patch at (x0, y0): z_shift = median z of the points inside it."""
        arr = xyz.detach().cpu().numpy() if isinstance(xyz, torch.Tensor) else np.asarray(xyz)
        arr = arr.reshape(-1, 3)
        probe = cls(float(x0), float(y0), 0.0, float(patch_size), float(z_std))
        inside = probe.inside(arr)
        if not inside.any():
            raise InputError(f"no input points inside the {patch_size:g} m patch at ({x0:.3f}, {y0:.3f}): "
                             "its height shift (median z) is undefined. Skip empty patches.")
        return cls(float(x0), float(y0), float(np.median(arr[inside, 2].astype(np.float64))),
                   float(patch_size), float(z_std))

    def inside(self, xyz: ArrayT) -> ArrayT:
        """Boolean mask of points whose x, y lie in the patch (edges included: [x0, x0 + size])."""
        x = xyz[..., 0] - self.x0
        y = xyz[..., 1] - self.y0
        return (x >= 0) & (x <= self.patch_size) & (y >= 0) & (y <= self.patch_size)

    def normalize(self, xyz: ArrayT, dtype: Any = None) -> ArrayT:
        """(…, 3) CRS coordinates to the network frame, as float32 unless ``dtype`` says otherwise.

        The subtraction happens in float64: projected coordinates (e.g. 2.6e6 m) lose decimetres
        in float32 before the shift.
        """
        if isinstance(xyz, torch.Tensor):
            v = xyz.to(torch.float64)
            offset = torch.tensor([self.x0, self.y0, self.z_shift], dtype=torch.float64, device=v.device)
            scale = torch.tensor([self.patch_size, self.patch_size, self.z_std], dtype=torch.float64,
                                 device=v.device)
            return ((v - offset) / scale).to(dtype or torch.float32)
        v = np.asarray(xyz, dtype=np.float64)
        out = (v - np.array([self.x0, self.y0, self.z_shift])) / np.array(
            [self.patch_size, self.patch_size, self.z_std])
        return out.astype(dtype or np.float32, copy=False)

    def denormalize(self, xyz: ArrayT) -> ArrayT:
        """Inverse of :meth:`normalize` (float64 result)."""
        if isinstance(xyz, torch.Tensor):
            v = xyz.to(torch.float64)
            scale = torch.tensor([self.patch_size, self.patch_size, self.z_std], dtype=torch.float64,
                                 device=v.device)
            offset = torch.tensor([self.x0, self.y0, self.z_shift], dtype=torch.float64, device=v.device)
            return v * scale + offset
        v = np.asarray(xyz, dtype=np.float64)
        return v * np.array([self.patch_size, self.patch_size, self.z_std]) + np.array(
            [self.x0, self.y0, self.z_shift])

    def normalize_z(self, z: ArrayT) -> ArrayT:
        """Heights in CRS units to normalised z (float64 for numpy, input dtype for torch)."""
        if isinstance(z, torch.Tensor):
            return (z - self.z_shift) / self.z_std
        return (np.asarray(z, dtype=np.float64) - self.z_shift) / self.z_std

    def denormalize_z(self, z: ArrayT) -> ArrayT:
        """Normalised heights back to CRS units (float64 for numpy and torch)."""
        if isinstance(z, torch.Tensor):
            return z.to(torch.float64) * self.z_std + self.z_shift
        return np.asarray(z, dtype=np.float64) * self.z_std + self.z_shift

    def to_dict(self) -> dict[str, float]:
        return {"x0": self.x0, "y0": self.y0, "z_shift": self.z_shift, "patch_size": self.patch_size,
                "z_std": self.z_std}


def normalize_image(array: ArrayT, config: Any) -> ArrayT:
    """Ortho intensities to network input, no-data (NaN) → 0, float32; numpy or torch.

    ``config`` is anything with ``image_normalization``, ``image_mean`` and ``image_std`` (a
    ModelConfig). ``"dataset"`` (the reference's way): (value − image_mean) / image_std with the
    training data's statistics. ``"per_image"``: each image (the last two axes) is centred on its own
    median and scaled by its own robust spread (1.4826 · MAD), then clipped to ±5 — so 8-bit,
    16-bit, dark or bright orthos all reach the network alike, in training and at inference.
    """
    if getattr(config, "image_normalization", "dataset") == "per_image":
        return _per_image(array)
    mean = float(config.image_mean)
    std = float(config.image_std)
    if isinstance(array, torch.Tensor):
        out = (array.to(torch.float32) - mean) / std
        return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    out = (np.asarray(array, dtype=np.float32) - np.float32(mean)) / np.float32(std)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


#: Per-image normalisation: spreads below this (in the image's own units) count as a flat image.
_MIN_SPREAD = 1e-6
_CLIP = 5.0


def _per_image(array: ArrayT) -> ArrayT:
    if isinstance(array, torch.Tensor):
        return torch.from_numpy(_per_image(array.detach().cpu().numpy())).to(array.device)
    a = np.asarray(array, dtype=np.float32)
    flat = a.reshape(-1, a.shape[-2] * a.shape[-1]) if a.ndim >= 2 else a.reshape(1, -1)
    out = np.zeros_like(flat)
    for i, row in enumerate(flat):
        ok = np.isfinite(row)
        if not ok.any():
            continue
        med = float(np.median(row[ok]))
        spread = 1.4826 * float(np.median(np.abs(row[ok] - med)))
        if spread < _MIN_SPREAD:
            spread = float(np.std(row[ok]))
        scale = 1.0 / spread if spread >= _MIN_SPREAD else 0.0
        out[i] = np.where(ok, np.clip((row - med) * scale, -_CLIP, _CLIP), 0.0)
    return out.reshape(a.shape)
