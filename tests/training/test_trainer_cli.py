"""The trainer on real prepared patches (PatchDataset) and the ``implicity train`` command.

A three-patch prepared dataset (2 train, 1 val; 16 m patches at 1 m, ``write_block_patches``) is
written with the data package's own store, so these tests exercise the real sample layout and
normaliser end to end.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ..helpers.prepared import PATCH_M, write_block_patches
from ..helpers.tiny_trainer import TinyNet, tiny_config, tiny_export


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_block_patches(tmp_path_factory.mktemp("prepared"))


def test_trainer_on_prepared_patches(prepared: Path, tmp_path: Path) -> None:
    from implicity.training.data.dataset import PatchDataset
    from implicity.training.trainer import Trainer, seed_everything

    config = tiny_config(tmp_path, data={"root": str(prepared), "n_query": 512},
                         optim={"accumulate": 1, "lr_base": 1e-2, "lr_max": 1e-2},
                         schedule={"max_steps": 30, "val_every": 15, "checkpoint_every": 30})
    seed_everything(config.seed)
    train = PatchDataset(prepared, "train", n_query=512, augment=True, seed=config.seed)
    val = PatchDataset(prepared, "val", n_query=512, augment=False, seed=config.seed)
    result = Trainer(config, TinyNet(), {"tiny": True}, train, val, progress_bar=False,
                     tensorboard=False, export_fn=tiny_export).fit()
    assert result["steps"] == 30
    m = result["last_metrics"]
    assert 0 <= m["iou"] <= 1 and m["dsm_medae_m"] is not None and np.isfinite(m["dsm_medae_m"])
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["data"]["manifest"]["splits"] == {"train": 2, "val": 1, "test": 0}
    assert "patches" not in summary["data"]["manifest"]
    final = torch.load(tmp_path / "final.pt", weights_only=True)
    assert final["training"]["steps"] == 30 and final["training"]["data"]["n_train_patches"] == 2


REPO = Path(__file__).resolve().parents[2]
LITE_MODEL = REPO / "core" / "model" / "configs" / "implicity_0_lite.yaml"


def _flatten_keys(obj: object) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _flatten_keys(v)}
    return set()


def test_implicity_train_command_end_to_end(prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`implicity train` with the shipped lite config: trains, refuses to clobber, resumes/extends,
    and writes final/best checkpoints that the network's own loader reads."""
    model_pkg = pytest.importorskip("implicity.core.model")
    if not LITE_MODEL.is_file():
        pytest.skip(f"{LITE_MODEL} not available")
    from implicity.cli import main

    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"inherit_from: {REPO / 'training' / 'configs' / 'implicity_0_lite.yaml'}\n"
        f"out_dir: {tmp_path / 'run'}\nseed: 1\n"
        f"model: {{inherit_from: {LITE_MODEL}, patch_size: {PATCH_M}}}\n"  # the fixture's 16 m patches
        "data: {n_query: 256, n_query_val: 256, num_workers: 0}\n"
        "optim: {accumulate: 1}\n"
        "schedule: {max_steps: 2, log_every: 1, val_every: 2, checkpoint_every: 1}\n"
        "validation: {refinements: 1, coarse_step_m: 8.0, z_min_m: -16.0, z_max_m: 16.0}\n")
    assert main(["train", str(cfg), "--data", str(prepared), "--quiet"]) == 0
    assert "Final model" in capsys.readouterr().out
    assert main(["train", str(cfg), "--data", str(prepared), "--quiet"]) == 2      # would clobber the run
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(cfg), "--data", str(prepared), "--quiet", "--resume", "--max-steps", "3"]) == 0

    run = tmp_path / "run"
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["steps"] == 3 and summary["status"] == "finished"
    model, _config = model_pkg.load_model(run / "final.pt", device="cpu")
    assert sum(p.numel() for p in model.parameters()) > 0
    model_pkg.load_model(run / "best.pt", device="cpu")
    raw = torch.load(run / "final.pt", map_location="cpu", weights_only=True)
    assert {"wall_time_s", "val_history", "config_file"} <= _flatten_keys(raw)


def _fake_train_split(n_images: int, patch_size: float = 64.0, image_size: int = 128) -> object:
    from types import SimpleNamespace

    manifest = {"n_images": n_images, "patch_size": patch_size, "image_size": image_size}
    return SimpleNamespace(manifest=manifest, z_std=12.5, image_mean=68.3, image_std=54.4)


def test_model_config_takes_the_prepared_data_normalisation() -> None:
    """Inference must normalise like training: the exported config carries the data's z_std and
    image statistics (8-bit orthos), not the reference's panchromatic DN statistics."""
    from implicity.core.model import load_model_config
    from implicity.training.trainer.session import align_model_config

    mono = load_model_config("implicity_mono_lite.yaml")
    aligned = align_model_config(mono, _fake_train_split(1), "train.yaml")
    assert (aligned.z_std, aligned.image_mean, aligned.image_std) == (12.5, 68.3, 54.4)
    assert aligned.hidden_dim == mono.hidden_dim and mono.image_mean != 68.3  # a copy, the rest kept


@pytest.mark.parametrize("split, expected", [
    (_fake_train_split(2), "takes 1 ortho-image"),
    (_fake_train_split(1, patch_size=32.0), "patch_size 64 m"),
    (_fake_train_split(1, image_size=64), "image_size 128 px"),
])
def test_model_and_data_mismatch_is_refused(split: object, expected: str) -> None:
    from implicity.core.errors import InputError
    from implicity.core.model import load_model_config
    from implicity.training.trainer.session import align_model_config

    with pytest.raises(InputError, match=f"train.yaml: model and prepared data do not match: .*{expected}"):
        align_model_config(load_model_config("implicity_mono_lite.yaml"), split, "train.yaml")
