"""Feeding samples to the network in a reproducible order.

The order of an epoch is a permutation drawn from (seed, epoch) alone, and the dataset is told the
epoch (``set_epoch``) so its augmentation can depend on (seed, epoch, index) alone. Nothing here
draws from the global RNGs, which is what lets a resumed run skip to the middle of an epoch and
see exactly the samples an uninterrupted run would have seen.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .distributed import DistContext, shard_indices


def epoch_order(n_samples: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The global sample order of one epoch, a pure function of (seed, epoch)."""
    if not shuffle:
        return list(range(n_samples))
    return np.random.default_rng([seed, epoch]).permutation(n_samples).tolist()


def rank_epoch_order(n_samples: int, seed: int, epoch: int, ctx: DistContext, shuffle: bool = True) -> list[int]:
    """This rank's sample order in an epoch."""
    return shard_indices(epoch_order(n_samples, seed, epoch, shuffle), ctx)


def _to_tensor(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return value


def collate_one(sample: Mapping[str, Any]) -> dict[str, Any]:
    """One dataset sample as a batch of 1: arrays become tensors with a leading batch axis."""
    out: dict[str, Any] = {}
    for key, value in sample.items():
        value = _to_tensor(value)
        out[key] = value.unsqueeze(0) if isinstance(value, torch.Tensor) and key != "dsm" else value
    if "dsm" in out and isinstance(out["dsm"], torch.Tensor):
        out["dsm"] = out["dsm"].unsqueeze(0)
    return out


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the tensors of a batch to ``device``; an ``images`` entry with no images becomes None."""
    out = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    images = out.get("images")
    if isinstance(images, torch.Tensor) and images.ndim >= 2 and images.shape[1] == 0:
        out["images"] = None
    return out


class _Subset(Dataset):
    """The dataset seen through a list of indices (keeps ``set_epoch`` on the wrapped dataset)."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]


def _seed_worker(worker_id: int) -> None:
    """Seed numpy/random in a worker from torch's per-worker seed (itself from our fixed generator)."""
    import random

    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def iterate_samples(dataset: Any, indices: Sequence[int], epoch: int, seed: int, num_workers: int = 0,
                    pin_memory: bool = False) -> Iterable[dict[str, Any]]:
    """Batches of 1 for ``indices`` in order; deterministic with or without worker processes."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    if not indices:
        return iter(())
    generator = torch.Generator()
    generator.manual_seed(int(np.random.default_rng([seed, epoch, 7]).integers(2 ** 62)))
    return DataLoader(_Subset(dataset, indices), batch_size=None, shuffle=False, num_workers=num_workers,
                      collate_fn=collate_one, pin_memory=pin_memory, generator=generator,
                      worker_init_fn=_seed_worker if num_workers > 0 else None)


def iterate_validation(dataset: Any, limit: int | None, device: torch.device) -> Iterator[dict[str, Any]]:
    """Validation batches on ``device``, always the same (epoch 0, no shuffling)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for batch in iterate_samples(dataset, list(range(n)), epoch=0, seed=0):
        yield to_device(batch, device)
