"""Reconstruct DSM (ImpliCity) through ``processing.run`` on real Delft LiDAR with a stand-in network.

The network is replaced by an analytic occupancy model (occupied below the nearest input point's
height) so the test checks the algorithm's plumbing — parameters, orthos, CRSs, progress, cancel,
messages — in seconds; the engine's own tests cover the search and the real network.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("qgis.core", reason="PyQGIS (Debian's python3-qgis) is not importable")
torch = pytest.importorskip("torch")
rasterio = pytest.importorskip("rasterio")

from qgis.core import QgsProcessingException, QgsProcessingFeedback
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from scipy.spatial import cKDTree

from ..helpers.geodata import DELFT_CROP

pytestmark = pytest.mark.qgis
RD = CRS.from_epsg(28992)


class NearestHeightModel(torch.nn.Module):
    """Occupancy logit = 4 · (height of the nearest window point − query height), in metres."""

    def __init__(self, n_images: int = 0):
        super().__init__()
        self.n_images = n_images
        self.config = SimpleNamespace(patch_size=64, image_size=32, z_std=30.0)
        self.images_seen = 0

    def normalize_image(self, img: np.ndarray) -> np.ndarray:
        return img / 255.0

    def encode(self, points, images):
        if images is not None:
            assert images.shape[1] == self.n_images
            self.images_seen += 1
        pts = points[0].numpy()
        return pts, cKDTree(pts[:, :2])

    def decode(self, query, features):
        pts, tree = features
        q = query[0].numpy()
        _, i = tree.query(q[:, :2])
        return torch.from_numpy((4.0 * 30.0 * (pts[i, 2] - q[:, 2])).astype(np.float32))[None]


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    """A checkpoint path whose loading yields the analytic model (n_images set per test)."""
    from implicity.core.reconstruct import engine

    holder = SimpleNamespace(model=NearestHeightModel(0), path=tmp_path / "standin.pt")
    holder.path.write_bytes(b"analytic stand-in")
    monkeypatch.setattr(engine, "load_occupancy_model", lambda model, device: (holder.model, "stand-in"))
    return holder


def _ortho(path, crs=RD, bounds=DELFT_CROP, pixel=0.5):
    """A grey ortho-image covering ``bounds`` (given in EPSG:28992) written in ``crs``."""
    from implicity.core.raster import GridSpec, write_geotiff

    xmin, ymin, xmax, ymax = transform_bounds(RD, crs, *bounds) if crs != RD else bounds
    if crs != RD:
        pixel = (xmax - xmin) / 128
    grid = GridSpec.from_bounds(xmin, ymin, xmax, ymax, pixel, crs)
    data = (np.indices((grid.height, grid.width)).sum(0) % 255).astype(np.float32)[None]
    write_geotiff(path, data, grid)
    return str(path)


def _params(cloud, out, **extra):
    return {"POINTS_FILE": str(cloud), "POINTS_CRS": "EPSG:28992", "RESOLUTION": 1.0, "OUTPUT": str(out),
            "DEVICE": 1, **extra}


def _run(params, feedback=None):
    import processing

    return processing.run("implicity:reconstructdsm", params, feedback=feedback)


class Recorder(QgsProcessingFeedback):
    """Keeps the log and progress; optionally cancels once the reconstruction has started."""

    def __init__(self, cancel_at: float | None = None):
        super().__init__()
        self.info, self.progress, self.cancel_at = [], [], cancel_at

    def pushInfo(self, info):
        self.info.append(info)

    def setProgress(self, value):
        self.progress.append(value)
        if self.cancel_at is not None and value > self.cancel_at:
            self.cancel()
        super().setProgress(value)


def test_reconstruct_writes_dsm_and_confidence_on_the_cloud_grid(implicity_provider, delft_crop_laz, stand_in, tmp_path):
    import processing

    base = processing.run("implicity:baselinedsm", {"POINTS_FILE": str(delft_crop_laz), "POINTS_CRS": "EPSG:28992",
                                                    "RESOLUTION": 1.0, "OUTPUT": str(tmp_path / "base.tif")})["OUTPUT"]
    log = Recorder()
    res = _run(_params(delft_crop_laz, tmp_path / "dsm.tif", MODEL=str(stand_in.path),
                       CONFIDENCE=str(tmp_path / "conf.tif")), log)
    with rasterio.open(res["OUTPUT"]) as ds, rasterio.open(base) as b, rasterio.open(res["CONFIDENCE"]) as c:
        assert ds.crs.to_epsg() == 28992 and ds.bounds == b.bounds and ds.res == (1.0, 1.0)
        dsm, ref, conf = ds.read(1, masked=True), b.read(1, masked=True), c.read(1, masked=True)
    assert dsm.count() > 0.9 * dsm.size  # the engine leaves pixels far from every point (the canal) empty
    assert np.ma.median(np.abs(dsm - ref)) < 0.3  # nearest point height vs highest point per pixel
    assert 0.0 <= conf.min() and conf.max() <= 1.0 and conf.mean() > 0.5
    text = "\n".join(log.info)
    assert "Device: cpu" in text and "windows" in text and "stand-in" not in text
    assert log.progress == sorted(log.progress) and log.progress[-1] == pytest.approx(100.0)


def test_one_ortho_in_another_crs_is_reprojected_with_a_note(implicity_provider, delft_crop_laz, stand_in, tmp_path):
    stand_in.model = NearestHeightModel(1)
    ortho = _ortho(tmp_path / "ortho_wgs84.tif", crs=CRS.from_epsg(4326))
    log = Recorder()
    res = _run(_params(delft_crop_laz, tmp_path / "dsm.tif", MODEL=str(stand_in.path), ORTHOS=[ortho],
                       EXTENT="85010,85040,447510,447540 [EPSG:28992]", RESOLUTION=2.0), log)
    with rasterio.open(res["OUTPUT"]) as ds:
        assert ds.width == 15 and ds.height == 15 and ds.bounds.left == pytest.approx(85010.0)
    assert stand_in.model.images_seen > 0
    assert any("reprojected on the fly" in line and "EPSG:4326" in line for line in log.info)


@pytest.mark.parametrize("n_orthos, n_images, message", [
    (3, 2, "ImpliCity uses 0 \\(ImpliCity-0\\), 1 \\(mono\\) or 2 \\(stereo\\)"),
    (1, 0, "'Ortho-images': 1 ortho-image\\(s\\) given, but the model stand-in is ImpliCity-0"),
    (0, 2, "needs exactly 2"),
])
def test_wrong_ortho_count_is_explained(implicity_provider, delft_crop_laz, stand_in, tmp_path, n_orthos, n_images, message):
    stand_in.model = NearestHeightModel(n_images)
    orthos = [_ortho(tmp_path / f"o{i}.tif") for i in range(n_orthos)]
    with pytest.raises(QgsProcessingException, match=message):
        _run(_params(delft_crop_laz, tmp_path / "dsm.tif", MODEL=str(stand_in.path), ORTHOS=orthos))
    assert not (tmp_path / "dsm.tif").exists()


def test_ortho_elsewhere_is_refused(implicity_provider, delft_crop_laz, stand_in, tmp_path):
    stand_in.model = NearestHeightModel(1)
    far = _ortho(tmp_path / "far.tif", bounds=(95000.0, 457000.0, 95064.0, 457064.0))
    with pytest.raises(QgsProcessingException, match="does not overlap the point cloud"):
        _run(_params(delft_crop_laz, tmp_path / "dsm.tif", MODEL=str(stand_in.path), ORTHOS=[far]))


def test_without_shipped_model_a_checkpoint_is_asked_for(implicity_provider, delft_crop_laz, tmp_path, monkeypatch):
    from implicity.implicity_qgis.algorithms import reconstruct

    monkeypatch.setattr(reconstruct, "default_model", lambda n: None)
    with pytest.raises(QgsProcessingException, match="No trained model for ImpliCity-0.*'Model checkpoint'"):
        _run(_params(delft_crop_laz, tmp_path / "dsm.tif"))


def test_shipped_model_is_the_default(implicity_provider, delft_crop_laz, stand_in, tmp_path, monkeypatch):
    from implicity.implicity_qgis.algorithms import reconstruct

    monkeypatch.setattr(reconstruct, "default_model", lambda n: stand_in.path if n == 0 else None)
    log = Recorder()
    _run(_params(delft_crop_laz, tmp_path / "dsm.tif", RESOLUTION=4.0), log)
    assert f"Model: {stand_in.path}" in "\n".join(log.info)


def test_missing_checkpoint_file_is_named(implicity_provider, delft_crop_laz, tmp_path):
    with pytest.raises(QgsProcessingException, match="nope.pt"):
        _run(_params(delft_crop_laz, tmp_path / "dsm.tif", MODEL=str(tmp_path / "nope.pt")))


def test_cancel_stops_and_leaves_no_file(implicity_provider, delft_crop_laz, stand_in, tmp_path):
    log = Recorder(cancel_at=6.0)
    with pytest.raises(QgsProcessingException, match="stopped by the user"):
        _run(_params(delft_crop_laz, tmp_path / "dsm.tif", MODEL=str(stand_in.path), RESOLUTION=0.5), log)
    assert not (tmp_path / "dsm.tif").exists()
    assert not list(tmp_path.glob(".dsm*"))  # no temporary part file either


def test_ept_layer_route_runs_end_to_end_and_names_the_dsm(implicity_provider, qgis_new_project, qgis_iface,
                                                           delft_crop_laz, stand_in, tmp_path):
    """The right-click route on Debian's QGIS: an EPT point-cloud layer in, a named, styled DSM out."""
    import processing
    from qgis.core import QgsPointCloudLayer, QgsProject

    from implicity.core.pointsources import write_ept
    from implicity.implicity_qgis.context_menu import prefilled_parameters

    ept = write_ept(delft_crop_laz, tmp_path / "delft_ept", crs="EPSG:28992", node_capacity=10_000)
    layer = QgsPointCloudLayer(str(ept), "delft_crop", "ept")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    params = {**prefilled_parameters("reconstructdsm", layer), "MODEL": str(stand_in.path), "RESOLUTION": 2.0,
              "DEVICE": 1, "OUTPUT": str(tmp_path / "dsm.tif")}
    assert params["POINTS"] == layer.id()
    processing.runAndLoadResults("implicity:reconstructdsm", params)
    with rasterio.open(tmp_path / "dsm.tif") as ds:
        assert ds.crs.to_epsg() == 28992 and ds.read(1, masked=True).count() > 0.9 * ds.width * ds.height
    names = [n.name() for n in QgsProject.instance().layerTreeRoot().findLayers()]
    assert names[:2] == ["delft_crop — DSM (standin) — hillshade", "delft_crop — DSM (standin)"]
    QgsProject.instance().removeAllMapLayers()


