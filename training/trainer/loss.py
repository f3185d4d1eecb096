"""Occupancy loss: binary cross-entropy on logits, weighted per query, and an optional penalty on
occupancy that rises with height.

The weights come from the training data: land-cover masks (building 1.0, forest/water 0.5 in the
reference recipe) and zero outside the reference's validity mask, so unknown ground truth never
teaches the network anything.

The penalty (``loss.monotone_weight``, off by default) is the 2.5D prior of a DSM: every column is
occupied below one height and empty above it, so a point can never be more occupied than the point
under it. The labels say so only at the sampled queries; between them a network may leave occupied
islands above the surface. The coarse-to-fine search of the reference mode takes the highest occupied
sample of a column and the fast mode the crossing near its prior, so where a column crosses 0.5 more
than once the two modes can give different heights. (Measured on ImpliCity-0: the penalty kept the
validation score but did not bring the two modes closer; docs/checkpoint_selection.md.)
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


def raised_queries(query: torch.Tensor, dz_min: float, dz_max: float) -> torch.Tensor:
    """``query`` (B, M, 3) with each z raised by its own draw from U(dz_min, dz_max) (the queries' units:
    metres / z_std). Drawn from torch's global generator, which the trainer saves and restores on resume."""
    raised = query.clone()
    raised[..., 2] += torch.empty_like(query[..., 2]).uniform_(dz_min, dz_max)
    return raised


def monotone_penalty(logits_low: torch.Tensor, logits_high: torch.Tensor,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over query pairs (B, M) of max(0, p(high) − p(low)), p = sigmoid(logit): how much more occupied
    a point is than the point below it in the same column. Pairs of weight 0 (no valid reference) do not
    count; other weights do not scale it (the prior holds for every land cover alike). In float32."""
    rise = torch.relu(torch.sigmoid(logits_high.float()) - torch.sigmoid(logits_low.float()))
    if weight is None:
        return rise.mean()
    counted = (weight > 0).float()
    return (rise * counted).sum() / counted.sum().clamp_min(1.0)
