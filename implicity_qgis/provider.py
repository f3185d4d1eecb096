"""The ImpliCity Processing provider (Toolbox, batch dialog, modeler and qgis_process)."""
from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHM_CLASSES
from .algorithms.common import plugin_icon

PROVIDER_ID = "implicity"


class ImpliCityProvider(QgsProcessingProvider):
    """Holds one instance of each ImpliCity algorithm; outputs default to GeoTIFF."""

    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return "ImpliCity"

    def longName(self) -> str:
        return "ImpliCity DSM reconstruction"

    def icon(self) -> QIcon:
        return plugin_icon()

    def loadAlgorithms(self) -> None:
        for cls in ALGORITHM_CLASSES:
            self.addAlgorithm(cls())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        return ["tif"]  # core writes Cloud-Optimized GeoTIFFs only

    def defaultRasterFileExtension(self) -> str:
        return "tif"
