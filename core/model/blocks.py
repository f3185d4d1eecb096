"""The fully connected residual block shared by the point encoder and the decoder."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResnetBlockFC(nn.Module):
    """x + fc_1(relu(fc_0(relu(x)))), with a bias-free linear shortcut when the width changes.

    ``fc_1`` starts at zero so that every block is the identity (or its shortcut) at
    initialisation, which keeps deep stacks trainable from the first step.
    """

    def __init__(self, size_in: int, size_out: int | None = None, size_h: int | None = None) -> None:
        super().__init__()
        size_out = size_in if size_out is None else size_out
        size_h = min(size_in, size_out) if size_h is None else size_h
        self.fc_0 = nn.Linear(size_in, size_h)
        self.fc_1 = nn.Linear(size_h, size_out)
        self.shortcut = nn.Linear(size_in, size_out, bias=False) if size_in != size_out else None
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = self.fc_1(F.relu(self.fc_0(F.relu(x))))
        return (x if self.shortcut is None else self.shortcut(x)) + dx