def test_shipped_model_is_named_by_its_kind():
    from implicity.core.shipped_models import default_model
    from implicity.implicity_qgis.algorithms.reconstruct import model_label

    assert model_label(default_model(0)) == "ImpliCity-0"
    assert model_label(default_model(1)) == "ImpliCity-mono"
    assert model_label("/elsewhere/my_city_v2.pt") == "my_city_v2"


def test_ortho_in_a_custom_crs_equal_to_the_clouds_is_named_not_blank(implicity_provider, qgis_new_project,
                                                                       stand_in, tmp_path):
    """Nîmes LiDAR (EPSG:2154) and an ortho whose layer CRS is a user-defined Lambert-93 (authority id
    'USER:…', no EPSG code): the log used to say "is in ; it is reprojected"."""
    from pathlib import Path

    from qgis.core import QgsApplication, QgsCoordinateReferenceSystem, QgsRasterLayer

    from implicity.core.raster import GridSpec, write_geotiff

    from ..helpers.geodata import crop_las

    nimes = Path(__file__).resolve().parents[2] / "data" / "nimes_lidarhd" / "subsampled_nimes.laz"
    bounds = (809400.0, 6304900.0, 809464.0, 6304964.0)
    cloud = crop_las(nimes, tmp_path / "nimes.laz", bounds)
    grid = GridSpec.from_bounds(*bounds, 0.5, CRS.from_epsg(2154))
    write_geotiff(tmp_path / "ortho.tif", (np.indices((grid.height, grid.width)).sum(0) % 255).astype(np.float32)[None],
                  grid)
    stand_in.model = NearestHeightModel(1)
    layer = QgsRasterLayer(str(tmp_path / "ortho.tif"), "ortho")
    custom = QgsCoordinateReferenceSystem.fromProj("+proj=lcc +lat_0=46.5 +lon_0=3 +lat_1=49 +lat_2=44 +x_0=700000 "
                                                   "+y_0=6600000 +ellps=GRS80 +units=m +no_defs")
    QgsApplication.createDatabase()  # the profile's qgis.db, where user CRSs live (test profile of pytest-qgis)
    crs_id = custom.saveAsUserCrs("Lambert 93 chantier")
    assert crs_id > 0
    try:
        assert custom.authid() == f"USER:{crs_id}"  # as Settings > Custom Projections gives it: no EPSG code
        layer.setCrs(custom)
        qgis_new_project.addMapLayer(layer)
        log = Recorder()
        _run({"POINTS_FILE": str(cloud), "POINTS_CRS": "EPSG:2154", "RESOLUTION": 4.0, "DEVICE": 1,
              "MODEL": str(stand_in.path), "ORTHOS": [layer.id()], "OUTPUT": str(tmp_path / "dsm.tif")}, log)
    finally:
        QgsApplication.coordinateReferenceSystemRegistry().removeUserCrs(crs_id)
    line = next(s for s in log.info if s.startswith("Ortho-image 1"))
    assert "is in a custom CRS 'Lambert 93 chantier' (same definition as EPSG:" in line and " in ;" not in line
    assert "used without reprojection" in line and "EPSG:2154" in line


