"""The tiny model and dataset the trainer tests share.

The tiny network has the ImpliCity interface (encode / decode / forward, points scattered onto an
xy plane, features sampled at the query's xy, z concatenated) at a few hundred parameters, and the
dataset produces the PatchDataset sample dict for box-shaped "buildings" on sloping ground, so
trainer tests run in seconds without the real network or prepared data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from implicity.training.trainer.config import train_config_from_dict

R_PLANE = 8
DSM_RES = 8
Z_STD = 10.0


class TinyNet(nn.Module):
    """A miniature convolutional occupancy network with the ImpliCity call signature."""

    def __init__(self, feat: int = 8, n_images: int = 0) -> None:
        super().__init__()
        self.point_mlp = nn.Sequential(nn.Linear(3, feat), nn.ReLU(), nn.Linear(feat, feat))
        self.conv = nn.Conv2d(feat + n_images, feat, 3, padding=1)
        self.fc_z = nn.Linear(1, feat)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(feat, feat), nn.ReLU(), nn.Linear(feat, 1))
        self.feat = feat

    def encode(self, points: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        b, n, _ = points.shape
        f = self.point_mlp(points)                                            # (B, N, F)
        cell = (points[..., :2].clamp(0, 1 - 1e-6) * R_PLANE).long()
        idx = (cell[..., 0] + R_PLANE * cell[..., 1]).unsqueeze(1).expand(-1, self.feat, -1)
        plane = f.new_zeros(b, self.feat, R_PLANE * R_PLANE)
        plane = plane.scatter_reduce(2, idx, f.transpose(1, 2), reduce="mean", include_self=False)
        plane = plane.view(b, self.feat, R_PLANE, R_PLANE)
        if images is not None:
            img = F.interpolate(images.flip(-2), size=(R_PLANE, R_PLANE), mode="bilinear", align_corners=False)
            plane = torch.cat([plane, img], dim=1)
        return self.conv(plane)

    def decode(self, query: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        grid = (2 * query[..., :2] - 1).unsqueeze(1)                           # (B, 1, M, 2)
        sampled = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)
        net = sampled.squeeze(2).transpose(1, 2) + self.fc_z(query[..., 2:])
        return self.head(net).squeeze(-1)

    def forward(self, query: torch.Tensor, points: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(query, self.encode(points, images))


def surface_height(idx: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Normalised height of patch ``idx``: sloping ground and one box building."""
    rng = np.random.default_rng(1000 + idx)
    slope, cx, cy, half, roof = rng.uniform(-0.2, 0.2), *rng.uniform(0.3, 0.7, 2), rng.uniform(0.1, 0.25), rng.uniform(0.8, 1.6)
    inside = (np.abs(x - cx) < half) & (np.abs(y - cy) < half)
    return slope * (x - 0.5) + np.where(inside, roof, 0.0)


class TinyPatches:
    """PatchDataset stand-in: same sample dict, deterministic per (seed, epoch, index)."""

    def __init__(self, n: int = 5, n_query: int = 256, n_points: int = 400, augment: bool = True,
                 seed: int = 0, n_images: int = 0, kill_at: tuple[int, int, int] | None = None,
                 source_keys: tuple[str, ...] | None = None) -> None:
        self.n, self.n_query, self.n_points, self.augment, self.seed = n, n_query, n_points, augment, seed
        self.source_keys = source_keys  # as PatchDataset names a sample's source; None: not given
        self.n_images = n_images
        self.epoch = 0
        self.kill_at = kill_at          # (epoch, index, signal): send a signal while loading that sample

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if self.kill_at is not None and (self.epoch, idx) == self.kill_at[:2]:
            import os
            import signal as _signal

            signum = _signal.Signals(self.kill_at[2])
            self.kill_at = None
            os.kill(os.getpid(), signum)
        rng = np.random.default_rng([self.seed, self.epoch, idx])
        px, py = rng.uniform(0, 1, self.n_points), rng.uniform(0, 1, self.n_points)
        pz = surface_height(idx, px, py) + rng.normal(0, 0.02, self.n_points)
        qx, qy = rng.uniform(0, 1, self.n_query), rng.uniform(0, 1, self.n_query)
        qz = rng.uniform(-1.0, 2.5, self.n_query)
        occ = (qz < surface_height(idx, qx, qy)).astype(np.float32)
        weight = np.where(qx < 0.1, 0.0, 1.0).astype(np.float32)       # a strip outside the validity mask
        centres = (np.arange(DSM_RES) + 0.5) / DSM_RES
        gy, gx = np.meshgrid(1 - centres, centres, indexing="ij")
        dsm = surface_height(idx, gx, gy).astype(np.float32)
        dsm[0, 0] = np.nan
        images = rng.uniform(0, 1, (self.n_images, 16, 16)).astype(np.float32)
        if self.augment and rng.uniform() < 0.5:                        # flip x (east-west)
            px, qx = 1 - px, 1 - qx
            dsm = dsm[:, ::-1].copy()
            images = images[:, :, ::-1].copy()
        sample = {"points": np.stack([px, py, pz], 1).astype(np.float32), "images": images,
                  "query": np.stack([qx, qy, qz], 1).astype(np.float32), "occupancy": occ, "weight": weight,
                  "dsm": dsm, "normalizer": {"x0": 0.0, "y0": 0.0, "z_shift": 0.0, "z_std": Z_STD, "patch_size": 64.0}}
        if self.source_keys is not None:
            sample["source_keys"] = self.source_keys
        return sample


