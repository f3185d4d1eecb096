"""Point clouds from wherever QGIS has them, extents and Resolution bounds, through ``processing.run``.

Real LiDAR (the bundled Nîmes sample, Lambert-93): an EPT point-cloud layer (what Debian's QGIS 3.22
opens), COPC and LAZ files (what QGIS with PDAL opens as layers), a partial extent, and Resolution
values a user may type (issue 13, items 1 and 2).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qgis.core", reason="PyQGIS (Debian's python3-qgis) is not importable")
rasterio = pytest.importorskip("rasterio")

from qgis.core import QgsPointCloudLayer, QgsProcessingException, QgsProcessingParameterNumber

from ..helpers.geodata import crop_las

pytestmark = pytest.mark.qgis
REPO = Path(__file__).resolve().parents[2]
NIMES = REPO / "data" / "nimes_lidarhd" / "subsampled_nimes.laz"
#: 160 × 120 m of the Nîmes cloud (the Arènes and the streets around them), Lambert-93 metres.
CROP = (809300.0, 6304880.0, 809460.0, 6305000.0)


def _run(name: str, params: dict, feedback=None) -> dict:
    import processing

    return processing.run(f"implicity:{name}", params, feedback=feedback)


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(1, masked=True), ds.crs, ds.bounds


@pytest.fixture(scope="module")
def nimes_crop(tmp_path_factory) -> Path:
    """Real LiDAR HD, no CRS in the header (as published)."""
    return crop_las(NIMES, tmp_path_factory.mktemp("nimes") / "nimes_crop.laz", CROP)


@pytest.fixture(scope="module")
def nimes_ept(nimes_crop, tmp_path_factory) -> Path:
    """The crop as an EPT dataset of several nodes, CRS in its ept.json (as Entwine writes it)."""
    from implicity.core.pointsources import write_ept

    return write_ept(nimes_crop, tmp_path_factory.mktemp("ept") / "nimes_crop", crs="EPSG:2154", node_capacity=20_000)


@pytest.fixture(scope="module")
def nimes_copc(nimes_crop, tmp_path_factory) -> Path:
    from rasterio.crs import CRS

    from ..helpers.copc_writer import write_copc

    return write_copc(nimes_crop, tmp_path_factory.mktemp("copc") / "nimes_crop.copc.laz",
                      CRS.from_epsg(2154).to_wkt(), root_points=10_000)


@pytest.fixture(scope="module")
def reference_dsm(implicity_provider, nimes_crop, tmp_path_factory):
    """Baseline DSM of the LAZ file (EPSG:2154 given by hand): what every other route must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "from_laz.tif"
    return _run("baselinedsm", {"POINTS_FILE": str(nimes_crop), "POINTS_CRS": "EPSG:2154", "RESOLUTION": 1.0,
                                "OUTPUT": str(out)})["OUTPUT"]


def test_ept_layer_is_valid_in_qgis_and_gives_the_same_dsm_as_its_file(implicity_provider, qgis_new_project,
                                                                         nimes_ept, reference_dsm, tmp_path,
                                                                         feedback_log):
    layer = QgsPointCloudLayer(str(nimes_ept), "nimes_crop", "ept")
    assert layer.isValid() and layer.crs().authid() == "EPSG:2154"  # Debian's QGIS opens our EPT
    qgis_new_project.addMapLayer(layer)
    log = feedback_log
    out = _run("baselinedsm", {"POINTS": layer.id(), "RESOLUTION": 1.0, "OUTPUT": str(tmp_path / "ept.tif")}, log)
    dsm, crs, bounds = _read(out["OUTPUT"])
    ref, _, ref_bounds = _read(reference_dsm)
    assert crs.to_epsg() == 2154 and bounds == ref_bounds  # CRS taken from the layer: no parameter needed
    assert np.ma.allclose(dsm, ref) and dsm.count() == ref.count()
    assert f"Point cloud: {nimes_ept}" in log.text and "EPSG:2154" in log.text


def test_copc_file_gives_the_same_dsm_as_the_laz(implicity_provider, nimes_copc, reference_dsm, tmp_path):
    out = _run("baselinedsm", {"POINTS_FILE": str(nimes_copc), "RESOLUTION": 1.0, "OUTPUT": str(tmp_path / "c.tif")})
    dsm, crs, bounds = _read(out["OUTPUT"])
    ref, _, ref_bounds = _read(reference_dsm)
    assert crs.to_epsg() == 2154 and bounds == ref_bounds and np.ma.allclose(dsm, ref)


