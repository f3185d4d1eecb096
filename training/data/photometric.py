"""Photometric and geometric augmentation of grey ortho patches (training only).

Why: real orthos differ from any one rendering in exposure, contrast curve, sharpness, compression,
bit depth and registration. Each training sample draws its own gain, gamma, offset, blur, sensor
noise, JPEG compression, 0–2 px misregistration and bit depth, so a mono/stereo model has to use
what is stable across images (edges, shadows, texture), not one rendering style. The model's
per-image normalisation (``image_normalization: per_image``) then removes the remaining scale.

Optional *texture* (off by default) multiplies the image by a random smooth field (amplitude and grain
drawn per image): rendered cities have flat, uniform roofs and ground, real orthos have tiles, cars, road
markings and vegetation at every scale, so an albedo step alone stops being a reliable sign of a height step.

Optional *lean* (off by default) warps the images as a standard ortho shows a scene: rectified on the
ground, so everything above it leans away from the view by (height above ground) · tan(off-nadir angle),
the view's azimuth and angle drawn per sample and shared by all of its images. Satellite ortho products
and most aerial orthos are such (only *true* orthos are rectified on the surface); the synthetic cities'
renderings and the orthos made from LiDAR point colours are true orthos, so without it a network learns
that every roof outline in the image lies exactly over the roof's edge.

Two optional draws (off by default) teach the network that an ortho is a hint, not the truth:
*withholding* blanks an image to no-data (modality dropout: the network keeps a cloud-only path,
as it needs where a user's ortho does not cover a window), and *mismatching* replaces it by the
same image turned or mirrored (real texture that does not fit the cloud, as a misregistered or
out-of-date ortho), so where image and cloud disagree the network learns to follow the cloud.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class PhotometricAugmentation:
    """Ranges drawn per image and sample."""

    gain: tuple[float, float] = (0.5, 2.0)
    gamma: tuple[float, float] = (0.6, 1.6)
    offset: tuple[float, float] = (-0.1, 0.1)        # fraction of the image's range
    blur_px: tuple[float, float] = (0.0, 1.5)
    noise: tuple[float, float] = (0.0, 0.03)          # fraction of the image's range
    jpeg_probability: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 95)
    shift_px: float = 2.0                             # misregistration, any direction
    texture: tuple[float, float] = (0.0, 0.0)         # amplitude of a multiplicative texture (0 = off)
    texture_scale_px: tuple[float, float] = (1.0, 8.0)  # its grain (Gaussian sigma, pixels)
    bit_depths: tuple[int, ...] = (8, 16)
    lean_off_nadir_deg: tuple[float, float] = (0.0, 0.0)  # view angle of a leaning ortho (0 = off)
    lean_probability: float = 0.5                      # share of samples whose images lean, when on
    withhold_probability: float = 0.0                 # image → all no-data
    mismatch_probability: float = 0.0                 # image → itself under another symmetry

    def __post_init__(self) -> None:
        p, q = self.withhold_probability, self.mismatch_probability
        if not (0.0 <= p <= 1.0 and 0.0 <= q <= 1.0 and p + q <= 1.0):
            raise ValueError(f"withhold_probability ({p}) and mismatch_probability ({q}) must each be in "
                             "[0, 1] and add up to at most 1")
        from .stereo_view import MAX_OFF_NADIR_DEG

        lean, lp = self.lean_off_nadir_deg, self.lean_probability
        if not (0.0 <= lean[0] <= lean[1] < MAX_OFF_NADIR_DEG and 0.0 <= lp <= 1.0):
            raise ValueError(f"lean_off_nadir_deg {lean} must satisfy 0 <= low <= high < {MAX_OFF_NADIR_DEG:g} "
                             f"(degrees) and lean_probability ({lp}) lie in [0, 1]")
        a, s = self.texture, self.texture_scale_px
        if not (0.0 <= a[0] <= a[1] <= 1.0 and 0.0 < s[0] <= s[1]):
            raise ValueError(f"texture {a} must satisfy 0 <= low <= high <= 1 and texture_scale_px {s} "
                             "0 < low <= high")


def _texture(rng: np.random.Generator, shape: tuple[int, ...], amplitude: float, sigma_px: float) -> np.ndarray:
    """1 + amplitude * a smooth random field of unit standard deviation (a multiplicative texture)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    return 1.0 + amplitude * field / max(float(field.std()), 1e-12)


