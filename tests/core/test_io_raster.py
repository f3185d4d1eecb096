"""Grids, reading rasters onto grids, atomic COG writing."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS

from implicity.core.errors import InputError
from implicity.core.raster import GeoTiffStreamWriter, GridSpec, grid_of, read_raster_on_grid, write_geotiff

from ..helpers.geodata import CRS_L93


def test_grid_snaps_and_covers_bounds():
    g = GridSpec.from_bounds(100.3, 200.2, 110.1, 205.0, 0.5, CRS_L93)
    xmin, ymin, xmax, ymax = g.bounds
    assert xmin == 100.0 and ymax == 205.0 and xmax >= 110.1 and ymin <= 200.2
    rows, cols = g.rowcol(np.array([100.01]), np.array([204.99]))
    assert rows[0] == 0 and cols[0] == 0
    with pytest.raises(InputError, match="positive"):
        GridSpec.from_bounds(0, 0, 1, 1, 0.0, CRS_L93)


def test_write_is_cog_with_crs_nodata_overviews(tmp_path):
    g = GridSpec.from_bounds(0, 0, 512, 512, 1.0, CRS_L93)
    data = np.random.default_rng(0).random(g.shape).astype(np.float32)
    data[0, 0] = np.nan
    out = write_geotiff(tmp_path / "a.tif", data, g)
    with rasterio.open(out) as src:
        assert src.crs == CRS_L93 and src.nodata == -9999.0
        assert src.overviews(1) and src.profile["tiled"]
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        band = src.read(1, masked=True)
    assert band.mask[0, 0] and np.allclose(band[1:, 1:], data[1:, 1:])
    assert [p.name for p in tmp_path.iterdir()] == ["a.tif"]


def test_stream_writer_leaves_nothing_on_error_and_keeps_old_file(tmp_path):
    g = GridSpec.from_bounds(0, 0, 64, 64, 1.0, CRS_L93)
    target = tmp_path / "out.tif"
    target.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        with GeoTiffStreamWriter(target, g) as w:
            w.write(np.ones((10, 10)), 0, 0)
            raise RuntimeError("cancelled mid-way")
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]


def test_stream_writer_unwritten_areas_are_nodata(tmp_path):
    g = GridSpec.from_bounds(0, 0, 600, 600, 1.0, CRS_L93)
    with GeoTiffStreamWriter(tmp_path / "s.tif", g) as w:
        w.write(np.full((10, 700), 5.0), -5, -50)  # clipped to the grid
    with rasterio.open(tmp_path / "s.tif") as src:
        band = src.read(1, masked=True)
    assert band[:5].min() == 5.0 and band.mask[5:].all()


def test_read_on_grid_reprojects_and_resamples(tmp_path):
    src_grid = GridSpec.from_bounds(809000, 6304000, 809100, 6304100, 1.0, CRS_L93)
    xs, ys = src_grid.xy_centers()
    ramp = np.broadcast_to(xs[None, :] - 809000, src_grid.shape).astype(np.float32)
    write_geotiff(tmp_path / "ramp.tif", ramp, src_grid)
    # same CRS, finer grid inside: values follow the ramp
    fine = GridSpec.from_bounds(809020, 6304020, 809030, 6304030, 0.25, CRS_L93)
    got = read_raster_on_grid(tmp_path / "ramp.tif", fine)[0]
    fx, _ = fine.xy_centers()
    np.testing.assert_allclose(got[5], fx - 809000, atol=0.51)
    # other CRS (WGS84): reprojected, not mixed
    wgs = CRS.from_epsg(4326)
    from rasterio.warp import transform_bounds

    b = transform_bounds(CRS_L93, wgs, 809040, 6304040, 809060, 6304060)
    g_wgs = GridSpec.from_bounds(*b, resolution=(b[2] - b[0]) / 20, crs=wgs, snap=False)
    got = read_raster_on_grid(tmp_path / "ramp.tif", g_wgs)[0]
    assert 35 < np.nanmean(got) < 65
    # outside the raster: all NaN
    far = GridSpec.from_bounds(0, 0, 10, 10, 1.0, CRS_L93)
    assert np.isnan(read_raster_on_grid(tmp_path / "ramp.tif", far)).all()


def test_multiband_integer_nodata(tmp_path):
    g = GridSpec.from_bounds(0, 0, 8, 8, 1.0, CRS_L93)
    data = np.arange(3 * 64, dtype=np.uint16).reshape(3, 8, 8)
    write_geotiff(tmp_path / "rgb.tif", data, g, nodata=0, dtype="uint16")
    got = read_raster_on_grid(tmp_path / "rgb.tif", g, resampling="nearest")
    assert got.shape == (3, 8, 8) and np.isnan(got[0, 0, 0]) and got[2, 7, 7] == data[2, 7, 7]


def test_bad_rasters(tmp_path):
    with pytest.raises(InputError, match="not found"):
        grid_of(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="cannot open"):
        grid_of(tmp_path / "junk.tif")
