"""Reference DSM + building mask from classified LiDAR, and the evaluation metrics."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from implicity.core.errors import InputError
from implicity.core.evaluation import Metrics, evaluate_dsm
from implicity.core.raster import GridSpec, write_geotiff
from implicity.core.reference import make_reference_dsm

from ..helpers.geodata import CRS_L93, SHARED_DATA, block_scene, write_las


def test_metrics_definitions():
    r = np.array([-2.0, -1.0, 0.0, 1.0, 6.0])
    m = Metrics.of(r)
    assert m.count == 5 and m.mae == pytest.approx(2.0) and m.bias == pytest.approx(0.8)
    assert m.rmse == pytest.approx(np.sqrt(42 / 5)) and m.medae == pytest.approx(1.0)
    # standard NMAD: 1.4826 * median(|r - median(r)|) = 1.4826 * median(2,1,0,1,6)
    assert m.nmad == pytest.approx(1.4826 * 1.0)
    assert m.min == -2.0 and m.max == 6.0 and m.median == 0.0


def test_reference_dsm_and_building_mask(tmp_path):
    xyz, cls, surface = block_scene(density=8.0)
    noise = np.array([[1005.0, 2005.0, 500.0]])
    src = write_las(tmp_path / "lidar.laz", np.vstack([xyz, noise]), np.r_[cls, 7].astype(np.uint8), crs=CRS_L93)
    grid = make_reference_dsm(src, tmp_path / "ref.tif", 1.0, building_mask_out=tmp_path / "mask.tif")
    with rasterio.open(tmp_path / "ref.tif") as a, rasterio.open(tmp_path / "mask.tif") as b:
        ref, mask = a.read(1), b.read(1)
        assert b.dtypes[0] == "uint8" and a.crs == CRS_L93
    assert ref.max() < 100  # the noise point (class 7) was dropped
    xs, ys = grid.xy_centers()
    truth_bld = surface(xs[None, :], ys[:, None]) > 15
    assert (mask.astype(bool) == truth_bld).mean() > 0.97


def test_reference_mask_needs_classes(tmp_path):
    xyz, _, _ = block_scene(density=1.0)
    src = write_las(tmp_path / "u.laz", xyz, np.ones(len(xyz), np.uint8), crs=CRS_L93)
    with pytest.raises(InputError, match="class 6"):
        make_reference_dsm(src, tmp_path / "r.tif", 1.0, building_mask_out=tmp_path / "m.tif")
    assert not (tmp_path / "r.tif").exists() and not (tmp_path / "m.tif").exists()


def _write(tmp_path, name, arr, grid):
    return write_geotiff(tmp_path / name, arr, grid)


def test_evaluate_regions_and_outputs(tmp_path):
    g = GridSpec.from_bounds(0, 0, 20, 20, 1.0, CRS_L93)
    ref = np.full(g.shape, 10.0, np.float32)
    ref[5:10, 5:10] = 30.0
    mask = np.zeros(g.shape, np.uint8)
    mask[5:10, 5:10] = 1
    dsm = ref + 0.5
    dsm[5:10, 5:10] -= 2.5  # buildings 2 m too low
    dsm[0, 0] = np.nan
    paths = [_write(tmp_path, "ref.tif", ref, g), _write(tmp_path, "dsm.tif", dsm, g)]
    write_geotiff(tmp_path / "m.tif", mask, g, nodata=None, dtype="uint8")
    rep = evaluate_dsm(paths[1], paths[0], building_mask=tmp_path / "m.tif",
                       residual_out=tmp_path / "res.tif", json_out=tmp_path / "e.json",
                       html_out=tmp_path / "e.html", building_dilation_px=0)
    assert rep.regions["overall"].count == 399
    assert rep.regions["building"].medae == pytest.approx(2.0)
    assert rep.regions["terrain"].bias == pytest.approx(0.5)
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["regions"]["building"]["count"] == 25
    assert "MEDAE" in rep.as_table() and "<table" in (tmp_path / "e.html").read_text()
    with rasterio.open(tmp_path / "res.tif") as r:
        res = r.read(1, masked=True)
    assert res.mask[0, 0] and res[1, 1] == pytest.approx(0.5)
    # dilation by 2 px moves facade pixels into the building region
    dil = evaluate_dsm(paths[1], paths[0], building_mask=tmp_path / "m.tif")
    assert dil.regions["building"].count == 81


def test_step_regions_split_a_fattened_and_a_cut_building(tmp_path):
    """A 12 m block on flat ground. A DSM fattened by 1 px errs only at the step's foot, one with the
    roof's outer ring cut down to the ground only at its top; far from the block both are exact, and
    the overall MAE alone cannot tell the two apart."""
    g = GridSpec.from_bounds(0, 0, 30, 30, 1.0, CRS_L93)
    ref = np.full(g.shape, 10.0, np.float32)
    ref[10:20, 10:20] = 22.0
    fattened, cut = ref.copy(), ref.copy()
    fattened[9:21, 9:21] = 22.0
    cut[10:20, 10:20] = 10.0
    cut[11:19, 11:19] = 22.0
    paths = {n: _write(tmp_path, f"{n}.tif", a, g) for n, a in (("ref", ref), ("fat", fattened), ("cut", cut))}
    fat = evaluate_dsm(paths["fat"], paths["ref"], with_step_regions=True).regions
    cut_ = evaluate_dsm(paths["cut"], paths["ref"], with_step_regions=True).regions
    assert fat["step top"].mae == 0 and fat["step foot"].mae > 0 and fat["step foot"].bias > 0
    assert cut_["step foot"].mae == 0 and cut_["step top"].mae > 0 and cut_["step top"].bias < 0
    assert fat["off steps"].mae == 0 == cut_["off steps"].mae
    total = fat["step top"].count + fat["step foot"].count + fat["off steps"].count
    assert total == fat["overall"].count == 900
    assert fat["step top"].count == 10 * 10 - 4 * 4      # the roof's ring within 2 px of its edge
    assert "step top" not in evaluate_dsm(paths["fat"], paths["ref"]).regions  # only when asked
    with pytest.raises(InputError, match="step_height"):
        evaluate_dsm(paths["fat"], paths["ref"], with_step_regions=True, step_height=0.0)


def test_evaluate_resamples_other_grid_and_refuses_no_overlap(tmp_path):
    g = GridSpec.from_bounds(0, 0, 20, 20, 1.0, CRS_L93)
    ref = _write(tmp_path, "ref.tif", np.full(g.shape, 10.0, np.float32), g)
    g2 = GridSpec.from_bounds(0, 0, 20, 20, 0.5, CRS_L93)
    fine = _write(tmp_path, "fine.tif", np.full(g2.shape, 11.0, np.float32), g2)
    assert evaluate_dsm(fine, ref).regions["overall"].medae == pytest.approx(1.0)
    g3 = GridSpec.from_bounds(100, 100, 120, 120, 1.0, CRS_L93)
    far = _write(tmp_path, "far.tif", np.full(g3.shape, 10.0, np.float32), g3)
    with pytest.raises(InputError, match="no valid pixels in common"):
        evaluate_dsm(far, ref)
    with pytest.raises(InputError, match="also an input"):
        evaluate_dsm(fine, ref, residual_out=ref)


@pytest.mark.skipif(not (SHARED_DATA / "delft_ahn3").exists(), reason="shared data not present")
def test_delft_reference_has_buildings(tmp_path):
    src = SHARED_DATA / "delft_ahn3" / "ahn3_cropped_2.laz"
    grid = make_reference_dsm(src, tmp_path / "ref.tif", 1.0, points_crs="EPSG:28992",
                              building_mask_out=tmp_path / "bld.tif")
    with rasterio.open(tmp_path / "ref.tif") as a, rasterio.open(tmp_path / "bld.tif") as b:
        ref, bld = a.read(1, masked=True), b.read(1)
        assert a.crs.to_epsg() == 28992
    assert 0.1 < bld.mean() < 0.9 and -2 < ref.min() and ref.max() < 40
    assert grid.width > 50 and grid.height > 50