def test_cancel_is_honoured_within_a_second_with_the_shipped_model(implicity_provider, delft_crop_laz, tmp_path,
                                                                    one_torch_thread):
    """Cancel mid-window: the decoder batches check it, so the run stops well before the window ends."""
    import threading
    import time

    from implicity.core.shipped_models import default_model

    if default_model(0) is None:
        pytest.skip("no shipped ImpliCity-0 model")
    state = {}

    class CancelMidWindow(Recorder):
        """Starts a timer when the first window is done; it cancels a quarter into the second (a check
        per window would only see it three quarters of a window later)."""

        def setProgress(self, value):
            super().setProgress(value)
            now = time.monotonic()
            if value > 5.0 and "first" not in state:
                state["first"] = now
                window = now - state["read"]
                threading.Timer(window / 4, lambda: (state.setdefault("cancel", time.monotonic()), self.cancel())).start()
            elif value <= 5.0:
                state["read"] = now

    log = CancelMidWindow()
    with pytest.raises(QgsProcessingException, match="stopped by the user"):
        _run(_params(delft_crop_laz, tmp_path / "dsm.tif", RESOLUTION=0.25), log)  # windows of >1 s here
    latency = time.monotonic() - state["cancel"]
    window = state["first"] - state["read"]
    assert latency < min(1.0, window / 2), (latency, window)
    assert not list(tmp_path.iterdir())  # no DSM, no part file


