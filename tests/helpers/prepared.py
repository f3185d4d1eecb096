"""A tiny prepared dataset (two 64 m synthetic cities, one per split) for dataset and selection tests."""
from __future__ import annotations

from pathlib import Path


def prepare_tiny(root: Path, patch_size: float = 32.0, stride: float = 32.0, n_images: int = 0) -> Path:
    """``implicity prepare`` on a train city (seed 0) and a val city (seed 1) into ``root/out``."""
    from implicity.training.data.prepare import prepare_dataset

    cfg = root / "cfg.yaml"
    cfg.write_text(
        f"output: out\npatch_size: {patch_size}\nresolution: 0.5\nstride: {stride}\nn_images: {n_images}\n"
        "min_points: 50\nsources:\n"
        "  - {name: t, type: synthetic, seeds: [0], split: train, city: {size_m: 64.0}}\n"
        "  - {name: v, type: synthetic, seeds: [1], split: val, city: {size_m: 64.0}}\n")
    return prepare_dataset(cfg, out=root / "out", progress=False, log=lambda m: None)
