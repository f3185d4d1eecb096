"""Reconstruct DSM (ImpliCity) with 'Workers' = 2: the same DSM as in QGIS's own process (issue 14)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qgis.core", reason="PyQGIS (Debian's python3-qgis) is not importable")
pytest.importorskip("distributed")
rasterio = pytest.importorskip("rasterio")

from qgis.core import QgsProcessingParameterDefinition

from ..helpers.city import write_city_laz

pytestmark = pytest.mark.qgis


def test_dask_parameters_are_advanced_and_optional(implicity_provider):
    alg = implicity_provider.algorithm("reconstructdsm")
    scheduler, workers = alg.parameterDefinition("SCHEDULER"), alg.parameterDefinition("WORKERS")
    assert scheduler.description() == "Dask scheduler address (empty = in this process)"
    assert workers.description().startswith("Workers") and workers.defaultValue() == 0
    for p in (scheduler, workers):
        assert p.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    assert scheduler.flags() & QgsProcessingParameterDefinition.FlagOptional
    assert "Dask scheduler address" in alg.shortHelpString()


@pytest.mark.slow
def test_two_workers_give_the_dsm_of_one_process_as_a_layer(implicity_provider, feedback_log, tmp_path):
    import processing

    laz = write_city_laz(tmp_path / "city.laz", width=150.0, height=100.0)
    common = {"POINTS_FILE": str(laz), "RESOLUTION": 1.0, "DEVICE": 1}
    one = processing.run("implicity:reconstructdsm", {**common, "OUTPUT": str(tmp_path / "one.tif")})["OUTPUT"]
    two = processing.run("implicity:reconstructdsm", {**common, "WORKERS": 2, "OUTPUT": str(tmp_path / "two.tif")},
                         feedback=feedback_log)["OUTPUT"]
    with rasterio.open(one) as a, rasterio.open(two) as b:
        x, y = a.read(1, masked=True), b.read(1, masked=True)
    assert np.array_equal(x.mask, y.mask)
    assert float(np.abs(x.filled(0) - y.filled(0)).max()) <= 0.01
    assert "streamed by the Dask run" in feedback_log.text and "on Dask workers" in feedback_log.text
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
