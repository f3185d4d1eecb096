"""Shared pytest fixtures. Keep them generic and cheap; QGIS is imported only by fixtures that need it."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DELFT_LAZ = SHARED_DATA / "delft_ahn3" / "ahn3_cropped_2.laz"  # AHN3, EPSG:28992, no CRS in header
#: Vendored from shared/reference (see tests/data/README.md), so the suite needs nothing outside the repo.
REFERENCE_JSON = Path(__file__).resolve().parent / "data" / "reference_state_dicts.json"
#: A 64 × 64 m crop of DELFT_LAZ (RD New metres): a few buildings and streets.
DELFT_CROP = (85000.0, 447500.0, 85064.0, 447564.0)


def crop_las(src: Path, dst: Path, bounds: tuple[float, float, float, float], keep_every: int = 1) -> Path:
    """Write the points of ``src`` inside ``bounds`` (every ``keep_every``-th) to ``dst`` (LAS/LAZ)."""
    import laspy
    import numpy as np

    las = laspy.read(str(src))
    xmin, ymin, xmax, ymax = bounds
    x, y = np.asarray(las.x), np.asarray(las.y)
    sel = np.flatnonzero((x >= xmin) & (x < xmax) & (y >= ymin) & (y < ymax))[::keep_every]
    out = laspy.LasData(las.header)
    out.points = las.points[sel]
    out.write(str(dst))
    return dst


@pytest.fixture(scope="session")
def delft_crop_laz(tmp_path_factory) -> Path:
    """Real AHN3 LiDAR (classified, no CRS in the header), cropped to DELFT_CROP and thinned by 2."""
    if not DELFT_LAZ.is_file():
        pytest.skip(f"shared test data missing: {DELFT_LAZ}")
    return crop_las(DELFT_LAZ, tmp_path_factory.mktemp("delft") / "delft_crop.laz", DELFT_CROP, keep_every=2)


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

        def pushInfo(self, info):  # noqa: N802 - Qt's name
            self.lines.append(info)

        @property
        def text(self) -> str:
            return "\n".join(self.lines)

    return RecordingFeedback()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run small tensors on one thread: intra-op threads gain nothing at this size, and when another
    process shares the cores, spinning OpenMP barriers make them 10-50x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference() -> dict:
    """The authors' state-dict layouts (key, shape, parameter counts) of ImpliCity-0/-mono/-stereo."""
    import json

    if not REFERENCE_JSON.is_file():
        pytest.fail(f"vendored fixture missing: {REFERENCE_JSON} (see tests/data/README.md)")
    return json.loads(REFERENCE_JSON.read_text(encoding="utf-8"))
