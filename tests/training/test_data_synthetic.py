"""Synthetic cities, renderings and line-of-sight masks (training data generators)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from implicity.training.data.render import SunPosition, render_ortho, sun_position
from implicity.training.data.synthetic_city import (
    CLASS_BUILDING,
    CityConfig,
    generate_city,
    sample_surface_points,
)
from implicity.training.data.visibility import blocked_mask

SMALL = CityConfig(size_m=96.0, resolution=1.0)


def test_same_seed_same_city_other_seed_other_city():
    a, b, c = generate_city(7, SMALL), generate_city(7, SMALL), generate_city(8, SMALL)
    for name in ("dsm", "ground", "building_mask", "forest_mask", "water_mask", "albedo"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.dsm, c.dsm)


def test_city_is_plausible():
    city = generate_city(3, CityConfig(size_m=128.0, resolution=0.5))
    assert city.dsm.shape == (256, 256) and city.dsm.dtype == np.float32
    assert city.grid.crs.to_epsg() == 32632 and city.grid.bounds[:2] == (500000.0, 5000000.0)
    assert np.all(city.dsm >= city.ground - 1e-3)  # nothing below the terrain
    heights = (city.dsm - city.ground)[city.building_mask > 0]
    assert 0.05 < city.building_mask.mean() < 0.8
    assert heights.min() >= 3.0 - 1e-3 and heights.max() <= 60.0 + 8.0  # 3-60 m + terrain slope under a roof
    assert not np.any((city.building_mask > 0) & (city.forest_mask > 0))
    dry = ~ndimage.binary_dilation(city.water_mask > 0, iterations=2)
    slope = np.abs(np.diff(city.ground, axis=1))[dry[:, 1:] & dry[:, :-1]].max() / 0.5
    assert slope < 0.2  # gentle terrain (ponds aside)


def test_dense_samples_lie_on_the_dsm():
    city = generate_city(1, SMALL)
    cloud = sample_surface_points(city, density=4.0, seed=0)
    rows, cols = city.grid.rowcol(cloud.xyz[:, 0], cloud.xyz[:, 1])
    assert np.allclose(cloud.xyz[:, 2], city.dsm[rows, cols])
    assert np.array_equal(cloud.classification == CLASS_BUILDING, city.building_mask[rows, cols] > 0)
    assert abs(len(cloud) / 96.0 ** 2 - 4.0) < 0.3


def _box(height: float = 10.0) -> np.ndarray:
    dsm = np.zeros((60, 60), np.float32)
    dsm[25:35, 25:35] = height  # rows 25..34 (north->south), cols 25..34
    return dsm


def test_shadow_falls_away_from_the_sun():
    dsm = _box()
    sun_south = blocked_mask(dsm, 1.0, azimuth_deg=180.0, elevation_deg=45.0)
    # sun in the south: shadow north of the box (smaller rows), 10 m long at 45 degrees
    assert sun_south[16:25, 27:33].all() and not sun_south[36:, :].any() and not sun_south[:14, :].any()
    sun_west = blocked_mask(dsm, 1.0, azimuth_deg=270.0, elevation_deg=45.0)
    assert sun_west[27:33, 35:44].all() and not sun_west[:, :25].any()
    assert not blocked_mask(dsm, 1.0, 180.0, 90.0).any()


def test_rendering_shades_and_shadows():
    dsm = _box()
    image = render_ortho(dsm, np.full(dsm.shape, 0.5, np.float32), 1.0, SunPosition(180.0, 45.0))
    assert image.dtype == np.float32 and image.max() <= 255
    lit, shadow = image[45:55, 27:33].mean(), image[17:23, 27:33].mean()
    assert shadow < 0.5 * lit


def test_sun_position_at_equinox_noon():
    sun = sun_position(day_of_year=80, solar_hour=12.0, latitude_deg=45.0)
    assert sun.azimuth_deg == pytest.approx(180.0, abs=1.0)
    assert sun.elevation_deg == pytest.approx(45.0, abs=1.5)
    morning = sun_position(172, 9.0, 45.0)
    assert 60 < morning.azimuth_deg < 180 and 20 < morning.elevation_deg < 60
