"""The QGIS plugin object: Processing provider, layer context menu, dependency installer menu entry.

Loading must never fail for lack of torch/laspy/rasterio: nothing here imports them; the
algorithms check their packages when used (see :mod:`.dependencies`).
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsMessageLog
from qgis.PyQt.QtWidgets import QAction

from . import dependencies as deps
from .algorithms.common import plugin_icon
from .context_menu import LayerContextMenu
from .provider import PROVIDER_ID, ImpliCityProvider

MENU = "&ImpliCity"


class ImpliCityPlugin:
    """Registered by ``classFactory``; QGIS calls initProcessing/initGui/unload."""

    def __init__(self, iface):
        self.iface = iface
        # Held here: QGIS's registry does not keep the Python object alive, and a collected provider
        # vanishes from the toolbox.
        self.provider: ImpliCityProvider | None = None
        self.context_menu: LayerContextMenu | None = None
        self.deps_action: QAction | None = None
        self.deps_dir: Path = deps.default_deps_dir(QgsApplication.qgisSettingsDirPath())
        deps.deps_dir = self.deps_dir
        deps.activate(self.deps_dir)  # packages installed by an earlier session

    def initProcessing(self) -> None:
        if self.provider is not None:
            return
        registry = QgsApplication.processingRegistry()
        provider = ImpliCityProvider()
        if registry.addProvider(provider):
            self.provider = provider
            return
        # Refused (a provider with our id is already registered, e.g. a stale copy after a plugin
        # reload): QGIS has deleted ``provider``. Keep whichever is registered working; do not own it.
        QgsMessageLog.logMessage(
            f"ImpliCity: a Processing provider with id '{PROVIDER_ID}' is already registered; "
            "keeping it. Restart QGIS if the ImpliCity algorithms look outdated.", "ImpliCity", Qgis.Warning)

    def initGui(self) -> None:
        self.initProcessing()
        self.context_menu = LayerContextMenu(self.iface, before_open=self.offer_missing_for)
        self.context_menu.register()
        self.deps_action = QAction(plugin_icon(), "Install Python dependencies…", self.iface.mainWindow())
        self.deps_action.setObjectName("implicity_install_dependencies")
        self.deps_action.triggered.connect(self.check_dependencies)
        self.iface.addPluginToMenu(MENU, self.deps_action)
        deps.gui_prompt = self._prompt

    def unload(self) -> None:
        deps.gui_prompt = None
        if self.context_menu is not None:
            self.context_menu.unregister()
            self.context_menu = None
        if self.deps_action is not None:
            self.iface.removePluginMenu(MENU, self.deps_action)
            self.deps_action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # -- dependencies -----------------------------------------------------------------------------

    def _prompt(self, missing: list[deps.Requirement]) -> bool:
        from .dependency_dialog import offer_install

        return offer_install(missing, self.deps_dir, self.iface.mainWindow())

    def offer_missing_for(self, algorithm: str) -> bool:
        """Before a context-menu dialog opens: offer to install what that algorithm lacks."""
        needs = deps.GEODATA + (deps.NETWORK if algorithm == "reconstructdsm" else ())
        absent = deps.missing(needs)
        return not absent or self._prompt(absent)

    def check_dependencies(self) -> bool:
        from .dependency_dialog import check_and_offer

        return check_and_offer(self.deps_dir, self.iface.mainWindow())