def test_valid_ept_layer_goes_into_the_layer_parameter_of_the_right_click_dialog(qgis_new_project, nimes_ept):
    from implicity.implicity_qgis.context_menu import prefilled_parameters

    layer = QgsPointCloudLayer(str(nimes_ept), "nimes_crop", "ept")
    qgis_new_project.addMapLayer(layer)
    for algorithm in ("reconstructdsm", "baselinedsm", "referencedsm"):
        assert prefilled_parameters(algorithm, layer) == {"POINTS": layer.id()}


@pytest.mark.parametrize("provider", ["pdal", "copc", "ept"])
def test_a_point_cloud_layer_is_read_from_the_file_behind_it(nimes_copc, nimes_ept, provider):
    """QGIS ≥ 3.26 with PDAL opens LAS/LAZ ('pdal') and COPC ('copc') as layers whose source is the file."""
    from implicity.implicity_qgis.algorithms.common import base_name, source_path

    path = {"pdal": nimes_copc.with_name("x.laz"), "copc": nimes_copc, "ept": nimes_ept}[provider]
    layer = QgsPointCloudLayer(str(path), "cloud", provider)
    assert source_path(layer) == str(path)
    assert base_name(str(path)) == {"pdal": "x", "copc": "nimes_crop", "ept": "nimes_crop"}[provider]


def test_extent_reads_only_the_points_in_and_around_it(implicity_provider, nimes_ept, reference_dsm, tmp_path,
                                                       feedback_log):
    log = feedback_log
    extent = "809340,809400,6304900,6304960 [EPSG:2154]"
    out = _run("baselinedsm", {"POINTS_FILE": str(nimes_ept), "RESOLUTION": 1.0, "EXTENT": extent,
                               "OUTPUT": str(tmp_path / "part.tif")}, log)
    dsm, _, bounds = _read(out["OUTPUT"])
    assert (bounds.left, bounds.bottom, bounds.right, bounds.top) == pytest.approx((809340, 6304900, 809400, 6304960))
    line = next(s for s in log.lines if s.startswith("Point cloud:"))
    read = int(line.split("(")[1].split(" points")[0].replace(",", ""))
    with rasterio.open(reference_dsm) as full:
        window = full.read(1, masked=True, window=full.window(809340, 6304900, 809400, 6304960))
    assert "in and around the extent" in line and read < 0.5 * 67_000  # a 60 m square of a 160 x 120 m crop
    same = np.ma.filled(np.abs(dsm - window) < 1e-3, False)
    assert same.mean() > 0.99  # the whole file's heights there (holes at the border are filled from inside only)


@pytest.mark.parametrize("value", [0, -1, 0.001, 5000])
def test_resolution_out_of_bounds_is_refused_with_a_clear_message(implicity_provider, nimes_crop, tmp_path, value):
    with pytest.raises(QgsProcessingException, match="'Resolution' must be between 0.05 and 1000"):
        _run("baselinedsm", {"POINTS_FILE": str(nimes_crop), "POINTS_CRS": "EPSG:2154", "RESOLUTION": value,
                             "OUTPUT": str(tmp_path / "o.tif")})
    assert not (tmp_path / "o.tif").exists()


def test_resolution_parameter_has_bounds_the_dialog_enforces(implicity_provider):
    for name in ("reconstructdsm", "baselinedsm", "referencedsm"):
        alg = implicity_provider.algorithm(name)
        param = alg.parameterDefinition("RESOLUTION")
        assert isinstance(param, QgsProcessingParameterNumber)
        assert param.minimum() == 0.05 and param.maximum() == 1000.0  # the spin box cannot go to 0
        assert "0.05 to 1000" in alg.shortHelpString()


def test_an_output_too_large_for_memory_is_refused_before_reading(implicity_provider, nimes_crop, tmp_path):
    """10 km around the crop at 0.05 m would be ~43 billion pixels: a message, not a MemoryError."""
    start = time.monotonic()
    extent = "804300,814460,6299880,6310000 [EPSG:2154]"
    with pytest.raises(QgsProcessingException, match="million pixels.*Choose a resolution of at least"):
        _run("baselinedsm", {"POINTS_FILE": str(nimes_crop), "POINTS_CRS": "EPSG:2154", "RESOLUTION": 0.05,
                             "EXTENT": extent, "OUTPUT": str(tmp_path / "o.tif")})
    assert time.monotonic() - start < 10 and not (tmp_path / "o.tif").exists()


def test_remote_and_unsupported_sources_are_explained(implicity_provider, tmp_path):
    bad = tmp_path / "cloud.vpc"
    bad.write_text("{}")
    with pytest.raises(QgsProcessingException, match="virtual point clouds"):
        _run("baselinedsm", {"POINTS_FILE": str(bad), "RESOLUTION": 1.0, "OUTPUT": str(tmp_path / "o.tif")})
