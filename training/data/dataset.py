"""The PyTorch dataset of prepared patches (what the trainer reads, one patch per sample).

Each sample is a dict (numpy float32 arrays; the trainer's collate turns them into tensors):

* ``points`` (N, 3): input points in normalised patch coordinates — x, y in [0, 1] over the patch
  from its south-west corner, z = (z − z_shift) / z_std, z_shift = median input height;
* ``images`` (n_images, S, S): grey orthos, (value − mean) / std with the manifest's
  ``image_normalization``, no-data → 0; rows north→south;
* ``query`` (M, 3) normalised like the points; ``occupancy`` (M,) in {0, 1}; ``weight`` (M,);
* ``dsm`` (R, R): the reference DSM in normalised z, NaN where invalid; rows north→south;
* ``source_keys``: the names the patch's source answers to (its stored name, its name in the prepare
  config, its type), so that a loss term can be limited to some sources;
* ``normalizer``: dict(x0, y0, z_shift, z_std, patch_size) of the (unaugmented) patch.

Queries are drawn afresh for every (seed, epoch, index) from the stored reference DSM, and so are
the augmentations: one of the 8 symmetries of the square (optional x flip, then k·90° rotation
counter-clockwise in map view), applied identically to points, queries, images and DSM. Everything
random comes from ``numpy.random.default_rng([seed, epoch, index])``, so a resumed run sees
exactly the samples of an uninterrupted one; the trainer calls :meth:`PatchDataset.set_epoch`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from implicity.core.errors import InputError
from implicity.core.normalization import PatchFrame, height_shift, normalize_image
from implicity.core.reconstruct.symmetry import symmetric_xy

from .degrade import DegradationFamily, degrade_surface
from .labels import QuerySamplingConfig, loss_weights, occupancy_labels, sample_queries
from .photometric import PhotometricAugmentation, augment_images
from .store import load_patch, read_manifest, source_types

#: Fewer degraded points than this and the sample falls back to the stored (prepared) cloud.
MIN_DEGRADED_POINTS = 64


def augment_xy(xy: np.ndarray, flip: bool, k: int) -> np.ndarray:
    """Apply (x flip, then k counter-clockwise quarter turns about the centre) to normalised xy."""
    x, y = symmetric_xy(xy[:, 0].copy(), xy[:, 1].copy(), flip, k)
    return np.column_stack([x, y]).astype(xy.dtype, copy=False)


def augment_grid(array: np.ndarray, flip: bool, k: int) -> np.ndarray:
    """The same symmetry on (..., rows north→south, cols west→east) arrays."""
    out = array[..., ::-1] if flip else array
    return np.ascontiguousarray(np.rot90(out, k % 4, axes=(-2, -1)))


def _config_name(source: str) -> str:
    """A stored source's name in the prepare config (a synthetic source is stored once per seed, as NAME_seedN)."""
    return re.sub(r"_seed\d+$", "", source)


