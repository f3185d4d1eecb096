"""Stacked-hourglass image encoder (the HGFilter design of PIFu) for 1 or 2 ortho-images.

Module and attribute names follow the reference so that its state dicts load unchanged. Blocks
whose input and output widths match keep an unused ``bn4`` norm (the reference registers it in
every block); those parameters are frozen (``requires_grad=False``) because nothing reads them,
which also keeps DistributedDataParallel from waiting for their gradients.
"""
from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import functional as F


def _sub(module: nn.Module, name: str) -> nn.Module:
    """The child module registered as ``name`` (the reference's layer names are built at run time)."""
    return cast(nn.Module, module._modules[name])


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=1, padding=1, bias=False)


class ConvBlock(nn.Module):
    """Pre-activation residual block: three 3×3 convs (out/2, out/4, out/4) concatenated to ``out``."""

    def __init__(self, in_ch: int, out_ch: int, groups: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch // 2)
        self.conv2 = _conv3x3(out_ch // 2, out_ch // 4)
        self.conv3 = _conv3x3(out_ch // 4, out_ch // 4)
        self.bn1 = nn.GroupNorm(groups, in_ch)
        self.bn2 = nn.GroupNorm(groups, out_ch // 2)
        self.bn3 = nn.GroupNorm(groups, out_ch // 4)
        self.bn4 = nn.GroupNorm(groups, in_ch)
        if in_ch != out_ch:
            self.downsample: nn.Module | None = nn.Sequential(
                self.bn4, nn.ReLU(True), nn.Conv2d(in_ch, out_ch, 1, stride=1, bias=False))
        else:
            self.downsample = None
            self.bn4.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat((out1, out2, out3), dim=1) + residual


class HourGlass(nn.Module):
    """Recursive hourglass: full-resolution branch + (average-pool, recurse, bicubic upsample)."""

    def __init__(self, depth: int, channels: int, groups: int) -> None:
        super().__init__()
        self.depth = depth
        self._build(depth, channels, groups)

    def _build(self, level: int, channels: int, groups: int) -> None:
        self.add_module(f"b1_{level}", ConvBlock(channels, channels, groups))
        self.add_module(f"b2_{level}", ConvBlock(channels, channels, groups))
        if level > 1:
            self._build(level - 1, channels, groups)
        else:
            self.add_module(f"b2_plus_{level}", ConvBlock(channels, channels, groups))
        self.add_module(f"b3_{level}", ConvBlock(channels, channels, groups))

    def _run(self, level: int, x: torch.Tensor) -> torch.Tensor:
        up1 = _sub(self, f"b1_{level}")(x)
        low = _sub(self, f"b2_{level}")(F.avg_pool2d(x, 2, stride=2))
        if level > 1:
            low = self._run(level - 1, low)
        else:
            low = _sub(self, f"b2_plus_{level}")(low)
        low = _sub(self, f"b3_{level}")(low)
        return up1 + F.interpolate(low, scale_factor=2, mode="bicubic", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.depth, x)


class HGFilter(nn.Module):
    """(B, n_images, S, S) → (B, out_dim, S/4, S/4), the last stack's output, in raster row order."""

    def __init__(self, in_channels: int, n_stacks: int = 4, hourglass_depth: int = 2, out_dim: int = 32,
                 stem_channels: int = 64, channels: int = 256, groups: int = 32) -> None:
        super().__init__()
        self.n_stacks = n_stacks
        wide = 2 * stem_channels
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3)
        self.bn1 = nn.GroupNorm(groups, stem_channels)
        self.conv2 = ConvBlock(stem_channels, wide, groups)
        self.conv3 = ConvBlock(wide, wide, groups)
        self.conv4 = ConvBlock(wide, channels, groups)
        for i in range(n_stacks):
            self.add_module(f"m{i}", HourGlass(hourglass_depth, channels, groups))
            self.add_module(f"top_m_{i}", ConvBlock(channels, channels, groups))
            self.add_module(f"conv_last{i}", nn.Conv2d(channels, channels, 1))
            self.add_module(f"bn_end{i}", nn.GroupNorm(groups, channels))
            self.add_module(f"l{i}", nn.Conv2d(channels, out_dim, 1))
            if i < n_stacks - 1:
                self.add_module(f"bl{i}", nn.Conv2d(channels, channels, 1))
                self.add_module(f"al{i}", nn.Conv2d(out_dim, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.avg_pool2d(self.conv2(x), 2, stride=2)
        previous = self.conv4(self.conv3(x))
        out = previous
        for i in range(self.n_stacks):
            ll = _sub(self, f"top_m_{i}")(_sub(self, f"m{i}")(previous))
            ll = F.relu(_sub(self, f"bn_end{i}")(_sub(self, f"conv_last{i}")(ll)))
            out = _sub(self, f"l{i}")(ll)
            if i < self.n_stacks - 1:
                previous = previous + _sub(self, f"bl{i}")(ll) + _sub(self, f"al{i}")(out)
        return out
