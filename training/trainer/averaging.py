"""Exponential moving average of the weights (Polyak averaging), for ``optim.ema_decay``.

Why: with batch-1 samples, gradient accumulation and a cyclic learning rate, the weights of any one
step carry the noise of the last few updates; an average over the last ~1 / (1 − decay) steps sits
nearer the middle of the basin the run is in, which usually validates and transfers at least as well.
The average lives in a copy of the network (same parameter names), so validation and export use it
like the trained network, and the resume checkpoint stores it as a plain state dict.
"""
from __future__ import annotations

import copy

import torch

#: Early steps average with a smaller decay, ``(1 + step) / (WARMUP + step)``, so that the first
#: updates are not frozen under the starting weights (TensorFlow's ``num_updates`` rule).
WARMUP = 10


class WeightAverage:
    """An exponential moving average of ``module``'s floating-point parameters and buffers."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.module = copy.deepcopy(module)
        self.module.requires_grad_(False)
        self.module.eval()

    def decay_at(self, step: int) -> float:
        """The decay of the update after optimizer step ``step`` (1-based)."""
        return min(self.decay, (1.0 + step) / (WARMUP + step))

    @torch.no_grad()
    def update(self, trained: torch.nn.Module, step: int) -> None:
        """Move the average towards ``trained``'s weights after optimizer step ``step``."""
        weight = 1.0 - self.decay_at(step)
        current = trained.state_dict()
        for name, average in self.module.state_dict().items():
            value = current[name].detach()
            if average.is_floating_point():
                average.lerp_(value.to(average.dtype), weight)
            else:
                average.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
