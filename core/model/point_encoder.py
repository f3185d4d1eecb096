"""Local-pool PointNet: per-point features pooled within xy cells, scattered onto a plane, U-Net."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import ResnetBlockFC
from .scatter import pool_and_gather, scatter_mean
from .unet import UNet


def plane_index(xy: torch.Tensor, resolution: int) -> torch.Tensor:
    """Flat cell index x + R·y of normalised (…, 2) coordinates on an R×R plane.

    Coordinates are clamped into the plane: a point exactly on the far edge (x = 1) falls into the
    last cell instead of indexing out of range, and points outside [0, 1] (callers should crop
    them; the reference does) count in the nearest edge cell rather than corrupting other cells.
    """
    cell = (xy * resolution).floor().clamp_(0, resolution - 1).long()
    return cell[..., 0] + resolution * cell[..., 1]


class LocalPoolPointNet(nn.Module):
    """Encodes a normalised point cloud (B, N, 3) into a feature plane (B, feature_dim, R, R).

    Plane row index = y cell (south → north), column = x cell, so that ``grid_sample`` with
    grid (2x − 1, 2y − 1) reads the cell of (x, y).
    """

    def __init__(self, hidden_dim: int = 32, feature_dim: int = 32, n_blocks: int = 5,
                 plane_resolution: int = 128, unet_depth: int = 5, unet_start_filters: int = 32,
                 context_channels: int = 0) -> None:
        super().__init__()
        self.resolution = plane_resolution
        self.feature_dim = feature_dim
        self.fc_pos = nn.Linear(3, 2 * hidden_dim)
        self.blocks = nn.ModuleList(ResnetBlockFC(2 * hidden_dim, hidden_dim) for _ in range(n_blocks))
        self.fc_c = nn.Linear(hidden_dim, feature_dim)
        self.unet = UNet(feature_dim, in_channels=feature_dim, depth=unet_depth, start_filters=unet_start_filters)
        # Extra per-cell inputs (``plane_context``) enter through a zero-initialised 3 × 3 conv added to
        # the pooled plane: a new model starts as the one without context, so existing weights can
        # initialise it, and the reference's state-dict names and shapes stay untouched.
        self.context_conv: nn.Conv2d | None = None
        if context_channels:
            conv = nn.Conv2d(context_channels, feature_dim, 3, padding=1)
            nn.init.zeros_(conv.weight)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            self.context_conv = conv

    def concatenated_inputs(self) -> dict[str, int]:
        """Layers whose input is a concatenation of equal parts (for growth.py): every block after
        the first reads [point feature, pooled feature]."""
        return {f"blocks.{i}.{layer}": 2 for i in range(1, len(self.blocks)) for layer in ("fc_0", "shortcut")}

    def point_features(self, points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Per-point features (B, N, feature_dim) before they are scattered onto the plane."""
        cells = self.resolution ** 2
        net = self.blocks[0](self.fc_pos(points))
        for block in self.blocks[1:]:
            pooled = pool_and_gather(net.transpose(1, 2), index, cells).transpose(1, 2)
            net = block(torch.cat([net, pooled], dim=2))
        return self.fc_c(F.relu(net))

    def forward(self, points: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The feature plane of ``points``; ``context`` (B, C, R, R) is required iff the encoder has
        ``context_channels``."""
        b = points.shape[0]
        r = self.resolution
        index = plane_index(points[..., :2], r)
        feats = self.point_features(points, index)
        plane = scatter_mean(feats.transpose(1, 2), index, r * r).reshape(b, self.feature_dim, r, r)
        if self.context_conv is not None:
            if context is None:
                raise ValueError("this point encoder was built with context channels: pass the context")
            plane = plane + self.context_conv(context.to(plane.dtype))
        return self.unet(plane)
