"""``optim.ema_decay``: the exported and validated weights are the running average of the trained
ones, the resume checkpoint carries the average (an interrupted run ends where an uninterrupted one
does), and a bad decay is refused when the config loads."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from implicity.core.errors import CancelledError, InputError
from implicity.training.trainer.averaging import WeightAverage
from implicity.training.trainer.loop import RESUME_FILE, snapshot_name

from ..helpers.tiny_trainer import TinyNet, final_weights, make_trainer, tiny_config

EMA = {"ema_decay": 0.9}


def test_average_follows_the_tensorflow_rule_with_warm_up() -> None:
    net = TinyNet()
    average = WeightAverage(net, decay=0.9)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    average.update(net, step=1)                      # decay min(0.9, 2 / 11)
    w = 1.0 - 2.0 / 11.0
    for name, value in average.state_dict().items():
        assert torch.allclose(value, start[name] + w, atol=1e-6), name
    assert average.decay_at(1000) == 0.9
    assert not any(p.requires_grad for p in average.module.parameters())


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ema")
    make_trainer(out, optim=EMA).fit()
    return out


def test_final_weights_are_the_average_and_the_resume_state_keeps_both(averaged_run: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    make_trainer(plain).fit()
    state = torch.load(averaged_run / RESUME_FILE, weights_only=True)
    trained, averaged, final = state["model"], state["ema"], final_weights(averaged_run)
    assert all(torch.equal(final[k], averaged[k]) for k in final)
    # the trained weights are those of the run without averaging: averaging never feeds back
    assert all(torch.equal(trained[k], final_weights(plain)[k]) for k in trained)
    assert any(not torch.allclose(trained[k], averaged[k]) for k in trained)
    assert torch.load(plain / RESUME_FILE, weights_only=True)["ema"] is None


def test_interrupted_averaged_run_resumes_to_the_same_average(averaged_run: Path, tmp_path: Path) -> None:
    with pytest.raises(CancelledError):
        make_trainer(tmp_path, optim=EMA).fit(stop_after_samples=7)
    make_trainer(tmp_path, optim=EMA).fit(resume=True)
    a, b = final_weights(averaged_run), final_weights(tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_a_run_saved_without_an_average_starts_one(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CancelledError):
        make_trainer(tmp_path).fit(stop_after_samples=9)
    make_trainer(tmp_path, optim=EMA).fit(resume=True)
    assert "holds no averaged weights" in capsys.readouterr().err
    assert torch.load(tmp_path / RESUME_FILE, weights_only=True)["ema"] is not None


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5, "high", True])
def test_a_bad_decay_is_refused_with_the_option_name(tmp_path: Path, decay: object) -> None:
    with pytest.raises(InputError, match=r"tiny\.yaml.*optim\.ema_decay"):
        tiny_config(tmp_path, optim={"ema_decay": decay})


def test_snapshots_hold_the_averaged_network_at_their_step(tmp_path: Path) -> None:
    """``schedule.snapshot_every``: a run's trajectory, exported as best.pt and final.pt are, to score later."""
    make_trainer(tmp_path, optim=EMA, schedule={"snapshot_every": 2}).fit()
    assert sorted(p.name for p in tmp_path.glob("step*.pt")) == [snapshot_name(s) for s in (2, 4, 6)]
    last = torch.load(tmp_path / snapshot_name(6), weights_only=True)
    assert all(torch.equal(last["model"][k], v) for k, v in final_weights(tmp_path).items())
    early = torch.load(tmp_path / snapshot_name(2), weights_only=True)
    assert early["training"]["steps"] == 2
    assert any(not torch.equal(early["model"][k], v) for k, v in last["model"].items())


def test_a_run_without_snapshot_every_writes_none(averaged_run: Path) -> None:
    assert not list(averaged_run.glob("step*.pt"))


@pytest.mark.parametrize("every", [-1, 2.5, "often", True])
def test_a_bad_snapshot_interval_is_refused_with_the_option_name(tmp_path: Path, every: object) -> None:
    with pytest.raises(InputError, match=r"tiny\.yaml.*schedule\.snapshot_every"):
        tiny_config(tmp_path, schedule={"snapshot_every": every})
