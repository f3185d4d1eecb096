"""Nadir ortho-images of a DSM with sun shading and cast shadows (a rendering, not a photo).

The image of a surface under the sun is modelled as albedo × (sky light + direct sun), where the
direct term is the cosine between the surface normal (from the DSM gradient) and the sun vector,
and is zero in cast shadows (:func:`.visibility.blocked_mask` towards the sun). The result is
scaled to 8-bit digital numbers (the range of most orthophotos users have, so synthetic and real
images share one intensity normalisation), with Gaussian sensor noise.
Two renderings with different sun positions (dates / times of day) play the two images of
ImpliCity-stereo. The image is a *true ortho*: every pixel shows the top surface straight down.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .visibility import blocked_mask


@dataclass(frozen=True)
class SunPosition:
    """Sun direction: azimuth clockwise from north, elevation above the horizon (degrees)."""

    azimuth_deg: float
    elevation_deg: float


def sun_position(day_of_year: int, solar_hour: float, latitude_deg: float) -> SunPosition:
    """Approximate sun position from the date, local solar time and latitude.

    Uses the usual declination/hour-angle formulas (good to a degree or so), enough to give
    renderings the shadow lengths and directions of real acquisition dates.
    """
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + day_of_year) / 365.0)
    hour_angle = math.radians(15.0 * (solar_hour - 12.0))
    lat = math.radians(latitude_deg)
    sin_el = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour_angle)
    el = math.asin(max(-1.0, min(1.0, sin_el)))
    cos_az = (math.sin(decl) - math.sin(el) * math.sin(lat)) / max(math.cos(el) * math.cos(lat), 1e-9)
    az = math.degrees(math.acos(max(-1.0, min(1.0, cos_az))))
    if hour_angle > 0:
        az = 360.0 - az
    return SunPosition(azimuth_deg=az, elevation_deg=math.degrees(el))


@dataclass(frozen=True)
class RenderConfig:
    """Radiometry of a rendering."""

    ambient: float = 0.2  # sky light, relative to the direct sun on a surface facing it
    gain: float = 330.0  # digital numbers for albedo 1 fully lit
    noise_dn: float = 2.0  # sensor noise std (DN)
    max_dn: int = 255  # 8-bit product


def surface_normals(dsm: np.ndarray, resolution: float) -> np.ndarray:
    """(3, H, W) unit normals (east, north, up) of a north-up DSM."""
    filled = np.where(np.isfinite(dsm), dsm, np.nanmedian(dsm))
    dz_drow, dz_dcol = np.gradient(filled.astype(np.float64), resolution)
    nx, ny = -dz_dcol, dz_drow  # rows run south, so d/dnorth = -d/drow
    norm = np.sqrt(nx ** 2 + ny ** 2 + 1.0)
    return np.stack([nx / norm, ny / norm, 1.0 / norm])


def render_ortho(dsm: np.ndarray, albedo: np.ndarray, resolution: float, sun: SunPosition,
                 config: RenderConfig | None = None, seed: int = 0) -> np.ndarray:
    """Grey image (H, W) float32 in DN of the DSM lit by ``sun``; NaN where the DSM is NaN."""
    cfg = config or RenderConfig()
    az, el = math.radians(sun.azimuth_deg), math.radians(sun.elevation_deg)
    if el <= 0:
        raise ValueError(f"the sun is below the horizon (elevation {sun.elevation_deg:.1f} deg)")
    s = np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])
    normals = surface_normals(dsm, resolution)
    direct = np.clip(np.tensordot(s, normals, axes=1), 0.0, None)
    shadow = blocked_mask(dsm, resolution, sun.azimuth_deg, sun.elevation_deg)
    direct = np.where(shadow, 0.0, direct)
    rng = np.random.default_rng(seed)
    image = cfg.gain * albedo * (cfg.ambient + (1 - cfg.ambient) * direct)
    image = image + rng.normal(0.0, cfg.noise_dn, image.shape)
    image = np.round(np.clip(image, 0, cfg.max_dn)).astype(np.float32)
    return np.where(np.isfinite(dsm), image, np.nan).astype(np.float32)


def default_suns(n_images: int, latitude_deg: float = 45.0) -> list[SunPosition]:
    """Sun positions of 1–2 plausible acquisitions: late-morning summer, then autumn."""
    acquisitions = [(172, 10.8), (290, 11.5)]
    return [sun_position(d, h, latitude_deg) for d, h in acquisitions[:n_images]]
