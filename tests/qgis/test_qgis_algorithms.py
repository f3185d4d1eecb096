"""Baseline, Reference and Evaluate through ``processing.run`` on real AHN3 LiDAR (Delft, EPSG:28992)."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("qgis.core", reason="PyQGIS (Debian's python3-qgis) is not importable")
rasterio = pytest.importorskip("rasterio")

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException

from ..helpers.geodata import DELFT_CROP

pytestmark = pytest.mark.qgis
RES = 1.0
CRS = "EPSG:28992"


def _run(name: str, params: dict) -> dict:
    import processing

    return processing.run(f"implicity:{name}", params)


@pytest.fixture(scope="module")
def delft_outputs(implicity_provider, delft_crop_laz, tmp_path_factory):
    """Reference DSM + mask and baseline DSM of the Delft crop (shared by the tests of this module)."""
    out = tmp_path_factory.mktemp("alg")
    ref = _run("referencedsm", {"POINTS_FILE": str(delft_crop_laz), "POINTS_CRS": CRS, "RESOLUTION": RES,
                                "OUTPUT": str(out / "ref.tif"), "BUILDING_MASK": str(out / "mask.tif")})
    base = _run("baselinedsm", {"POINTS_FILE": str(delft_crop_laz), "POINTS_CRS": CRS, "RESOLUTION": RES,
                                "STATISTIC": 0, "OUTPUT": str(out / "base.tif")})
    return {"ref": ref["OUTPUT"], "mask": ref["BUILDING_MASK"], "base": base["OUTPUT"], "dir": out}


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(1, masked=True), ds.crs, ds.bounds, ds.res


def test_provider_lists_the_four_algorithms_with_help(implicity_provider):
    algs = {a.name(): a for a in implicity_provider.algorithms()}
    assert set(algs) == {"reconstructdsm", "baselinedsm", "referencedsm", "evaluatedsm"}
    for alg in algs.values():
        assert alg.flags() & QgsProcessingAlgorithm.FlagSupportsBatch and alg.flags() & QgsProcessingAlgorithm.FlagCanCancel
        help_text = alg.shortHelpString()
        for param in alg.parameterDefinitions():  # every parameter is explained in the help
            label = param.description().split(" (")[0]
            assert label in help_text, (alg.name(), label)


def test_reference_dsm_has_crs_extent_and_plausible_heights(delft_outputs):
    dsm, crs, bounds, res = _read(delft_outputs["ref"])
    assert crs.to_epsg() == 28992 and res == (RES, RES)
    xmin, ymin, xmax, ymax = DELFT_CROP
    assert xmin - RES <= bounds.left and bounds.right <= xmax + RES
    assert ymin - RES <= bounds.bottom and bounds.top <= ymax + RES
    assert dsm.count() > 0.8 * dsm.size  # small gaps filled (the crop has a canal: water stays empty)
    assert -2.0 < dsm.min() and dsm.max() < 30.0 and dsm.max() - dsm.min() > 5.0  # streets to roofs (NAP)
    mask, mcrs, mbounds, _ = _read(delft_outputs["mask"])
    assert mcrs == crs and mbounds == bounds and 0.05 < float(np.mean(mask)) < 0.95  # buildings and streets


def test_baseline_dsm_is_close_to_reference_on_the_same_lidar(delft_outputs):
    base, crs, bounds, _ = _read(delft_outputs["base"])
    ref, _, rbounds, _ = _read(delft_outputs["ref"])
    assert crs.to_epsg() == 28992 and bounds == rbounds
    diff = np.abs(base - ref).compressed()
    assert diff.size > 0.8 * base.size
    assert np.median(diff) < 0.01  # both take the highest point per pixel; they differ in hole filling


def test_evaluate_writes_residual_html_json_and_logs_table(delft_outputs):
    out = delft_outputs["dir"]
    res = _run("evaluatedsm", {"DSM": delft_outputs["base"], "REFERENCE": delft_outputs["ref"],
                               "BUILDING_MASK": delft_outputs["mask"], "RESIDUAL": str(out / "res.tif"),
                               "OUTPUT_HTML": str(out / "eval.html"), "OUTPUT_JSON": str(out / "eval.json")})
    residual, crs, _, _ = _read(res["RESIDUAL"])
    assert crs.to_epsg() == 28992 and residual.count() > 0
    metrics = json.loads((out / "eval.json").read_text())
    assert set(metrics["regions"]) == {"overall", "building", "terrain"}
    overall = metrics["regions"]["overall"]
    assert res["OVERALL_COUNT"] == overall["count"] == residual.count()
    assert res["OVERALL_RMSE"] == pytest.approx(float(np.sqrt(np.mean(residual.compressed().astype(float) ** 2))), rel=1e-4)
    assert "<table" in (out / "eval.html").read_text() and "NMAD" in (out / "eval.html").read_text()


def test_evaluate_can_coregister_first_and_returns_the_shift(delft_outputs, feedback_log):
    import processing

    out = delft_outputs["dir"]
    plain = _run("evaluatedsm", {"DSM": delft_outputs["base"], "REFERENCE": delft_outputs["ref"],
                                 "RESIDUAL": str(out / "res_plain.tif")})
    assert plain["SHIFT_DX"] is None and plain["SHIFT_DZ"] is None
    res = processing.run("implicity:evaluatedsm", {
        "DSM": delft_outputs["base"], "REFERENCE": delft_outputs["ref"], "COREGISTER": True, "MAX_SHIFT": 1.0,
        "RESIDUAL": str(out / "res_coreg.tif"), "OUTPUT_JSON": str(out / "coreg.json")}, feedback=feedback_log)
    shift = json.loads((out / "coreg.json").read_text())["coregistration"]
    assert (res["SHIFT_DX"], res["SHIFT_DY"], res["SHIFT_DZ"]) == (shift["dx"], shift["dy"], shift["dz"])
    assert np.hypot(shift["dx"], shift["dy"]) <= 1.0 + 1e-9
    assert res["OVERALL_MAE"] <= plain["OVERALL_MAE"] + 1e-6  # the shift is chosen to lower the L1 misfit
    assert "Co-registered" in "\n".join(feedback_log.lines)


def test_evaluate_can_split_by_height_steps(delft_outputs):
    out = delft_outputs["dir"]
    _run("evaluatedsm", {"DSM": delft_outputs["base"], "REFERENCE": delft_outputs["ref"], "STEP_REGIONS": True,
                         "STEP_HEIGHT": 2.0, "RESIDUAL": str(out / "res_steps.tif"),
                         "OUTPUT_JSON": str(out / "steps.json")})
    regions = json.loads((out / "steps.json").read_text())["regions"]
    assert set(regions) == {"overall", "step top", "step foot", "off steps"}
    assert sum(regions[r]["count"] for r in ("step top", "step foot", "off steps")) == regions["overall"]["count"]
    assert min(regions[r]["count"] for r in ("step top", "step foot", "off steps")) > 0  # Delft has buildings


def test_evaluate_pushes_the_metrics_table_to_the_log(delft_outputs, feedback_log):
    import processing

    log = feedback_log
    processing.run("implicity:evaluatedsm", {"DSM": delft_outputs["base"], "REFERENCE": delft_outputs["ref"],
                                             "RESIDUAL": "TEMPORARY_OUTPUT"}, feedback=log)
    text = "\n".join(log.lines)
    assert "RMSE" in text and "NMAD" in text and "overall" in text


def test_batch_of_two_inputs_gives_two_auto_named_outputs(implicity_provider, delft_crop_laz, tmp_path):
    """What the batch dialog does: the same algorithm over several rows, outputs auto-named."""
    from ..helpers.geodata import DELFT_LAZ, crop_las

    second = crop_las(DELFT_LAZ, tmp_path / "second.laz", (85008.0, 447420.0, 85040.0, 447452.0), keep_every=2)
    outputs = [_run("baselinedsm", {"POINTS_FILE": str(p), "POINTS_CRS": CRS, "RESOLUTION": 2.0,
                                    "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"] for p in (delft_crop_laz, second)]
    assert len(set(outputs)) == 2
    (a, _, ba, _), (b, _, bb, _) = _read(outputs[0]), _read(outputs[1])
    # grids snap to the points' extent at 2 m: 64 m and 32 m crops give about 32 and 16 pixels
    assert abs(a.shape[0] - 32) <= 1 and abs(b.shape[1] - 16) <= 1 and ba != bb


@pytest.mark.parametrize("params, message", [
    ({}, "No point cloud"),
    ({"POINTS_CRS": None}, "no coordinate reference system"),
    ({"EXTENT": "90000,90100,450000,450100 [EPSG:28992]"}, "does not overlap"),
    ({"RESOLUTION": 1.0, "OUTPUT": "/nonexistent_folder_xyz/out.tif"}, "does not exist"),
])
def test_bad_inputs_are_explained(implicity_provider, delft_crop_laz, tmp_path, params, message):
    base = {"POINTS_FILE": str(delft_crop_laz), "POINTS_CRS": CRS, "RESOLUTION": RES, "OUTPUT": str(tmp_path / "o.tif")}
    if not params:
        base.pop("POINTS_FILE")
    base.update(params)
    base = {k: v for k, v in base.items() if v is not None}
    with pytest.raises(QgsProcessingException, match=message) as info:
        _run("baselinedsm", base)
    assert "--" not in str(info.value)  # CLI option names are replaced by parameter labels
    assert not (tmp_path / "o.tif").exists()


def test_missing_crs_names_the_crs_parameter(implicity_provider, delft_crop_laz, tmp_path):
    with pytest.raises(QgsProcessingException, match="'Point cloud CRS' parameter"):
        _run("referencedsm", {"POINTS_FILE": str(delft_crop_laz), "RESOLUTION": RES, "OUTPUT": str(tmp_path / "r.tif")})


def test_corrupt_point_cloud_file_is_explained(implicity_provider, tmp_path):
    bad = tmp_path / "cloud.laz"
    bad.write_bytes(b"not a point cloud")
    with pytest.raises(QgsProcessingException, match="cannot read this LAZ file"):
        _run("baselinedsm", {"POINTS_FILE": str(bad), "RESOLUTION": RES, "OUTPUT": str(tmp_path / "o.tif")})


def test_evaluate_refuses_rasters_that_do_not_overlap(delft_outputs, tmp_path):
    from implicity.core.raster import GridSpec, write_geotiff

    far = tmp_path / "far.tif"
    grid = GridSpec.from_bounds(90000, 450000, 90020, 450020, 1.0, rasterio.crs.CRS.from_epsg(28992))
    write_geotiff(far, np.full((grid.height, grid.width), 5.0, np.float32), grid)
    with pytest.raises(QgsProcessingException, match="no valid pixels in common"):
        _run("evaluatedsm", {"DSM": str(far), "REFERENCE": delft_outputs["ref"], "RESIDUAL": str(tmp_path / "r.tif")})


def test_evaluate_refuses_the_same_raster_as_dsm_and_reference(delft_outputs, qgis_new_project, tmp_path):
    """Both combo boxes on one raster (what the right-click route used to give): all metrics would be 0."""
    from qgis.core import QgsProcessingContext, QgsRasterLayer

    first = QgsRasterLayer(delft_outputs["base"], "delft_crop — baseline DSM (max)")
    second = QgsRasterLayer(delft_outputs["base"], "the same file again")
    qgis_new_project.addMapLayers([first, second])
    alg = _registered("evaluatedsm")
    context = QgsProcessingContext()
    context.setProject(qgis_new_project)
    for dsm, ref in ((first, first), (first, second)):
        params = {"DSM": dsm.id(), "REFERENCE": ref.id(), "RESIDUAL": str(tmp_path / "r.tif")}
        ok, message = alg.checkParameterValues(params, context)  # the dialog's Run button
        assert not ok and "'DSM' and 'Reference DSM' are the same raster" in message
        with pytest.raises(QgsProcessingException, match="same raster .*different, independent reference"):
            _run("evaluatedsm", params)
    assert not (tmp_path / "r.tif").exists()
    ok, _ = alg.checkParameterValues({"DSM": delft_outputs["base"], "REFERENCE": delft_outputs["ref"],
                                      "RESIDUAL": str(tmp_path / "r.tif")}, context)
    assert ok


def _registered(name: str):
    """The registered algorithm, as the dialog uses it."""
    from qgis.core import QgsApplication

    return QgsApplication.processingRegistry().algorithmById(f"implicity:{name}")
