"""Validation metrics: occupancy IoU on the validation queries and the DSM MedAE of each patch.

The DSM of a validation patch is found with the reference's coarse-to-fine vertical search
(a coarse ladder of heights, then refinement rounds that divide the step by 4 and test
-1..+3 steps around the current estimate) on the patch's own (R, R) reference-DSM grid.
The search itself is the reconstruction engine's reference search, the paper's
(:func:`core.reconstruct.original.original_search`); what is left out is the engine's sliding-window
merging: each validation patch is decoded whole.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .config import ValidationConfig
from .loss import weighted_bce_with_logits

DecodeFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ValidationResult:
    """Aggregated validation metrics of one evaluation pass."""

    iou: float
    val_loss: float
    dsm_medae_m: float | None = None
    dsm_completeness: float | None = None
    n_patches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def score(self, select_on: str) -> float:
        """The model-selection score, larger is better."""
        if select_on == "dsm_medae":
            return -math.inf if self.dsm_medae_m is None else -self.dsm_medae_m
        return self.iou

    def as_dict(self) -> dict[str, Any]:
        return {"iou": self.iou, "val_loss": self.val_loss, "dsm_medae_m": self.dsm_medae_m,
                "dsm_completeness": self.dsm_completeness, "n_patches": self.n_patches}


def _decode_chunked(decode: DecodeFn, query: torch.Tensor, chunk: int) -> torch.Tensor:
    """Logits (M,) for queries (M, 3), at most ``chunk`` queries per decoder call."""
    return torch.cat([decode(query[i:i + chunk].unsqueeze(0)).reshape(-1).float()
                      for i in range(0, query.shape[0], chunk)])


def search_patch_dsm(decode: DecodeFn, resolution: int, z_std: float, cfg: ValidationConfig,
                     device: torch.device) -> torch.Tensor:
    """Normalised surface height per pixel of an (R, R) north-up grid; NaN where nothing is occupied.

    Uses the reconstruction engine's reference search, so validation measures what the engine
    will produce. Pixel (row, col) centre: x = (col + 0.5) / R, y = 1 - (row + 0.5) / R.
    """
    from implicity.core.reconstruct.options import ReferenceSearchOptions
    from implicity.core.reconstruct.original import original_search

    r = resolution
    centres = (np.arange(r, dtype=np.float64) + 0.5) / r
    ys, xs = np.meshgrid(1.0 - centres, centres, indexing="ij")
    pixels = np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1)        # (P, 2)

    def evaluate_field(index: np.ndarray, heights: np.ndarray) -> np.ndarray:  # (P,), (P,K) -> (P,K)
        k = heights.shape[1]
        q = np.concatenate([np.repeat(pixels[index], k, axis=0), heights.reshape(-1, 1)], axis=1)
        logits = _decode_chunked(decode, torch.as_tensor(q, dtype=torch.float32, device=device), cfg.query_chunk)
        return logits.cpu().numpy().reshape(index.shape[0], k)

    search = ReferenceSearchOptions(range_below=-cfg.z_min_m, range_above=cfg.z_max_m,
                                    coarse_step=cfg.coarse_step_m, refinements=cfg.refinements)
    n_coarse = int(math.floor((cfg.z_max_m - cfg.z_min_m) / cfg.coarse_step_m + 1e-9)) + 1  # z_max included
    heights, empty = original_search(evaluate_field, pixels.shape[0], z_std, search, lo_offset=-cfg.z_min_m,
                                     n_coarse=n_coarse)
    heights = np.where(empty, np.nan, heights)
    return torch.as_tensor(heights.reshape(r, r), dtype=torch.float32, device=device)


@dataclass
class _Accumulator:
    intersection: float = 0.0
    union: float = 0.0
    loss_sum: float = 0.0
    n: int = 0
    abs_errors: list[np.ndarray] = field(default_factory=list)
    valid_ref: int = 0
    predicted: int = 0


@torch.no_grad()
def evaluate(model: torch.nn.Module, samples: Any, cfg: ValidationConfig, device: torch.device,
             loss_reduction: str = "mean", max_patches: int | None = None) -> ValidationResult:
    """IoU, loss and (optionally) DSM MedAE of ``model`` on an iterable of batched samples."""
    was_training = model.training
    model.eval()
    acc = _Accumulator()
    try:
        for i, batch in enumerate(samples):
            if max_patches is not None and i >= max_patches:
                break
            images = batch.get("images")
            features = model.encode(batch["points"], images)

            def decode(q: torch.Tensor) -> torch.Tensor:
                return model.decode(q, features)

            logits = _decode_chunked(decode, batch["query"][0], cfg.query_chunk).unsqueeze(0)
            occ = batch["occupancy"]
            weight = batch.get("weight")
            acc.loss_sum += float(weighted_bce_with_logits(logits, occ, weight, loss_reduction))
            valid = (weight > 0) if weight is not None else torch.ones_like(occ, dtype=torch.bool)
            pred = (logits > 0) & valid
            truth = (occ > 0.5) & valid
            acc.intersection += float((pred & truth).sum())
            acc.union += float((pred | truth).sum())
            acc.n += 1
            if cfg.dsm and batch.get("dsm") is not None:
                ref = batch["dsm"][0].to(device)
                z_std = float(batch["normalizer"]["z_std"])
                est = search_patch_dsm(decode, int(ref.shape[-1]), z_std, cfg, device)
                ref_ok = torch.isfinite(ref)
                both = ref_ok & torch.isfinite(est)
                acc.valid_ref += int(ref_ok.sum())
                acc.predicted += int(both.sum())
                acc.abs_errors.append(((est - ref).abs()[both] * z_std).cpu().numpy())
    finally:
        model.train(was_training)
    iou = acc.intersection / acc.union if acc.union > 0 else 1.0
    result = ValidationResult(iou=iou, val_loss=acc.loss_sum / max(acc.n, 1), n_patches=acc.n)
    if cfg.dsm and acc.valid_ref > 0:
        errors = np.concatenate(acc.abs_errors) if acc.abs_errors else np.empty(0)
        result.dsm_medae_m = float(np.median(errors)) if errors.size else None
        result.dsm_completeness = acc.predicted / acc.valid_ref
    return result