def source_keys(entry: Mapping[str, Any], manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """The names a patch's source answers to, most specific first: its stored name, its name in the
    prepare config and its type."""
    source = str(entry.get("source", ""))
    return (source, _config_name(source), source_types(dict(manifest)).get(source, ""))


def check_source_keys(manifest: Mapping[str, Any], keys: Iterable[str], option: str, where: str) -> None:
    """Refuse a source name or type that no source of the manifest answers to."""
    kind = source_types(dict(manifest))
    known = set(kind) | {_config_name(name) for name in kind} | set(kind.values())
    for key in keys:
        if key not in known:
            raise InputError(f"{option}: '{key}' is neither a source nor a source type of {where} "
                             f"(known: {', '.join(sorted(k for k in known if k))}).")


def repeat_entries(entries: list[dict[str, Any]], manifest: dict[str, Any], repeats: Mapping[str, int],
                   where: str) -> list[dict[str, Any]]:
    """``entries`` with every patch of a source listed in ``repeats`` (by the source's name in the
    prepare config, e.g. ``nimes`` or ``synth_train`` for all its seeds, or by its type, e.g.
    ``lidar``; a name wins over its type) appearing that many times per epoch.

    Why: the prepared data hold four times more synthetic patches than real ones, and a model
    learns most from what it sees most. A repeated patch is a new sample each time (its degradation,
    queries and symmetry are drawn from its own index), not a copy."""
    if not repeats:
        return entries
    check_source_keys(manifest, repeats, "data.patch_repeats", where)
    for key, count in repeats.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InputError(f"data.patch_repeats: '{key}' must repeat a whole number of times ≥ 1, got {count!r}.")

    def times(entry: Mapping[str, Any]) -> int:
        for key in source_keys(entry, manifest):
            if key in repeats:
                return int(repeats[key])
        return 1

    return [e for e in entries for _ in range(times(e))]


class PatchDataset(Dataset):
    """Prepared patches of one split; see the module docstring for the sample layout."""

    def __init__(self, root_or_manifest: str | os.PathLike[str], split: str = "train", n_query: int = 16384,
                 augment: bool = False, seed: int = 0, max_points: int | None = None,
                 query_config: QuerySamplingConfig | None = None,
                 degradation: DegradationFamily | None = None,
                 photometric: PhotometricAugmentation | None = None,
                 image_normalization: str = "dataset", patch_repeats: Mapping[str, int] | None = None) -> None:
        self.root, self.manifest = read_manifest(root_or_manifest)
        self.split = split
        self.entries = [e for e in self.manifest["patches"] if e["split"] == split]
        if not self.entries:
            counts = self.manifest.get("splits", {})
            raise InputError(f"{self.root}: the prepared dataset has no '{split}' patches (it has {counts}). "
                             "Choose another split or add a source for it in the prepare config.")
        self.entries = repeat_entries(self.entries, self.manifest, patch_repeats or {}, str(self.root))
        if n_query <= 0:
            raise InputError(f"n_query must be positive, got {n_query}.")
        self.n_query = int(n_query)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.max_points = max_points
        self.epoch = 0
        self.n_images = int(self.manifest["n_images"])
        self.z_std = float(self.manifest["z_std"])
        self.query_config = query_config or QuerySamplingConfig(**self.manifest.get("queries", {}))
        norm = self.manifest.get("image_normalization", {"mean": 0.0, "std": 1.0})
        self.image_mean, self.image_std = float(norm["mean"]), float(norm["std"]) or 1.0
        self.image_normalization = image_normalization
        self.degradation = degradation
        self.photometric = photometric

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose queries and augmentations :meth:`__getitem__` draws."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        patch = load_patch(self.root / entry["file"])
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        size, res = patch.patch_size, patch.resolution

        query = sample_queries(rng, patch.dsm, res, self.n_query, self.query_config, patch.valid)
        occupancy = occupancy_labels(query, patch.dsm, res)
        weight = loss_weights(query, res, patch.dsm, patch.valid, patch.building, patch.forest, patch.water,
                              self.query_config)

        # Stored points are relative to the patch's south-west corner and height shift; queries and
        # the DSM are in patch xy and map heights. One frame (origin 0, 0) normalises all of them.
        frame = PatchFrame(0.0, 0.0, float(size), float(patch.z_shift), self.z_std)
        points = patch.points.astype(np.float64) + np.array([0.0, 0.0, frame.z_shift])
        if self.degradation is not None:  # a fresh photogrammetric-like cloud of the reference surface
            degraded = degrade_surface(rng, patch.dsm, patch.valid, res, self.degradation).xyz
            if len(degraded) >= MIN_DEGRADED_POINTS:  # as inference does: shift = median of the input
                frame = PatchFrame(0.0, 0.0, float(size), height_shift(degraded[:, 2]), self.z_std)
                points = np.asarray(degraded, dtype=np.float64)
        if self.max_points is not None and len(points) > self.max_points:
            points = points[np.sort(rng.choice(len(points), self.max_points, replace=False))]
        pts = frame.normalize_points(points)
        q = frame.normalize_points(query)
        dsm = np.where(patch.valid > 0, frame.normalize_z(patch.dsm), np.nan)
        z_shift = frame.z_shift
        images = patch.images.astype(np.float32)
        if self.photometric is not None and len(images):
            images = augment_images(rng, images, self.photometric, patch.dsm, res)
        images = np.asarray(normalize_image(images, self), dtype=np.float32)

        if self.augment:
            flip, k = bool(rng.integers(2)), int(rng.integers(4))
            pts[:, :2] = augment_xy(pts[:, :2], flip, k)
            q[:, :2] = augment_xy(q[:, :2], flip, k)
            dsm = augment_grid(dsm, flip, k)
            images = augment_grid(images, flip, k)
        return {
            "points": pts.astype(np.float32),
            "images": images.astype(np.float32),
            "query": q.astype(np.float32),
            "occupancy": occupancy,
            "weight": weight,
            "dsm": dsm.astype(np.float32),
            "source_keys": source_keys(entry, self.manifest),
            "normalizer": {"x0": float(patch.x0), "y0": float(patch.y0), "z_shift": z_shift,
                           "z_std": self.z_std, "patch_size": float(size)},
        }
