"""``--resume`` continues bit-exactly: run(N) == run(k) + resume(N - k), losses compared exactly.

The tiny dataset has 5 patches and accumulation is 3 samples per step, so accumulation groups
straddle epoch boundaries; the interruptions fall mid-group (partial gradients must be restored)
and on a group boundary, and one comes from a real SIGTERM delivered while a sample loads.
"""
from __future__ import annotations

import csv
import signal
from pathlib import Path

import pytest
import torch

from implicity.core.errors import CancelledError
from implicity.training.trainer.loop import BEST_FILE, RESUME_FILE

from ..helpers.tiny_trainer import TinyPatches, final_weights, make_trainer


def _log(path: Path, name: str = "train_log.csv") -> list[dict[str, str]]:
    with open(path / name, newline="") as fh:
        return list(csv.DictReader(fh))


def _losses(path: Path) -> list[tuple[int, float, float]]:
    return [(int(r["step"]), float(r["loss"]), float(r["lr"])) for r in _log(path)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full")
    make_trainer(out).fit()
    return out


@pytest.mark.parametrize("stop_after", [7, 9])     # 7: mid accumulation group; 9: right after step 3
def test_resume_equals_uninterrupted(uninterrupted: Path, tmp_path: Path, stop_after: int) -> None:
    with pytest.raises(CancelledError, match="--resume"):
        make_trainer(tmp_path).fit(stop_after_samples=stop_after)
    assert (tmp_path / RESUME_FILE).exists()
    assert len(_losses(tmp_path)) == stop_after // 3
    make_trainer(tmp_path).fit(resume=True)           # a fresh process would build everything anew

    full, resumed = _losses(uninterrupted), _losses(tmp_path)
    assert len(full) == 6
    assert resumed == full                             # exact float equality, step by step
    a, b = final_weights(uninterrupted), final_weights(tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    val_full, val_resumed = _log(uninterrupted, "val_log.csv"), _log(tmp_path, "val_log.csv")
    assert [r["iou"] for r in val_full] == [r["iou"] for r in val_resumed]


def test_sigterm_saves_and_resume_matches(uninterrupted: Path, tmp_path: Path) -> None:
    data = TinyPatches(seed=3, kill_at=(1, 2, int(signal.SIGTERM)))   # epoch 1, patch 2
    with pytest.raises(CancelledError, match="SIGTERM"):
        make_trainer(tmp_path, dataset=data).fit()
    state = torch.load(tmp_path / RESUME_FILE, weights_only=True)
    assert state["progress"]["epoch"] == 1 and 0 < state["progress"]["samples"] < 18
    make_trainer(tmp_path).fit(resume=True)
    assert _losses(tmp_path) == _losses(uninterrupted)
    a, b = final_weights(uninterrupted), final_weights(tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_outputs_and_extension(uninterrupted: Path, tmp_path: Path) -> None:
    import json

    summary = json.loads((uninterrupted / "run_summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 6 and summary["samples"] == 18
    assert summary["data"]["n_train_patches"] == 5 and len(summary["val_history"]) == 2
    assert summary["wall_time_s"] > 0 and summary["best"]["step"] in (3, 6)
    best = torch.load(uninterrupted / BEST_FILE, weights_only=True)
    assert best["training"]["best"]["metrics"]["iou"] == max(h["iou"] for h in summary["val_history"])
    # extending a finished run: same as training longer from the start
    make_trainer(tmp_path, schedule={"max_steps": 4}).fit()
    make_trainer(tmp_path).fit(resume=True)
    assert _losses(tmp_path) == _losses(uninterrupted)


def test_resume_with_loader_workers_matches(uninterrupted: Path, tmp_path: Path) -> None:
    """Worker processes load the samples: same data, same order, same losses."""
    with pytest.raises(CancelledError):
        make_trainer(tmp_path, data={"num_workers": 1}).fit(stop_after_samples=8)
    make_trainer(tmp_path, data={"num_workers": 1}).fit(resume=True)
    assert _losses(tmp_path) == _losses(uninterrupted)
