"""Local implicit decoder: occupancy of a query from the features sampled under it."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import ResnetBlockFC


def sample_plane(features: torch.Tensor, xy: torch.Tensor, cell_centres: bool = False) -> torch.Tensor:
    """Bilinear read of (B, C, H, W) features at normalised xy (B, M, 2) → (B, M, C).

    Row index grows with y, column with x; border padding keeps queries just outside the patch on
    the edge values. By default (the reference's convention, align_corners=True) [0, 1] lies on the
    first / last cell centres, although points are scattered into cells of width 1 / R: a cell's
    centre is read up to half a cell away from where its points lie (the offset is 0 at the patch
    centre and ± half a cell at its sides), and a pixel centre between two cells reads their mean.
    ``cell_centres`` (``plane_sampling: centres``) puts [0, 1] on the outer cell edges
    (align_corners=False): a point reads the cell it was scattered into, and the DSM's pixel
    centres, when they coincide with the cells, read one cell each.
    """
    grid = (2.0 * xy - 1.0).unsqueeze(1).to(features.dtype)
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=not cell_centres)
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
        """Query (B, M, 3), sampled features c (B, M, feature_dim) → (B, M, n_classes)."""
        net = self.fc_p(query.to(c.dtype))
        for fc_c, block in zip(self.fc_c, self.blocks):
            net = block(net + fc_c(c))
        return self.fc_out(F.relu(net))

    def columns(self, xy: torch.Tensor, c: torch.Tensor) -> DecoderColumns:
        """The part of :meth:`forward` that does not depend on the query's height, for P columns:
        xy (P, 2) and their sampled features c (P, feature_dim)."""
        w = self.fc_p.weight.to(c.dtype)
        base = xy.to(c.dtype) @ w[:, :2].T + self.fc_p.bias.to(c.dtype)
        per_block = torch.stack([fc_c(c) for fc_c in self.fc_c])  # (n_blocks, P, hidden)
        return DecoderColumns(self, base, w[:, 2], per_block)


class DecoderColumns:
    """A decoder bound to P pixel columns: a query is (column, height) and costs only the residual
    blocks. Why: the DSM search asks ~5–30 heights per pixel, and the feature sampling and the
    feature projections (``fc_c``), 40 % of the decoder's work, are the same for all of them."""

    def __init__(self, decoder: LocalDecoder, base: torch.Tensor, w_z: torch.Tensor, per_block: torch.Tensor) -> None:
        self.decoder, self.base, self.w_z, self.per_block = decoder, base, w_z, per_block

    def __call__(self, columns: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Columns (Q,) indices, z (Q, K) heights as the decoder sees them → (Q, K, n_classes)."""
        net = torch.addcmul(self.base[columns][:, None, :], z.to(self.base.dtype)[..., None], self.w_z)
        per_block = self.per_block[:, columns].unsqueeze(2)  # one gather: (n_blocks, Q, 1, hidden)
        for i, block in enumerate(self.decoder.blocks):
            net = block(net + per_block[i])
        return self.decoder.fc_out(F.relu(net))
