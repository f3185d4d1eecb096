"""The layers a run adds: names from input and model, legends that say what the colours are, and a
hillshade without a pixel-edge grid (issue 13, item 5). Runs on real AHN3 LiDAR (Delft)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qgis.core", reason="PyQGIS (Debian's python3-qgis) is not importable")
pytest.importorskip("rasterio")

from qgis.core import (
    QgsColorRampLegendNode,
    QgsHillshadeRenderer,
    QgsLayerTreeModel,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsNumericFormatContext,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

pytestmark = pytest.mark.qgis
CRS = "EPSG:28992"


def _load(name: str, params: dict) -> dict:
    import processing

    return processing.runAndLoadResults(f"implicity:{name}", params)


def _layers(project) -> list[str]:
    return [n.name() for n in project.layerTreeRoot().findLayers()]


def _legend(project, layer, model=None) -> tuple[list[str], str | None]:
    """The legend rows' labels, and how the colour ramp's legend writes 12.3456789 (None: no ramp)."""
    model = model or QgsLayerTreeModel(project.layerTreeRoot())  # nodes live as long as the model: read them here
    nodes = model.layerLegendNodes(project.layerTreeRoot().findLayer(layer.id()))
    ramps = [n for n in nodes if isinstance(n, QgsColorRampLegendNode)]
    number = None
    if ramps:
        settings = ramps[0].settings()  # keep it: numericFormat() points into it
        number = settings.numericFormat().formatDouble(12.3456789, QgsNumericFormatContext())
    return [str(n.data(0)) for n in nodes], number


@pytest.fixture
def project(qgis_new_project, qgis_iface):
    yield QgsProject.instance()
    QgsProject.instance().removeAllMapLayers()


def test_outputs_are_named_after_input_and_method(implicity_provider, project, delft_crop_laz, tmp_path):
    _load("baselinedsm", {"POINTS_FILE": str(delft_crop_laz), "POINTS_CRS": CRS, "RESOLUTION": 2.0, "STATISTIC": 1,
                          "OUTPUT": str(tmp_path / "b.tif")})
    _load("referencedsm", {"POINTS_FILE": str(delft_crop_laz), "POINTS_CRS": CRS, "RESOLUTION": 2.0,
                           "OUTPUT": str(tmp_path / "r.tif"), "BUILDING_MASK": str(tmp_path / "m.tif")})
    names = _layers(project)
    for expected in ("delft_crop — baseline DSM (median)", "delft_crop — baseline DSM (median) — hillshade",
                     "delft_crop — reference DSM", "delft_crop — reference DSM — hillshade",
                     "delft_crop — building mask"):
        assert expected in names
    base = project.mapLayersByName("delft_crop — baseline DSM (median)")[0]
    ref = project.mapLayersByName("delft_crop — reference DSM")[0]
    _load("evaluatedsm", {"DSM": base.id(), "REFERENCE": ref.id(), "RESIDUAL": str(tmp_path / "res.tif")})
    assert "delft_crop — baseline DSM (median) − delft_crop — reference DSM (residual)" in _layers(project)
    assert len(set(_layers(project))) == len(_layers(project))  # no two layers share a name


def test_dsm_legend_reads_height_in_metres_with_two_decimals(implicity_provider, project, delft_crop_laz, tmp_path):
    view_model = QgsLayerTreeModel(project.layerTreeRoot())  # like the Layers panel: exists before the run
    _load("baselinedsm", {"POINTS_FILE": str(delft_crop_laz), "POINTS_CRS": CRS, "RESOLUTION": 2.0,
                          "OUTPUT": str(tmp_path / "b.tif")})
    layer = project.mapLayersByName("delft_crop — baseline DSM (max)")[0]
    labels, number = _legend(project, layer, view_model)
    assert labels[0] == "Height (m)"  # instead of "Band 1 (Gray)"
    assert number == "12.35"  # the ramp's min/max labels: two decimals, not 12.345679


def test_residual_and_confidence_legends(implicity_provider, project, tmp_path):
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback
    from rasterio.crs import CRS as RioCRS

    from implicity.core.raster import GridSpec, write_geotiff
    from implicity.implicity_qgis.styling import RasterStylePostProcessor

    grid = GridSpec.from_bounds(0, 0, 10, 10, 1.0, RioCRS.from_epsg(28992))
    write_geotiff(tmp_path / "r.tif", np.linspace(-1, 1, 100, dtype=np.float32).reshape(10, 10), grid)
    context = QgsProcessingContext()
    context.setProject(project)
    for kind, title in (("residual", "DSM − reference (m)"), ("confidence", "Confidence (0–1)")):
        layer = QgsRasterLayer(str(tmp_path / "r.tif"), kind)
        project.addMapLayer(layer)
        RasterStylePostProcessor(kind, f"x — {kind}").postProcessLayer(layer, context, QgsProcessingFeedback())
        labels, number = _legend(project, layer)
        assert layer.name() == f"x — {kind}" and labels[0] == title and number == "12.35"


def _render(layer: QgsRasterLayer, extent: QgsRectangle, size: int = 400) -> np.ndarray:
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(size, size))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    ptr = image.constBits()
    ptr.setsize(image.byteCount())
    return np.frombuffer(ptr, np.uint8).reshape(image.height(), image.width(), 4)[..., :3].mean(axis=-1)


def test_hillshade_has_no_grid_at_pixel_edges_when_zoomed_in(implicity_provider, project, delft_crop_laz, tmp_path):
    """At ~1:250 each 1 m pixel covers 40 screen pixels. A hillshade of nearest-neighbour heights is
    flat inside pixels and dark at their edges; ours is shaded at the source resolution and
    interpolated, so neighbouring screen columns never jump."""
    _load("baselinedsm", {"POINTS_FILE": str(delft_crop_laz), "POINTS_CRS": CRS, "RESOLUTION": 1.0,
                          "OUTPUT": str(tmp_path / "b.tif")})
    shade = project.mapLayersByName("delft_crop — baseline DSM (max) — hillshade")[0]
    assert isinstance(shade.renderer(), QgsHillshadeRenderer)
    centre = shade.extent().center()
    zoom = QgsRectangle(centre.x() - 5, centre.y() - 5, centre.x() + 5, centre.y() + 5)
    image = _render(shade, zoom)
    jumps = np.abs(np.diff(image, axis=1)).mean(axis=0)  # per screen column, over all rows
    raw = QgsRasterLayer(shade.source(), "raw")  # QGIS's default: the same renderer, no resampling
    raw.setRenderer(shade.renderer().clone())
    raw_jumps = np.abs(np.diff(_render(raw, zoom), axis=1)).mean(axis=0)
    assert raw_jumps.max() > 30  # the grid the user saw
    assert jumps.max() < 8 and jumps.max() < raw_jumps.max() / 4
