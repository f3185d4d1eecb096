"""Unit tests of the trainer's parts (config, loss, RNG state, logs, patch-DSM search, CLI)."""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from implicity.core.errors import InputError
from implicity.training.trainer import checkpointing as ckpt
from implicity.training.trainer.config import ValidationConfig, load_train_config
from implicity.training.trainer.logs import CsvLog
from implicity.training.trainer.loss import weighted_bce_with_logits

from ..helpers.tiny_trainer import DSM_RES, Z_STD, surface_height


def test_config_inheritance_merges_and_resolves_paths(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(
        "model: models/m.yaml\ndata: {root: prepared, n_query: 100}\noptim: {accumulate: 64, lr_max: 0.001}\n")
    (tmp_path / "sub" / "child.yaml").write_text(
        "inherit_from: ../base.yaml\nname: child\noptim: {accumulate: 8}\nschedule: {max_steps: 5}\n")
    c = load_train_config(tmp_path / "sub" / "child.yaml")
    assert (c.name, c.optim.accumulate, c.optim.lr_max, c.data.n_query) == ("child", 8, 0.001, 100)
    assert c.data.root == str((tmp_path / "prepared").resolve())
    assert c.model == str((tmp_path / "models" / "m.yaml").resolve())
    assert c.schedule.max_steps == 5 and c.source == str((tmp_path / "sub" / "child.yaml").resolve())


def test_config_rejects_unknown_options_and_cycles(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("model: m.yaml\noptim: {acumulate: 3}\n")
    with pytest.raises(InputError, match=r"\[optim\].*acumulate"):
        load_train_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("inherit_from: c.yaml\n")
    (tmp_path / "c.yaml").write_text("inherit_from: b.yaml\n")
    with pytest.raises(InputError, match="cycle"):
        load_train_config(tmp_path / "b.yaml")
    with pytest.raises(InputError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")


def test_weighted_bce_weights_and_reductions() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    occ = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    weight = torch.tensor([[1.0, 0.5, 0.0, 1.0]])
    per = F.binary_cross_entropy_with_logits(logits, occ, reduction="none")
    expected_sum = float((per * weight).sum())
    assert math.isclose(float(weighted_bce_with_logits(logits, occ, weight)), expected_sum / 4, rel_tol=1e-6)
    assert math.isclose(float(weighted_bce_with_logits(logits, occ, weight, "weighted_mean")),
                        expected_sum / 2.5, rel_tol=1e-6)
    # a query with weight 0 (outside the validity mask) has no gradient
    x = logits.clone().requires_grad_(True)
    weighted_bce_with_logits(x, occ, weight).backward()
    assert x.grad[0, 2] == 0 and x.grad[0, 0] != 0


def test_rng_state_round_trip_through_weights_only_load(tmp_path: Path) -> None:
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.normal()  # leaves a cached gaussian in the numpy state
    state = ckpt.capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    ckpt.save_train_state(tmp_path / "s.ckpt", {"rng": state})
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    ckpt.restore_rng_state(ckpt.load_train_state(tmp_path / "s.ckpt")["rng"])
    again = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]


def test_load_train_state_rejects_foreign_files(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not an ImpliCity resume checkpoint"):
        ckpt.load_train_state(tmp_path / "other.pt")
    with pytest.raises(InputError, match="no resume checkpoint"):
        ckpt.load_train_state(tmp_path / "none.ckpt")


def test_csv_log_truncates_rows_after_the_resumed_step(tmp_path: Path) -> None:
    log = CsvLog(tmp_path / "log.csv", ["step", "loss"])
    for step in range(1, 6):
        log.append({"step": step, "loss": 1.0 / step})
    log.truncate_after(3)
    rows = log.rows()
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert float(rows[2]["loss"]) == 1.0 / 3       # repr() keeps floats exact


def test_patch_dsm_search_recovers_an_analytic_surface() -> None:
    from implicity.training.trainer.validation import search_patch_dsm

    def decode(q: torch.Tensor) -> torch.Tensor:   # occupied below the surface of patch 0
        x, y, z = q[..., 0].numpy(), q[..., 1].numpy(), q[..., 2].numpy()
        return torch.as_tensor(surface_height(0, x, y) - z)

    cfg = ValidationConfig(z_min_m=-10, z_max_m=30, coarse_step_m=4.0, refinements=3)
    est = search_patch_dsm(decode, DSM_RES, Z_STD, cfg, torch.device("cpu")).numpy()
    centres = (np.arange(DSM_RES) + 0.5) / DSM_RES
    gy, gx = np.meshgrid(1 - centres, centres, indexing="ij")
    final_step = 4.0 / 4 ** 3 / Z_STD
    err = surface_height(0, gx, gy) - est
    assert np.all(err >= -1e-6) and np.all(err <= final_step + 1e-6)


CONFIG_DIR = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.mark.parametrize("variant", ["0", "mono", "stereo"])
def test_shipped_train_configs_follow_the_reference_recipe(variant: str) -> None:
    full = load_train_config(CONFIG_DIR / f"implicity_{variant}.yaml")
    lite = load_train_config(CONFIG_DIR / f"implicity_{variant}_lite.yaml")
    o = full.optim
    assert (o.accumulate, o.lr_base, o.lr_max, o.step_size_up, o.step_size_down, o.lr_mode) == (
        64, 5e-5, 1e-3, 1000, 2500, "triangular2")
    assert full.validation.select_on == "iou" and full.data.augment and full.loss.use_weights
    assert full.model.endswith(f"implicity_{variant}.yaml") and lite.model.endswith(f"implicity_{variant}_lite.yaml")
    assert lite.device == "cpu" and lite.schedule.max_steps * lite.optim.accumulate < 10000
    assert lite.optim.lr_mode == "triangular2" and lite.data.root == full.data.root


RUNNABLE_CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if p.name != "base.yaml")  # base: the recipe


@pytest.mark.parametrize("path", RUNNABLE_CONFIGS, ids=lambda p: p.stem)
def test_every_training_config_in_the_repository_loads_with_its_options(path: Path) -> None:
    """A config that fails only when its run starts costs a user minutes: every one shipped reads
    (its degradation family and ortho augmentation parse on loading) and names a model config and
    initial weights that exist."""
    config = load_train_config(path)
    assert Path(config.model).is_file()
    sources = config.init_from if isinstance(config.init_from, list) else [config.init_from] * bool(config.init_from)
    assert all(Path(source).is_file() for source in sources)


def test_cli_reports_a_missing_config_as_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from implicity.cli import main

    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_run_logger_writes_csv_and_tensorboard_and_cuts_back_on_resume(tmp_path: Path) -> None:
    from implicity.training.trainer.logs import RunLogger

    log = RunLogger(tmp_path, enabled=True, total_steps=4, progress=False, tensorboard=True)
    for step in (1, 2, 3):
        log.train_step({"step": step, "epoch": 0, "samples": step, "loss": 0.5 / step, "lr": 1e-3, "elapsed_s": 0.1})
    log.validation({"step": 2, "epoch": 0, "iou": 0.5, "dsm_medae_m": 1.25, "dsm_completeness": 1.0,
                    "val_loss": 0.4, "is_best": 1})
    log.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    resumed = RunLogger(tmp_path, enabled=True, total_steps=4, start_step=1, progress=False, tensorboard=False)
    resumed.close()
    assert [r["step"] for r in CsvLog(tmp_path / "train_log.csv", RunLogger.TRAIN_FIELDS).rows()] == ["1"]
    assert CsvLog(tmp_path / "val_log.csv", RunLogger.VAL_FIELDS).rows() == []
