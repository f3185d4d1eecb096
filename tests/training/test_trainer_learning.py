"""A few optimizer steps on a tiny dataset reduce the loss, and validation sees the improvement."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from ..helpers.tiny_trainer import TinyPatches, make_trainer


def test_a_few_steps_reduce_the_loss(tmp_path: Path) -> None:
    trainer = make_trainer(
        tmp_path, dataset=TinyPatches(n=4, n_query=512, seed=3),
        optim={"lr_base": 5e-3, "lr_max": 5e-3, "accumulate": 2},
        schedule={"max_steps": 40, "val_every": 40, "checkpoint_every": 40},
        validation={"select_on": "iou"})
    before = trainer.validate()
    result = trainer.fit()
    with open(tmp_path / "train_log.csv", newline="") as fh:
        losses = np.array([float(r["loss"]) for r in csv.DictReader(fh)])
    assert len(losses) == 40 and np.all(np.isfinite(losses))
    assert losses[-5:].mean() < 0.7 * losses[:5].mean(), losses
    after = result["last_metrics"]
    assert after["val_loss"] < before.val_loss and after["iou"] > before.iou
    assert after["dsm_medae_m"] is not None and 0 < after["dsm_completeness"] <= 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_with_mixed_precision_trains_and_resumes(tmp_path: Path) -> None:
    from implicity.core.errors import CancelledError

    trainer = make_trainer(tmp_path, device="cuda", amp=True, schedule={"max_steps": 6})
    assert trainer.amp and trainer.device.type == "cuda"
    with pytest.raises(CancelledError):
        trainer.fit(stop_after_samples=7)
    result = make_trainer(tmp_path, device="cuda", amp=True, schedule={"max_steps": 6}).fit(resume=True)
    with open(tmp_path / "train_log.csv", newline="") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert result["steps"] == 6 and len(losses) == 6 and np.all(np.isfinite(losses))
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert state["scaler"] and state["ranks"][0]["rng"]["cuda"]