def tiny_export(path: Path, model: nn.Module, model_config: Any, metadata: dict[str, Any]) -> None:
    """Model-format writer for TinyNet (the real one is core.model.save_checkpoint)."""
    torch.save({"model": model.state_dict(), "config": model_config, "training": metadata}, path)


def final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    """The state dict of the run's exported final model (``final.pt`` as ``tiny_export`` writes it)."""
    from implicity.training.trainer.loop import FINAL_FILE

    return torch.load(out_dir / FINAL_FILE, weights_only=True)["model"]


def mean_over_fresh_samples(weights: dict[str, torch.Tensor], measure: Callable[[TinyNet, dict[str, Any]], float],
                            n_query: int = 256) -> float:
    """The mean of ``measure(net, sample)`` for a TinyNet holding ``weights`` over four fresh, unaugmented
    samples (torch seeded, no gradients): how a trained tiny model is judged on data it did not train on."""
    net = TinyNet()
    net.load_state_dict(weights)
    torch.manual_seed(123)
    patches = TinyPatches(n=4, n_query=n_query, augment=False, seed=7)
    with torch.no_grad():
        values = [measure(net, patches[i]) for i in range(len(patches))]
    return sum(values) / len(values)


def tiny_config(out_dir: Path, **overrides: Any) -> Any:
    """A TrainConfig for TinyNet: a handful of steps, every step logged."""
    raw: dict[str, Any] = {
        "name": "tiny", "model": {"tiny": True}, "out_dir": str(out_dir), "seed": 3, "device": "cpu",
        "data": {"root": str(out_dir), "n_query": 256},
        "optim": {"lr_base": 2e-3, "lr_max": 1e-2, "step_size_up": 3, "step_size_down": 5, "accumulate": 3},
        "schedule": {"max_steps": 6, "log_every": 1, "val_every": 3, "checkpoint_every": 2},
        "validation": {"refinements": 2, "coarse_step_m": 4.0, "z_min_m": -10.0, "z_max_m": 30.0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        else:
            raw[key] = value
    return train_config_from_dict(raw, source="tiny.yaml")


def make_trainer(out_dir: Path, dataset: Any = None, lineage: list[dict[str, Any]] | None = None, **overrides: Any):
    """A single-process Trainer on TinyNet and TinyPatches (seeded like `implicity train`); ``lineage``
    is what `implicity train` records of the ``init_from`` checkpoints."""
    from implicity.training.trainer import Trainer, seed_everything

    config = tiny_config(out_dir, **overrides)
    seed_everything(config.seed)
    model = TinyNet()
    return Trainer(config, model, {"tiny": True}, dataset if dataset is not None else TinyPatches(seed=config.seed),
                   TinyPatches(n=2, augment=False, seed=99), progress_bar=False, tensorboard=False,
                   export_fn=tiny_export, lineage=lineage)
