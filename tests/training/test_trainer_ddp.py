"""DistributedDataParallel on 2 CPU processes (gloo): ranks stay identical, resume stays exact."""
from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from implicity.core.errors import CancelledError

from ..helpers.tiny_trainer import TinyNet, TinyPatches, tiny_config, tiny_export

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, root: str) -> None:
    """One torchrun-like rank: an uninterrupted run, then an interrupted one resumed."""
    from implicity.training.trainer.distributed import init_distributed, shutdown_distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    ended = False
    try:
        base = Path(root)
        for name in ("full", "cut", "resumed"):
            t = _ddp_trainer(base / ("full" if name == "full" else "cut"), ctx)
            if name == "full":
                t.fit()
            elif name == "cut":
                try:
                    t.fit(stop_after_samples=3)       # mid accumulation group (2 per rank per step)
                except CancelledError:
                    pass
            else:
                t.fit(resume=True)
            torch.save(t.module.state_dict(), base / f"{name}_rank{rank}.pt")
        ended = True
    finally:
        shutdown_distributed(ctx, wait_for_others=ended)


def _ddp_trainer(out: Path, ctx):
    from implicity.training.trainer import Trainer, seed_everything

    config = tiny_config(out, optim={"accumulate": 4}, schedule={"max_steps": 5, "val_every": 5})
    seed_everything(config.seed)
    return Trainer(config, TinyNet(), {"tiny": True}, TinyPatches(n=5, seed=config.seed),
                   TinyPatches(n=2, augment=False, seed=99), ctx=ctx, progress_bar=False,
                   tensorboard=False, export_fn=tiny_export)


def _losses(path: Path) -> list[str]:
    with open(path / "train_log.csv", newline="") as fh:
        return [r["loss"] for r in csv.DictReader(fh)]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")
def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for name in ("full", "resumed"):
        w0 = torch.load(tmp_path / f"{name}_rank0.pt", weights_only=True)
        w1 = torch.load(tmp_path / f"{name}_rank1.pt", weights_only=True)
        assert all(torch.equal(w0[k], w1[k]) for k in w0), f"{name}: ranks diverged"
    full = torch.load(tmp_path / "full_rank0.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut_rank0.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed_rank0.pt", weights_only=True)
    assert not all(torch.equal(full[k], cut[k]) for k in full)          # the cut run stopped early
    assert all(torch.equal(full[k], resumed[k]) for k in full)          # ... and resumed exactly
    assert _losses(tmp_path / "full") == _losses(tmp_path / "cut") and len(_losses(tmp_path / "full")) == 5
