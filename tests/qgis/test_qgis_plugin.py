"""Plugin entry point, provider registration, layer context menu, output styling, load without torch."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("qgis.core", reason="PyQGIS (Debian's python3-qgis) is not importable")

from qgis.core import (
    QgsApplication,
    QgsHillshadeRenderer,
    QgsMapLayerType,
    QgsPointCloudLayer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsRasterLayer,
    QgsSingleBandPseudoColorRenderer,
)

pytestmark = pytest.mark.qgis
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugin(qgis_iface, qgis_processing, monkeypatch):
    """The plugin as QGIS creates it (classFactory), initialised, unloaded afterwards."""
    import implicity

    qgis_iface.addCustomActionForLayerType.reset_mock()
    qgis_iface.removeCustomActionForLayerType.reset_mock()
    instance = implicity.classFactory(qgis_iface)
    instance.initGui()
    yield instance
    instance.unload()


@pytest.fixture
def dialog_calls(monkeypatch):
    """Replace the Processing dialog by a recorder of (algorithm id, parameters)."""
    import processing

    calls = []
    monkeypatch.setattr(processing, "execAlgorithmDialog", lambda alg, params: calls.append((alg, params)))
    return calls


def test_class_factory_registers_provider_and_unload_removes_it(qgis_iface, qgis_processing):
    import implicity

    registry = QgsApplication.processingRegistry()
    instance = implicity.classFactory(qgis_iface)
    instance.initProcessing()
    assert registry.providerById("implicity") is not None
    assert registry.algorithmById("implicity:reconstructdsm") is not None
    instance.unload()
    assert registry.providerById("implicity") is None


def test_context_menu_entries_are_registered_per_layer_type(plugin, qgis_iface):
    calls = qgis_iface.addCustomActionForLayerType.call_args_list
    registered = {(c.args[0].text(), c.args[1], c.args[2]) for c in calls}
    assert registered == {
        ("Reconstruct DSM (ImpliCity)…", "ImpliCity", QgsMapLayerType.PointCloudLayer),
        ("Baseline DSM…", "ImpliCity", QgsMapLayerType.PointCloudLayer),
        ("Reference DSM from classified LiDAR…", "ImpliCity", QgsMapLayerType.PointCloudLayer),
        ("Evaluate DSM against reference…", "ImpliCity", QgsMapLayerType.RasterLayer),
    }
    assert all(c.args[3] is True for c in calls)  # for all layers of the type


def test_unload_removes_the_menu_entries(qgis_iface, qgis_processing):
    import implicity

    instance = implicity.classFactory(qgis_iface)
    instance.initGui()
    actions = list(instance.context_menu.actions.values())
    qgis_iface.removeCustomActionForLayerType.reset_mock()
    instance.unload()
    removed = [c.args[0] for c in qgis_iface.removeCustomActionForLayerType.call_args_list]
    assert removed == actions


@pytest.mark.parametrize("algorithm", ["reconstructdsm", "baselinedsm", "referencedsm"])
def test_point_cloud_entry_opens_dialog_with_the_layer_file(plugin, qgis_iface, qgis_new_project, dialog_calls,
                                                            monkeypatch, delft_crop_laz, algorithm):
    layer = QgsPointCloudLayer(str(delft_crop_laz), "delft", "pdal")  # invalid without PDAL: file route
    qgis_new_project.addMapLayer(layer)  # the right-clicked layer is the active one of the project
    monkeypatch.setattr(plugin, "offer_missing_for", lambda name: True)
    plugin.context_menu.before_open = plugin.offer_missing_for
    qgis_iface.setActiveLayer(layer)
    plugin.context_menu.actions[algorithm].trigger()
    assert dialog_calls == [(f"implicity:{algorithm}", {"POINTS_FILE": str(delft_crop_laz)})]


def test_valid_point_cloud_layer_goes_into_the_layer_parameter(monkeypatch):
    from implicity.implicity_qgis import context_menu

    layer = QgsPointCloudLayer("/nonexistent.laz", "x", "pdal")
    monkeypatch.setattr(QgsPointCloudLayer, "isValid", lambda self: True)
    assert context_menu.prefilled_parameters("reconstructdsm", layer) == {"POINTS": layer.id()}


def test_raster_entry_opens_evaluate_with_the_dsm(plugin, qgis_iface, dialog_calls, tmp_path):
    import numpy as np
    from rasterio.crs import CRS

    from implicity.core.raster import GridSpec, write_geotiff

    grid = GridSpec.from_bounds(0, 0, 10, 10, 1.0, CRS.from_epsg(28992))
    write_geotiff(tmp_path / "d.tif", np.ones((10, 10), np.float32), grid)
    layer = QgsRasterLayer(str(tmp_path / "d.tif"), "dsm")
    parameters = plugin.context_menu.trigger("evaluatedsm", layer)
    assert dialog_calls == [("implicity:evaluatedsm", {"DSM": layer.id()})] and parameters == {"DSM": layer.id()}


def test_evaluate_entry_prefills_a_reference_but_never_the_same_raster(plugin, qgis_new_project, dialog_calls,
                                                                          tmp_path):
    import numpy as np
    from rasterio.crs import CRS

    from implicity.core.raster import GridSpec, write_geotiff

    grid = GridSpec.from_bounds(0, 0, 10, 10, 1.0, CRS.from_epsg(28992))
    for name in ("dsm", "ref"):
        write_geotiff(tmp_path / f"{name}.tif", np.ones((10, 10), np.float32), grid)
    dsm = QgsRasterLayer(str(tmp_path / "dsm.tif"), "delft — DSM (ImpliCity-0)")
    shade = QgsRasterLayer(str(tmp_path / "dsm.tif"), "delft — DSM (ImpliCity-0) — hillshade")
    qgis_new_project.addMapLayers([dsm, shade])
    assert plugin.context_menu.trigger("evaluatedsm", dsm) == {"DSM": dsm.id()}  # nothing else to offer
    ref = QgsRasterLayer(str(tmp_path / "ref.tif"), "delft — reference DSM")
    qgis_new_project.addMapLayer(ref)
    assert plugin.context_menu.trigger("evaluatedsm", dsm) == {"DSM": dsm.id(), "REFERENCE": ref.id()}


def test_context_menu_offers_missing_packages_before_the_dialog(plugin, dialog_calls, monkeypatch, delft_crop_laz):
    from implicity.implicity_qgis import dependencies as deps

    asked = []
    blocked = deps.Requirement("implicity_absent_module", "x", "test")
    monkeypatch.setattr(deps, "NETWORK", (blocked,))
    monkeypatch.setattr(plugin, "_prompt", lambda missing: asked.append([r.module for r in missing]) or False)
    plugin.context_menu.trigger("reconstructdsm", QgsPointCloudLayer(str(delft_crop_laz), "d", "pdal"))
    assert asked == [["implicity_absent_module"]] and len(dialog_calls) == 1


def test_dsm_style_is_pseudocolour_with_hillshade_above(implicity_provider, qgis_new_project, delft_crop_laz, tmp_path):
    import processing

    from implicity.implicity_qgis.styling import HILLSHADE_SUFFIX, RasterStylePostProcessor, attach_style

    out = processing.run("implicity:baselinedsm", {"POINTS_FILE": str(delft_crop_laz), "POINTS_CRS": "EPSG:28992",
                                                   "RESOLUTION": 2.0, "OUTPUT": str(tmp_path / "b.tif")})["OUTPUT"]
    layer = QgsRasterLayer(out, "Baseline DSM")
    qgis_new_project.addMapLayer(layer)
    context = QgsProcessingContext()
    context.setProject(qgis_new_project)
    assert attach_style(context, out, "dsm") is False  # not loaded on completion: nothing to style
    RasterStylePostProcessor("dsm").postProcessLayer(layer, context, QgsProcessingFeedback())
    assert isinstance(layer.renderer(), QgsSingleBandPseudoColorRenderer)
    shader = layer.renderer().shader().rasterShaderFunction()
    assert shader.minimumValue() < shader.maximumValue()
    order = [n.layer().name() for n in qgis_new_project.layerTreeRoot().findLayers()]
    assert order == ["Baseline DSM" + HILLSHADE_SUFFIX, "Baseline DSM"]  # hillshade drawn on top
    shade = qgis_new_project.mapLayersByName("Baseline DSM" + HILLSHADE_SUFFIX)[0]
    assert isinstance(shade.renderer(), QgsHillshadeRenderer) and shade.renderer().multiDirectional()


def test_residual_style_is_symmetric_around_zero(implicity_provider, tmp_path):
    import numpy as np
    from rasterio.crs import CRS

    from implicity.core.raster import GridSpec, write_geotiff
    from implicity.implicity_qgis.styling import style_residual

    grid = GridSpec.from_bounds(0, 0, 10, 10, 1.0, CRS.from_epsg(28992))
    write_geotiff(tmp_path / "r.tif", np.linspace(-1, 3, 100, dtype=np.float32).reshape(10, 10), grid)
    layer = QgsRasterLayer(str(tmp_path / "r.tif"), "r")
    style_residual(layer)
    fn = layer.renderer().shader().rasterShaderFunction()
    assert fn.minimumValue() == pytest.approx(-3.0) and fn.maximumValue() == pytest.approx(3.0)


def test_attach_style_registers_post_processor_for_loaded_outputs(tmp_path):
    from qgis.core import QgsProcessingContext as Ctx

    from implicity.implicity_qgis.styling import attach_style

    context = Ctx()
    path = str(tmp_path / "dsm.tif")
    context.addLayerToLoadOnCompletion(path, Ctx.LayerDetails("DSM", context.project()))
    assert attach_style(context, path, "dsm") is True
    assert context.layerToLoadOnCompletionDetails(path).postProcessor() is not None


def test_plugin_loads_and_explains_when_torch_and_geodata_packages_are_missing(tmp_path):
    """Plugin load never fails for lack of packages; running says what is missing and how to install."""
    script = textwrap.dedent(f"""
        import sys
        for name in ("torch", "rasterio", "laspy", "lazrs"):
            sys.modules[name] = None  # import of these now fails as if absent
        sys.path.insert(0, "/usr/share/qgis/python/plugins")
        from qgis.core import QgsApplication
        app = QgsApplication([], False); app.initQgis()
        from processing.core.Processing import Processing
        Processing.initialize()
        import processing
        from unittest.mock import MagicMock
        import implicity
        plugin = implicity.classFactory(MagicMock())
        plugin.initProcessing()
        try:
            processing.run("implicity:baselinedsm", {{"POINTS_FILE": "{tmp_path}/x.laz", "RESOLUTION": 1,
                                                    "OUTPUT": "{tmp_path}/o.tif"}})
        except Exception as exc:
            print("MESSAGE:", exc)
        plugin.unload()
        app.exitQgis()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert "MESSAGE:" in proc.stdout, proc.stderr[-2000:]
    message = proc.stdout.split("MESSAGE:", 1)[1]
    assert "rasterio" in message and "laspy" in message and "Install Python dependencies" in message
    assert "torch" not in message  # the baseline does not need the network
