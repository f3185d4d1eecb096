"""The plugin's enums and defaults are core's vocabulary (core/vocabulary.py)."""
from __future__ import annotations

import pytest

pytest.importorskip("qgis.core", reason="PyQGIS (Debian's python3-qgis) is not importable")

from implicity.core import vocabulary

pytestmark = pytest.mark.qgis


def _enum(algorithm_id: str, name: str) -> tuple[list[str], str]:
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById(f"implicity:{algorithm_id}")
    param = alg.parameterDefinition(name)
    return list(param.options()), param.options()[int(param.defaultValue())]


def test_enums_list_the_vocabulary_with_its_defaults(implicity_provider) -> None:
    assert _enum("baselinedsm", "STATISTIC") == (list(vocabulary.STATISTICS), vocabulary.DEFAULT_STATISTIC)
    assert _enum("baselinedsm", "FILL") == (list(vocabulary.FILL_METHODS), vocabulary.DEFAULT_FILL)
    assert _enum("reconstructdsm", "MODE") == (list(vocabulary.MODES), vocabulary.DEFAULT_MODE)
    assert _enum("reconstructdsm", "DEVICE") == (list(vocabulary.DEVICE_CHOICES), vocabulary.DEFAULT_DEVICE)


def test_errors_name_the_plugin_labels(implicity_provider) -> None:
    from implicity.core.errors import InputError, param
    from implicity.implicity_qgis.algorithms.common import render_error
    from implicity.implicity_qgis.algorithms.reconstruct import ReconstructDsmAlgorithm

    alg = ReconstructDsmAlgorithm()
    error = InputError(f"{param('orthos')} x.tif: too coarse; give an {param('extent')} inside it.")
    assert render_error(error, alg.labels()) == "'Ortho-images' x.tif: too coarse; give an 'Extent' inside it."
