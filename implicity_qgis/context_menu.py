"""The "ImpliCity" submenu in the layer tree's right-click menu.

Point-cloud layers get Reconstruct / Baseline / Reference; raster layers get Evaluate. Each entry
opens the algorithm's dialog with the layer pre-filled: a valid point-cloud layer (EPT in QGIS 3.22;
LAS/LAZ/COPC too with PDAL) goes into the layer parameter, an invalid one (LAS/LAZ without PDAL)
into the file parameter. Evaluate gets the clicked raster as DSM and, when the project has one, a
raster named like a reference as Reference DSM — never the same raster twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from qgis.core import QgsMapLayer, QgsMapLayerType, QgsPointCloudLayer, QgsProject, QgsRasterLayer
from qgis.PyQt.QtWidgets import QAction

from .algorithms.common import POINTS, POINTS_FILE, plugin_icon
from .provider import PROVIDER_ID

MENU_NAME = "ImpliCity"


@dataclass(frozen=True)
class MenuEntry:
    """One context-menu entry: label, algorithm name and the layer type it applies to."""

    label: str
    algorithm: str
    layer_type: QgsMapLayerType


ENTRIES: tuple[MenuEntry, ...] = (
    MenuEntry("Reconstruct DSM (ImpliCity)…", "reconstructdsm", QgsMapLayerType.PointCloudLayer),
    MenuEntry("Baseline DSM…", "baselinedsm", QgsMapLayerType.PointCloudLayer),
    MenuEntry("Reference DSM from classified LiDAR…", "referencedsm", QgsMapLayerType.PointCloudLayer),
    MenuEntry("Evaluate DSM against reference…", "evaluatedsm", QgsMapLayerType.RasterLayer),
)


def reference_candidate(dsm: QgsRasterLayer, project: QgsProject | None = None) -> QgsRasterLayer | None:
    """Another raster of the project (not on the DSM's file) whose name says it is a reference."""
    project = project or QgsProject.instance()
    for layer in project.mapLayers().values():
        if (isinstance(layer, QgsRasterLayer) and layer.id() != dsm.id() and layer.source() != dsm.source()
                and "reference" in layer.name().lower() and "hillshade" not in layer.name().lower()):
            return layer
    return None


def prefilled_parameters(algorithm: str, layer: QgsMapLayer) -> dict:
    """Dialog parameters with ``layer`` in the right slot for ``algorithm``."""
    if isinstance(layer, QgsPointCloudLayer):
        if layer.isValid():
            return {POINTS: layer.id()}
        return {POINTS_FILE: layer.source().split("|")[0]}
    if isinstance(layer, QgsRasterLayer) and algorithm == "evaluatedsm":
        parameters = {"DSM": layer.id()}
        reference = reference_candidate(layer)
        if reference is not None:
            parameters["REFERENCE"] = reference.id()
        return parameters
    return {}


def open_dialog(algorithm: str, parameters: dict) -> None:
    """Open the Processing dialog (a module function so tests can replace it)."""
    import processing

    processing.execAlgorithmDialog(f"{PROVIDER_ID}:{algorithm}", parameters)


class LayerContextMenu:
    """Registers the entries with ``iface`` and removes them on unload."""

    def __init__(self, iface, before_open: Callable[[str], object] | None = None):
        self.iface = iface
        # Called with the algorithm name before its dialog opens (the plugin offers to install
        # missing packages there); the dialog opens either way and repeats any problem itself.
        self.before_open = before_open
        self.actions: dict[str, QAction] = {}

    def register(self) -> None:
        parent = self.iface.mainWindow()
        for entry in ENTRIES:
            action = QAction(plugin_icon(), entry.label, parent)
            action.setObjectName(f"implicity_{entry.algorithm}")
            action.triggered.connect(lambda _checked=False, name=entry.algorithm: self.trigger(name))
            self.iface.addCustomActionForLayerType(action, MENU_NAME, entry.layer_type, True)
            self.actions[entry.algorithm] = action

    def unregister(self) -> None:
        for action in self.actions.values():
            self.iface.removeCustomActionForLayerType(action)
        self.actions.clear()

    def trigger(self, algorithm: str, layer: QgsMapLayer | None = None) -> dict:
        """Open ``algorithm`` for ``layer`` (default: the layer right-clicked = the active layer)."""
        layer = layer if layer is not None else self.iface.activeLayer()
        if self.before_open is not None:
            self.before_open(algorithm)
        parameters = prefilled_parameters(algorithm, layer) if layer is not None else {}
        open_dialog(algorithm, parameters)
        return parameters