def _jpeg(image01: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.clip(image01 * 255 + 0.5, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf), dtype=np.float32) / 255.0


def augment_images(rng: np.random.Generator, images: np.ndarray, aug: PhotometricAugmentation,
                   surface: np.ndarray | None = None, resolution: float | None = None) -> np.ndarray:
    """(n, S, S) grey images (NaN = no data) → augmented images in the drawn bit depth's range.

    ``surface`` / ``resolution``: the reference DSM on the images' grid (rows north→south) and its
    cell size in metres, which the *lean* needs (without them no lean is drawn)."""
    if aug.lean_off_nadir_deg[1] > 0 and surface is not None and resolution is not None:
        images = lean_images(rng, images, surface, float(resolution), aug)
    out = np.empty_like(images, dtype=np.float32)
    for i, img in enumerate(images):
        valid = np.isfinite(img)
        if not valid.any():
            out[i] = img
            continue
        lo, hi = np.percentile(img[valid], [0.5, 99.5])
        x = np.clip((np.where(valid, img, lo) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        x = np.clip(x * rng.uniform(*aug.gain) + rng.uniform(*aug.offset), 0.0, 1.0) ** rng.uniform(*aug.gamma)
        if aug.texture[1] > 0:  # no draw when off: the random stream of older configs stays the same
            x = np.clip(x * _texture(rng, x.shape, rng.uniform(*aug.texture), rng.uniform(*aug.texture_scale_px)),
                        0.0, 1.0)
        sigma = rng.uniform(*aug.blur_px)
        if sigma > 0.05:
            x = ndimage.gaussian_filter(x, sigma)
        x = np.clip(x + rng.normal(0.0, rng.uniform(*aug.noise), x.shape), 0.0, 1.0)
        if rng.random() < aug.jpeg_probability:
            x = _jpeg(x, int(rng.integers(aug.jpeg_quality[0], aug.jpeg_quality[1] + 1)))
        if aug.shift_px > 0:
            angle = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(0, aug.shift_px)
            x = ndimage.shift(x, (dist * np.sin(angle), dist * np.cos(angle)), order=1, mode="nearest")
            valid = ndimage.shift(valid.astype(np.float32), (dist * np.sin(angle), dist * np.cos(angle)),
                                  order=0, mode="constant", cval=0.0) > 0.5
        depth = int(rng.choice(aug.bit_depths))
        x = np.round(x * (2 ** depth - 1))
        out[i] = np.where(valid, x, np.nan)
    if aug.withhold_probability > 0 or aug.mismatch_probability > 0:  # no draw otherwise: same stream
        out = withhold_or_mismatch(rng, out, aug.withhold_probability, aug.mismatch_probability)
    return out


def lean_images(rng: np.random.Generator, images: np.ndarray, surface: np.ndarray, resolution: float,
                aug: PhotometricAugmentation) -> np.ndarray:
    """With probability ``aug.lean_probability``, every image as a standard ortho of one drawn view
    (azimuth uniform, off-nadir angle in ``aug.lean_off_nadir_deg``) shows it; else unchanged."""
    from .stereo_view import leaning_view

    if surface.shape != images.shape[1:]:
        raise ValueError(f"lean: the surface {surface.shape} is not on the images' grid {images.shape[1:]}")
    if rng.random() >= aug.lean_probability:
        return images
    azimuth, off_nadir = rng.uniform(0.0, 360.0), rng.uniform(*aug.lean_off_nadir_deg)
    return np.stack([leaning_view(img, surface, resolution, azimuth, off_nadir) for img in images])


def withhold_or_mismatch(rng: np.random.Generator, images: np.ndarray, withhold: float,
                         mismatch: float) -> np.ndarray:
    """Each (S, S) image independently: with probability ``withhold`` all no-data (NaN), with
    probability ``mismatch`` turned / mirrored by one of the 7 non-identity symmetries of the square,
    else unchanged. A stereo sample can so lose or scramble one view and keep the other."""
    from .dataset import augment_grid  # the training symmetries; imported here, dataset imports us

    out = images.copy()
    for i in range(len(out)):
        u = rng.random()
        if u < withhold:
            out[i] = np.nan
        elif u < withhold + mismatch:
            symmetry = int(rng.integers(1, 8))              # 0 would be the identity
            out[i] = augment_grid(out[i], flip=symmetry >= 4, k=symmetry % 4)
    return out
