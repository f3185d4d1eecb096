"""Scatter max / mean of per-point features into plane cells.

torch-scatter is used when it is installed (it is what the reference uses); otherwise the same
reductions run on native ``Tensor.scatter_reduce``, so nothing has to be compiled. Both leave
empty cells at 0. Forward results are identical (means up to float summation order); gradients of
a max differ only for exact ties (torch-scatter sends the gradient to one argmax, native amax
shares it between the tied points).
"""
from __future__ import annotations

import torch

try:  # optional accelerated kernels
    import torch_scatter as _torch_scatter
except ImportError:  # pragma: no cover - depends on the environment
    _torch_scatter = None

HAVE_TORCH_SCATTER = _torch_scatter is not None


def _use_ext(use_torch_scatter: bool | None) -> bool:
    if use_torch_scatter is None:
        return HAVE_TORCH_SCATTER
    if use_torch_scatter and not HAVE_TORCH_SCATTER:
        raise RuntimeError("torch_scatter was requested but is not installed")
    return use_torch_scatter


def scatter_max(src: torch.Tensor, index: torch.Tensor, dim_size: int,
                use_torch_scatter: bool | None = None) -> torch.Tensor:
    """Per-cell maximum: ``src`` (B, C, N), ``index`` (B, N) int64 → (B, C, dim_size)."""
    idx = index.unsqueeze(1).expand_as(src)
    if _use_ext(use_torch_scatter):
        return _torch_scatter.scatter_max(src, idx, dim=2, dim_size=dim_size)[0]
    out = src.new_zeros(src.shape[0], src.shape[1], dim_size)
    return out.scatter_reduce(2, idx, src, reduce="amax", include_self=False)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int,
                 use_torch_scatter: bool | None = None) -> torch.Tensor:
    """Per-cell mean: ``src`` (B, C, N), ``index`` (B, N) int64 → (B, C, dim_size)."""
    idx = index.unsqueeze(1).expand_as(src)
    if _use_ext(use_torch_scatter):
        return _torch_scatter.scatter_mean(src, idx, dim=2, dim_size=dim_size)
    out = src.new_zeros(src.shape[0], src.shape[1], dim_size)
    return out.scatter_reduce(2, idx, src, reduce="mean", include_self=False)


def pool_and_gather(src: torch.Tensor, index: torch.Tensor, dim_size: int,
                    use_torch_scatter: bool | None = None) -> torch.Tensor:
    """Max over the points sharing a cell, read back for every point: (B, C, N) → (B, C, N)."""
    pooled = scatter_max(src, index, dim_size, use_torch_scatter)
    return pooled.gather(2, index.unsqueeze(1).expand(-1, src.shape[1], -1))
