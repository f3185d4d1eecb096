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


def test_bilateral_prior_on_cuda_matches_the_cpu():
    """The GPU sums the refinement's disc in one unfolded tensor, the CPU offset by offset."""
    from implicity.core.model.prior import surface_prior

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 20000, 2, generator=g)
    z = 0.3 * xy[..., 0] + (xy[..., 1] > 0.5) * 2.0 + 0.05 * torch.randn(2, 20000, generator=g)
    pts = torch.cat([xy, z.unsqueeze(-1)], -1)
    cpu = surface_prior(pts, 128, 5.0, 3, refine_radius=4.0, noise_floor=0.01)
    gpu = surface_prior(pts.cuda(), 128, 5.0, 3, refine_radius=4.0, noise_floor=0.01).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=0)


def test_windows_prepared_ahead_on_cuda_give_the_same_dsm(tmp_path, scene):
    cloud, _ = scene
    ahead, result = _dsm(tmp_path, cloud, "ahead", device="cuda")           # the GPU default: 2 ahead
    inline, _ = _dsm(tmp_path, cloud, "inline", device="cuda", prefetch=0)
    assert result.device.startswith("cuda")
    # Equal up to CUDA's atomic float sums (scatter_add), which run in no fixed order.
    assert np.nanmedian(np.abs(ahead - inline)) < 1e-4 and np.mean(np.abs(ahead - inline) > 1e-3) < 0.005