class RaisedModel(NearestHeightModel):
    """The stand-in's surface 1 m above the nearest point: often outside the points' own range."""

    def decode(self, query, features):
        pts, tree = features
        q = query[0].numpy()
        _, i = tree.query(q[:, :2])
        return torch.from_numpy((4.0 * 30.0 * (pts[i, 2] + 1.0 / 30.0 - q[:, 2])).astype(np.float32))[None]


def test_keep_margin_despeckle_and_symmetries_reach_the_engine(implicity_provider, delft_crop_laz, stand_in, tmp_path,
                                                    monkeypatch):
    from implicity.core import reconstruct
    from implicity.core.vocabulary import DEFAULT_DESPECKLE, DEFAULT_KEEP_MARGIN

    seen = []
    real = reconstruct.reconstruct_dsm
    monkeypatch.setattr(reconstruct, "reconstruct_dsm", lambda inputs, options, **kw: (seen.append(options),
                                                                                      real(inputs, options, **kw))[1])
    stand_in.model = RaisedModel(0)
    kept = _run(_params(delft_crop_laz, tmp_path / "kept.tif", MODEL=str(stand_in.path)))["OUTPUT"]
    loose = _run(_params(delft_crop_laz, tmp_path / "loose.tif", MODEL=str(stand_in.path), KEEP_MARGIN=3.0,
                         DESPECKLE=0.0, SYMMETRIES=2))["OUTPUT"]
    assert (seen[0].evidence.keep_margin, seen[0].despeckle, seen[0].symmetries) == (
        DEFAULT_KEEP_MARGIN, DEFAULT_DESPECKLE, 1)
    assert (seen[1].evidence.keep_margin, seen[1].despeckle, seen[1].symmetries) == (3.0, 0.0, 4)
    with rasterio.open(kept) as a, rasterio.open(loose) as b:
        diff = np.ma.abs(b.read(1, masked=True) - a.read(1, masked=True))
    # The engine's tests check what the two options do; here: they reach it and change the DSM.
    assert diff.max() > 0.5
