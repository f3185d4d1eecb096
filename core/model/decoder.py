"""Local implicit decoder: occupancy of a query from the features sampled under it."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import ResnetBlockFC


def sample_plane(features: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear read of (B, C, H, W) features at normalised xy (B, M, 2) → (B, M, C).

    Row index grows with y, column with x; align_corners=True puts [0, 1] on the first/last cell
    centres and border padding keeps queries just outside the patch on the edge values.
    """
    grid = (2.0 * xy - 1.0).unsqueeze(1).to(features.dtype)
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.squeeze(2).transpose(1, 2)


class LocalDecoder(nn.Module):
    """fc_p(query) refined by ``n_blocks`` residual blocks, each after adding fc_c[i](features)."""

    def __init__(self, feature_dim: int = 32, hidden_dim: int = 32, n_blocks: int = 5, n_classes: int = 1) -> None:
        super().__init__()
        self.fc_c = nn.ModuleList(nn.Linear(feature_dim, hidden_dim) for _ in range(n_blocks))
        self.fc_p = nn.Linear(3, hidden_dim)
        self.blocks = nn.ModuleList(ResnetBlockFC(hidden_dim) for _ in range(n_blocks))
        self.fc_out = nn.Linear(hidden_dim, n_classes)

    def forward(self, query: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """query (B, M, 3), sampled features c (B, M, feature_dim) → (B, M, n_classes)."""
        net = self.fc_p(query.to(c.dtype))
        for fc_c, block in zip(self.fc_c, self.blocks):
            net = block(net + fc_c(c))
        return self.fc_out(F.relu(net))
