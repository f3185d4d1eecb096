"""Fixtures of the QGIS tests: the registered provider and a feedback that records the log."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def implicity_provider(qgis_processing):
    """The ImpliCity Processing provider, registered for one test module (reference kept alive).

    Module scope, so that modules which load the plugin itself (classFactory) find no provider of
    the same id left over from another module.
    """
    from qgis.core import QgsApplication

    from implicity.implicity_qgis.provider import ImpliCityProvider

    provider = ImpliCityProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    yield provider
    QgsApplication.processingRegistry().removeProvider(provider)


@pytest.fixture
def feedback_log():
    """A QgsProcessingFeedback that records what an algorithm pushes to the log (``.lines``, ``.text``)."""
    from qgis.core import QgsProcessingFeedback

    class RecordingFeedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines: list[str] = []

        def pushInfo(self, info):
            self.lines.append(info)

        @property
        def text(self) -> str:
            return "\n".join(self.lines)

    return RecordingFeedback()
