"""2D U-Net over the xy feature plane: gives every plane cell context from a wide neighbourhood."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DownConv(nn.Module):
    """Two 3×3 conv + ReLU; then a 2×2 max-pool except at the deepest level."""

    def __init__(self, in_ch: int, out_ch: int, pooling: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.pooling = pooling

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        skip = x
        if self.pooling:
            x = F.max_pool2d(x, 2, 2)
        return x, skip


class UpConv(nn.Module):
    """2×2 transposed conv up, concatenate with the skip, two 3×3 conv + ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.upconv = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)
        self.conv1 = nn.Conv2d(2 * out_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)

    def concatenated_inputs(self) -> dict[str, int]:
        """Layers whose input is a concatenation of equal parts (for growth.py)."""
        return {"conv1": 2}

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.upconv(x), skip), dim=1)
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class UNet(nn.Module):
    """U-Net with ``depth`` levels of ``start_filters · 2^i`` channels and a 1×1 output conv.

    The input side must be divisible by 2^(depth − 1).
    """

    def __init__(self, out_channels: int, in_channels: int, depth: int = 5, start_filters: int = 32) -> None:
        super().__init__()
        self.depth = depth
        widths = [start_filters * 2 ** i for i in range(depth)]
        self.down_convs = nn.ModuleList(
            DownConv(in_channels if i == 0 else widths[i - 1], widths[i], pooling=i < depth - 1)
            for i in range(depth))
        self.up_convs = nn.ModuleList(UpConv(widths[i], widths[i - 1]) for i in range(depth - 1, 0, -1))
        self.conv_final = nn.Conv2d(widths[0], out_channels, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.down_convs:
            x, skip = down(x)
            skips.append(skip)
        for i, up in enumerate(self.up_convs):
            x = up(skips[-(i + 2)], x)
        return self.conv_final(x)
