"""Occupancy loss: binary cross-entropy on logits, weighted per query.

The weights come from the training data: land-cover masks (building 1.0, forest/water 0.5 in the
reference recipe) and zero outside the reference's validity mask, so unknown ground truth never
teaches the network anything.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_bce_with_logits(
    logits: torch.Tensor,
    occupancy: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Weighted BCE of occupancy logits (B, M) against 0/1 labels (B, M).

    ``reduction="mean"`` divides by the number of queries (the reference's choice: down-weighted
    queries really count less); ``"weighted_mean"`` divides by the sum of the weights.
    Computed in float32 so mixed precision cannot underflow it.
    """
    per_query = F.binary_cross_entropy_with_logits(logits.float(), occupancy.float(), reduction="none")
    if weight is None:
        return per_query.mean()
    w = weight.float()
    total = (per_query * w).sum()
    if reduction == "mean":
        return total / per_query.numel()
    if reduction == "weighted_mean":
        return total / w.sum().clamp_min(1e-12)
    raise ValueError(f"unknown reduction {reduction!r}; use 'mean' or 'weighted_mean'")
