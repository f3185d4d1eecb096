"""Baseline gridding, outlier removal, hole filling and the banded streaming job."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio

from implicity.core.baseline import make_baseline_dsm
from implicity.core.errors import CancelledError, InputError
from implicity.core.gridding import GriddingOptions, fill_holes, grid_points, rasterize_to_file, remove_outliers
from implicity.core.pointcloud import PointCloud
from implicity.core.raster import GridSpec

from ..helpers.geodata import CRS_L93, block_scene, write_las


def test_statistics_per_cell():
    g = GridSpec.from_bounds(0, 0, 2, 1, 1.0, CRS_L93)
    xyz = np.array([[0.5, 0.5, 1.0], [0.5, 0.5, 5.0], [0.5, 0.5, 3.0], [0.2, 0.9, 10.0], [1.5, 0.5, 7.0]])
    assert grid_points(xyz, g, "max").tolist() == [[10.0, 7.0]]
    assert grid_points(xyz, g, "min").tolist() == [[1.0, 7.0]]
    assert grid_points(xyz, g, "mean").tolist() == [[4.75, 7.0]]
    assert grid_points(xyz, g, "median").tolist() == [[4.0, 7.0]]
    empty = grid_points(xyz[:1], g, "max")
    assert empty[0, 0] == 1.0 and np.isnan(empty[0, 1])


def test_grid_matches_bruteforce_on_random_points():
    rng = np.random.default_rng(1)
    g = GridSpec.from_bounds(0, 0, 10, 10, 1.0, CRS_L93)
    xyz = np.column_stack([rng.uniform(0, 10, (500, 2)), rng.normal(0, 1, 500)])
    got = grid_points(xyz, g, "median")
    rows, cols = g.rowcol(xyz[:, 0], xyz[:, 1])
    for r, c in [(0, 0), (3, 7), (9, 9)]:
        sel = (rows == r) & (cols == c)
        assert got[r, c] == pytest.approx(np.median(xyz[sel, 2]))


def test_outliers_become_holes_then_filled():
    dsm = np.full((20, 20), 5.0, dtype=np.float32)
    dsm[10, 10] = 60.0
    cleaned = remove_outliers(dsm, threshold=3.0)
    assert np.isnan(cleaned[10, 10]) and np.isfinite(np.delete(cleaned.ravel(), 210)).all()
    assert fill_holes(cleaned, "idw", 3)[10, 10] == pytest.approx(5.0)


@pytest.mark.parametrize("method", ["idw", "nearest"])
def test_fill_respects_max_distance(method):
    dsm = np.full((40, 40), np.nan, dtype=np.float32)
    dsm[:, :10] = 1.0
    filled = fill_holes(dsm, method, max_distance_px=5)
    assert np.isfinite(filled[:, :15]).all() and np.isnan(filled[:, 16:]).all()
    assert np.allclose(filled[:, 10:15], 1.0)


def test_banded_streaming_equals_whole_raster(tmp_path):
    xyz, _, _ = block_scene(density=1.0)
    xyz = xyz[np.random.default_rng(3).random(len(xyz)) < 0.6]
    g = GridSpec.from_bounds(1000, 2000, 1040, 2040, 0.5, CRS_L93)
    whole = fill_holes(grid_points(xyz, g, "max"), "idw", 4)
    rasterize_to_file(xyz, g, tmp_path / "b.tif",
                      GriddingOptions(fill="idw", fill_max_distance=2.0, band_rows=7))
    with rasterio.open(tmp_path / "b.tif") as src:
        banded = src.read(1, masked=True).filled(np.nan)
    np.testing.assert_allclose(banded, whole, atol=1e-5, equal_nan=True)


def test_baseline_job_recovers_block_scene(tmp_path):
    xyz, cls, surface = block_scene(density=8.0)
    src = write_las(tmp_path / "scene.laz", xyz, cls, crs=CRS_L93)
    grid = make_baseline_dsm(src, tmp_path / "dsm.tif", 1.0)
    with rasterio.open(tmp_path / "dsm.tif") as ds:
        dsm = ds.read(1)
        assert ds.crs == CRS_L93
    xs, ys = grid.xy_centers()
    truth = surface(xs[None, :], ys[:, None])
    assert np.median(np.abs(dsm - truth)) < 1e-3


def test_baseline_bad_input(tmp_path):
    xyz, cls, _ = block_scene(density=1.0)
    src = write_las(tmp_path / "scene.laz", xyz, cls)
    with pytest.raises(InputError, match="no coordinate reference system"):
        make_baseline_dsm(src, tmp_path / "o.tif", 1.0)
    with pytest.raises(InputError, match="positive"):
        make_baseline_dsm(src, tmp_path / "o.tif", -1.0, points_crs="EPSG:2154")
    with pytest.raises(InputError, match="also an input"):
        make_baseline_dsm(src, src, 1.0, points_crs="EPSG:2154")
    with pytest.raises(InputError, match="does not overlap"):
        make_baseline_dsm(src, tmp_path / "o.tif", 1.0, points_crs="EPSG:2154", extent="0,0,10,10")
    assert not (tmp_path / "o.tif").exists()


def test_cancel_leaves_no_file(tmp_path):
    xyz, _, _ = block_scene(density=1.0)
    cloud = PointCloud(xyz=xyz, crs=CRS_L93)
    calls = []

    def cancel_after_first() -> bool:
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(CancelledError):
        rasterize_to_file(cloud.xyz, GridSpec.from_bounds(1000, 2000, 1040, 2040, 0.5, CRS_L93),
                          tmp_path / "c.tif", GriddingOptions(band_rows=10), is_cancelled=cancel_after_first)
    assert list(tmp_path.iterdir()) == []
