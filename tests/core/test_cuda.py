"""The CUDA path (runs only where a CUDA GPU is present; CI has none, so these skip there).

The same reconstruction on the GPU and on the CPU must agree; mixed precision must stay close to
float32; the batch size must follow the free GPU memory.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from implicity.core.reconstruct import ReconstructionInputs, ReconstructionOptions, reconstruct_dsm
from implicity.core.reconstruct.device import MIN_BATCH, auto_batch_size
from implicity.core.shipped_models import default_model

from ..helpers.reconstruct_support import pixel_scene, read_dsm

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (CI and this VM have none)")


@pytest.fixture(scope="module")
def scene():
    return pixel_scene(96.0, 80.0, 0.5)


def _dsm(tmp_path, cloud, name, **options):
    model = default_model(0)
    if model is None:
        pytest.skip("no shipped ImpliCity-0 model in models/")
    out = tmp_path / f"{name}.tif"
    result = reconstruct_dsm(ReconstructionInputs(points=cloud, model=model, out_path=out, resolution=0.5),
                             ReconstructionOptions(**options))
    return read_dsm(out), result


def test_fast_mode_on_cuda_matches_the_cpu(tmp_path, scene):
    cloud, _ = scene
    gpu, result = _dsm(tmp_path, cloud, "gpu", device="cuda")
    cpu, _ = _dsm(tmp_path, cloud, "cpu", device="cpu")
    assert result.device.startswith("cuda")
    assert np.isfinite(gpu).all()
    assert np.nanmedian(np.abs(gpu - cpu)) < 0.005 and np.nanmax(np.abs(gpu - cpu)) < 0.5


def test_reference_mode_on_cuda_matches_the_cpu(tmp_path, scene):
    cloud, _ = scene
    gpu, _ = _dsm(tmp_path, cloud, "gpu_ref", device="cuda", mode="reference")
    cpu, _ = _dsm(tmp_path, cloud, "cpu_ref", device="cpu", mode="reference")
    # The same lattice of samples: equal except where a crossing sits within float noise of a sample.
    assert np.mean(np.abs(gpu - cpu) > 1e-3) < 0.01


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_stays_close_to_float32(tmp_path, scene, precision):
    cloud, _ = scene
    half, _ = _dsm(tmp_path, cloud, precision, device="cuda", precision=precision)
    full, _ = _dsm(tmp_path, cloud, "fp32", device="cuda")
    assert np.nanmedian(np.abs(half - full)) < 0.05


def test_batch_size_follows_free_memory():
    device = torch.device("cuda:0")
    free, _ = torch.cuda.mem_get_info(device)
    size = auto_batch_size(device)
    assert size >= MIN_BATCH and size * 4096 <= free
