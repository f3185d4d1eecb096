"""What the batch dialog does to our algorithms (issue 13, item 4), headless.

QGIS 3.22's batch dialog builds each row's parameters (outputs as QgsProcessingOutputLayerDefinition
with the project to load into), calls ``preprocessParameters``, then ``alg.run`` in the main thread
with a fresh context, and loads what the context lists. The real dialog is driven in
test_qgis_desktop.py; here each of those steps is reproduced on real LiDAR.
"""
from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

pytest.importorskip("qgis.core", reason="PyQGIS (Debian's python3-qgis) is not importable")
pytest.importorskip("rasterio")

from qgis.core import (
    QgsApplication,
    QgsPointCloudLayer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
)
from qgis.PyQt.QtCore import QCoreApplication

from ..helpers.geodata import DELFT_LAZ, crop_las

pytestmark = pytest.mark.qgis
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_clouds(tmp_path_factory, delft_crop_laz) -> list[Path]:
    second = crop_las(DELFT_LAZ, tmp_path_factory.mktemp("second") / "delft_south.laz",
                      (85008.0, 447420.0, 85040.0, 447452.0), keep_every=2)
    return [delft_crop_laz, second]


def _batch_row(alg, cloud: Path, output: str, project, **extra) -> dict:
    """One row as BatchPanel.parametersForRow gives it (destinations loaded into ``project``)."""
    row = {"POINTS_FILE": str(cloud), "POINTS_CRS": "EPSG:28992", "RESOLUTION": 2.0, **extra}
    for dest in alg.destinationParameterDefinitions():
        row[dest.name()] = QgsProcessingOutputLayerDefinition(output if dest.name() == "OUTPUT" else "", project)
    return row


def _sink(value) -> str:
    return value.sink.staticValue()


def test_fill_with_parameter_values_names_outputs_after_the_input(implicity_provider, qgis_new_project, two_clouds,
                                                                  tmp_path):
    """'Fill with parameter values' on the file column appends the whole input path to the chosen
    name (<folder>/dsm/abs/path/x.laz.tif); each row's output becomes <folder>/dsm_<input name>.tif."""
    alg = implicity_provider.algorithm("baselinedsm").create()
    chosen = str(tmp_path / "dsm.tif")
    outputs = []
    for cloud in two_clouds:
        autofilled = chosen[: chosen.rfind(".")] + str(cloud) + chosen[chosen.rfind("."):]  # BatchOutputSelectionPanel
        row = alg.preprocessParameters(_batch_row(alg, cloud, autofilled, qgis_new_project))
        outputs.append(_sink(row["OUTPUT"]))
        results, ok = alg.run(row, QgsProcessingContext(), QgsProcessingFeedback())
        assert ok and results["OUTPUT"] == outputs[-1]
    assert outputs == [str(tmp_path / "dsm_delft_crop.tif"), str(tmp_path / "dsm_delft_south.tif")]
    assert all(Path(p).is_file() for p in outputs)


def test_a_layer_id_in_an_autofilled_name_becomes_the_layer_name(implicity_provider, qgis_new_project, tmp_path):
    from implicity.core.pointsources import write_ept

    ept = write_ept(REPO / "data" / "nimes_lidarhd" / "subsampled_nimes.laz", tmp_path / "nimes", crs="EPSG:2154")
    layer = QgsPointCloudLayer(str(ept), "arenes", "ept")
    qgis_new_project.addMapLayer(layer)
    alg = implicity_provider.algorithm("reconstructdsm").create()
    row = {"POINTS": layer.id(), "OUTPUT": QgsProcessingOutputLayerDefinition(f"{tmp_path}/dsm{layer.id()}.tif")}
    assert _sink(alg.preprocessParameters(row)["OUTPUT"]) == f"{tmp_path}/dsm_arenes.tif"
    plain = {"POINTS": layer.id(), "OUTPUT": str(tmp_path / "mine.tif")}  # a name typed by the user stays
    assert alg.preprocessParameters(plain)["OUTPUT"] == str(tmp_path / "mine.tif")


def test_empty_optional_output_is_not_reported_as_not_generated(implicity_provider, qgis_new_project, two_clouds,
                                                                tmp_path):
    """A batch row leaves 'Building mask' empty: the context must not list '' as a layer to load
    (Processing then logs 'The following layers were not correctly generated. •')."""
    from processing.gui.Postprocessing import handleAlgorithmResults

    class Errors(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.errors = []

        def reportError(self, error, fatalError=False):
            self.errors.append(error)

    alg = implicity_provider.algorithm("referencedsm").create()
    row = _batch_row(alg, two_clouds[0], str(tmp_path / "ref.tif"), qgis_new_project)
    assert _sink(row["BUILDING_MASK"]) == ""
    context, feedback = QgsProcessingContext(), Errors()
    context.setProject(qgis_new_project)
    results, ok = alg.run(row, context, feedback)
    assert ok and set(context.layersToLoadOnCompletion()) == {str(tmp_path / "ref.tif")}
    assert handleAlgorithmResults(alg, context, feedback, False, row) is True and not feedback.errors
    names = [layer.name() for layer in qgis_new_project.mapLayers().values()]
    assert "delft_crop — reference DSM" in names


class _Marker:
    pass


def test_a_failed_run_does_not_keep_its_caller_alive(implicity_provider, tmp_path):
    """SIP keeps the traceback of a QgsProcessingException raised by processAlgorithm, and with it the
    caller's frame: in the batch dialog, its progress task (stuck at 50 %, QGIS cannot quit). Once the
    event loop runs again, our failed runs release those frames."""
    alg = implicity_provider.algorithm("baselinedsm").create()

    def batch_like_caller():
        task_stand_in = _Marker()  # BatchAlgorithmDialog.runAlgorithm holds its progress task like this
        ref = weakref.ref(task_stand_in)
        results, ok = alg.run({"POINTS_FILE": str(tmp_path / "missing.laz"), "RESOLUTION": 1.0,
                               "OUTPUT": str(tmp_path / "o.tif")}, QgsProcessingContext(), QgsProcessingFeedback())
        assert not ok
        return ref

    ref = batch_like_caller()
    for _ in range(3):
        QCoreApplication.processEvents()  # the main loop after the batch returned
    gc.collect()
    assert ref() is None
    assert QgsApplication.taskManager().countActiveTasks() == 0
