"""Multi-process training through ``torchrun`` (DistributedDataParallel).

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; when WORLD_SIZE > 1
we join the process group (NCCL on CUDA, gloo on CPU) and every rank trains on its own shard of
each epoch. A single process needs none of this and runs with a trivial context.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from implicity.core.errors import ImplicityError
from implicity.core.reconstruct.device import resolve_device


@dataclass(frozen=True)
class DistContext:
    """Who this process is in the job, and which device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_device(name: str, local_rank: int = 0) -> torch.device:
    """The device this rank trains on: core's :func:`~implicity.core.reconstruct.device.resolve_device`
    (the one resolver of ``auto``/``cpu``/``cuda``/``cuda:N`` and its errors), except that ``auto`` and
    ``cuda`` give each local rank its own GPU under torchrun."""
    device, _reason = resolve_device(name)
    if device.type == "cuda" and (name or "auto").strip().lower() in ("auto", "cuda"):
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def init_distributed(device_name: str) -> DistContext:
    """Join the torchrun process group if the environment asks for one, else run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = rank_device(device_name, local_rank)
    if world_size <= 1:
        return DistContext(device=device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    available = dist.is_nccl_available() if backend == "nccl" else dist.is_gloo_available()
    if not available:
        raise ImplicityError(f"Distributed training needs the {backend} backend, which this PyTorch lacks.")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=local_rank, device=device, backend=backend)


def shutdown_distributed(ctx: DistContext, wait_for_others: bool = True) -> None:
    """Leave the process group (only if we joined one).

    After a run that ended normally, the ranks first meet at a barrier: a rank that tore its gloo
    connections down while a peer was still finishing its last collective aborted that peer's
    process ("terminate called without an active exception": 2 of 30 runs of the two-rank test on a
    loaded 2-core CPU). After an error there is no barrier, since a peer that died would keep it waiting
    for the backend's timeout."""
    if ctx.enabled and dist.is_initialized():
        if wait_for_others:
            dist.barrier()
        dist.destroy_process_group()


def shard_indices(order: list[int], ctx: DistContext) -> list[int]:
    """This rank's part of an epoch order; padded by wrapping so every rank gets as many samples."""
    if not ctx.enabled or not order:
        return list(order)
    per_rank = -(-len(order) // ctx.world_size)
    padded = (order * (1 + per_rank * ctx.world_size // len(order)))[: per_rank * ctx.world_size]
    return padded[ctx.rank::ctx.world_size]


def mean_across_ranks(value: float, ctx: DistContext) -> float:
    """Average a Python float over the ranks (for logging one loss per step)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank if it is true on one (ranks must agree when to stop)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_to_all(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` in rank order (per-rank RNG states and partial gradients)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_from_main(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank (validation results, the stop decision)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if ctx.enabled:
        dist.barrier()
