"""Training samples drawn with the degradation family, and fine-tuning from a checkpoint."""
from __future__ import annotations

import numpy as np
import pytest

from implicity.training.data import PatchDataset
from implicity.training.data.degrade import DegradationFamily

from ..helpers.prepared import prepare_tiny


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("prep"), n_images=1)


def test_degraded_samples_are_fresh_and_normalised_like_inference(prepared):
    ds = PatchDataset(prepared, "train", n_query=500, seed=0, degradation=DegradationFamily(),
                      image_normalization="per_image")
    stored = PatchDataset(prepared, "train", n_query=500, seed=0)
    a, b = ds[0], stored[0]
    assert a["points"].shape != b["points"].shape or not np.allclose(a["points"], b["points"])
    # z_shift is the median of the sample's own input cloud, as the engine's window shift
    assert abs(float(np.median(a["points"][:, 2]))) < 1e-6
    # the reference (in the same frame) lies near the points
    assert np.nanmedian(np.abs(a["dsm"])) < 1.0
    ds.set_epoch(1)
    c = ds[0]
    assert c["points"].shape != a["points"].shape or not np.allclose(c["points"], a["points"])
    # per-image normalisation: median 0 over the valid pixels of each image
    assert abs(float(np.median(a["images"][0]))) < 0.2


def test_init_from_copies_matching_weights(tmp_path):
    import torch

    from implicity.core.model import build_model, load_model_config, save_checkpoint
    from implicity.training.trainer.session import initialise_from

    torch.manual_seed(0)
    zero = build_model(load_model_config("implicity_0_robust_lite.yaml"))
    path = tmp_path / "zero.pt"
    save_checkpoint(path, zero, zero.config)
    mono = build_model(load_model_config("implicity_mono_robust_lite.yaml"))
    copied = initialise_from(mono, str(path), log=lambda m: None)
    assert copied == len([k for k in zero.state_dict()])
    for key, value in zero.state_dict().items():
        ours = key.replace("encoder.", "point_encoder.", 1) if key.startswith("encoder.") else key
        torch.testing.assert_close(mono.state_dict()[ours], value)


def test_patch_repeats_show_a_source_more_often_as_new_draws(prepared):
    from implicity.core.errors import InputError

    once = PatchDataset(prepared, "train", n_query=300, seed=0, degradation=DegradationFamily())
    n = len(once)
    by_name = PatchDataset(prepared, "train", n_query=300, seed=0, degradation=DegradationFamily(),
                           patch_repeats={"t": 3})
    by_type = PatchDataset(prepared, "train", n_query=300, seed=0, degradation=DegradationFamily(),
                           patch_repeats={"synthetic": 2})
    assert len(by_name) == 3 * n and len(by_type) == 2 * n
    assert [e["file"] for e in by_name.entries].count(once.entries[0]["file"]) == 3
    first, again = (by_name[i] for i in [j for j, e in enumerate(by_name.entries) if e is by_name.entries[0]][:2])
    assert first["points"].shape != again["points"].shape or not np.allclose(first["points"], again["points"])
    with pytest.raises(InputError, match="patch_repeats: 'lidar' is neither a source nor a source type"):
        PatchDataset(prepared, "train", patch_repeats={"lidar": 4})
    with pytest.raises(InputError, match="whole number of times ≥ 1"):
        PatchDataset(prepared, "train", patch_repeats={"t": 0})

