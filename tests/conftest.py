"""Shared pytest fixtures. Keep them generic and cheap; QGIS is imported only by fixtures that need it."""
from __future__ import annotations

from pathlib import Path

import pytest

from .helpers.geodata import DELFT_CROP, DELFT_LAZ, crop_las

#: Vendored from shared/reference (see tests/data/README.md), so the suite needs nothing outside the repo.
REFERENCE_JSON = Path(__file__).resolve().parent / "data" / "reference_state_dicts.json"


@pytest.fixture(scope="session")
def delft_crop_laz(tmp_path_factory) -> Path:
    """Real AHN3 LiDAR (classified, no CRS in the header), cropped to DELFT_CROP and thinned by 2."""
    if not DELFT_LAZ.is_file():
        pytest.skip(f"shared test data missing: {DELFT_LAZ}")
    return crop_las(DELFT_LAZ, tmp_path_factory.mktemp("delft") / "delft_crop.laz", DELFT_CROP, keep_every=2)


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
