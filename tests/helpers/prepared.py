"""Tiny prepared datasets: two 64 m synthetic cities (``prepare_tiny``) for dataset and selection
tests, and three 16 m block patches (``write_block_patches``) for the trainer on real patches."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from implicity.training.data.store import PatchData

PATCH_M, RES = 16.0, 1.0        # the block patches' side and cell size (metres)


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


def _block_patch(seed: int) -> PatchData:
    """Ground at 10 m with one 6 m tall block; the input cloud samples it with noise."""
    from implicity.training.data.store import PatchData

    rng = np.random.default_rng(seed)
    r = int(PATCH_M / RES)
    dsm = np.full((r, r), 10.0, np.float32)
    r0, c0 = rng.integers(2, r - 8, 2)
    dsm[r0:r0 + 6, c0:c0 + 6] += 6.0
    building = (dsm > 12).astype(np.uint8)
    x, y = rng.uniform(0, PATCH_M, (2, 600))
    rows = np.clip(((PATCH_M - y) / RES).astype(int), 0, r - 1)
    cols = np.clip((x / RES).astype(int), 0, r - 1)
    z = dsm[rows, cols] + rng.normal(0, 0.1, x.size)
    z_shift = float(np.median(z))
    return PatchData(points=np.column_stack([x, y, z - z_shift]).astype(np.float32),
                     images=np.zeros((0, 16, 16), np.float16), dsm=dsm, valid=np.ones((r, r), np.uint8),
                     building=building, forest=np.zeros((r, r), np.uint8), water=np.zeros((r, r), np.uint8),
                     x0=1000.0 + 16 * seed, y0=2000.0, z_shift=z_shift, resolution=RES, patch_size=PATCH_M)


def write_block_patches(root: Path) -> Path:
    """Three patches (2 train, 1 val) in the prepared format, written into ``root``; returns ``root``."""
    from implicity.training.data.store import FORMAT_NAME, FORMAT_VERSION, save_patch, write_manifest

    (root / "patches").mkdir(parents=True)
    entries = []
    for i, split in enumerate(("train", "train", "val")):
        save_patch(root / f"patches/{i:06d}.npz", _block_patch(i))
        entries.append({"file": f"patches/{i:06d}.npz", "split": split, "source": "blocks"})
    write_manifest(root, {"format": FORMAT_NAME, "version": FORMAT_VERSION, "patch_size": PATCH_M,
                          "resolution": RES, "n_images": 0, "z_std": 29.83779098,
                          "image_normalization": {"mean": 0.0, "std": 1.0},
                          "splits": {"train": 2, "val": 1, "test": 0}, "patches": entries})
    return root
