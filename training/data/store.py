"""Prepared patches on disk: one compressed ``.npz`` per patch plus ``manifest.json``.

A patch file holds what the dataset needs and nothing it can recompute cheaply (queries are drawn
on the fly from the stored DSM, so every epoch sees new ones):

* ``points`` float32 (N, 3): input points, x/y from the patch's south-west corner, z − ``z_shift``;
* ``images`` float16 (n_images, S, S): raw grey intensities, rows north→south (float16 is exact
  for 8-bit values);
* ``dsm`` float32 (R, R): reference heights (absolute), NaN = no reference;
* ``valid``, ``building``, ``forest``, ``water`` uint8 (R, R) masks;
* scalars ``x0``, ``y0``, ``z_shift``, ``resolution``, ``patch_size`` (float64).

The manifest lists every patch with its split, source and origin, plus the prepare config, the
number of images, the CRS of each source and the image normalisation statistics.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from implicity.core.errors import InputError
from implicity.core.outputs import atomic_path, write_text_atomic

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "implicity-prepared-patches"
FORMAT_VERSION = 1
MASK_NAMES = ("valid", "building", "forest", "water")


@dataclass
class PatchData:
    """One patch in memory (see the module docstring for the layout)."""

    points: np.ndarray
    images: np.ndarray
    dsm: np.ndarray
    valid: np.ndarray
    building: np.ndarray
    forest: np.ndarray
    water: np.ndarray
    x0: float
    y0: float
    z_shift: float
    resolution: float
    patch_size: float


def save_patch(path: str | os.PathLike[str], patch: PatchData) -> None:
    """Write a patch atomically with compact dtypes."""
    arrays = {
        "points": np.asarray(patch.points, dtype=np.float32),
        "images": np.asarray(patch.images, dtype=np.float16),
        "dsm": np.asarray(patch.dsm, dtype=np.float32),
        **{name: np.asarray(getattr(patch, name), dtype=np.uint8) for name in MASK_NAMES},
        **{name: np.float64(getattr(patch, name)) for name in ("x0", "y0", "z_shift", "resolution", "patch_size")},
    }
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def load_patch(path: str | os.PathLike[str]) -> PatchData:
    """Read a patch written by :func:`save_patch`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read this prepared patch ({exc}). Run `implicity prepare` again.") from None
    missing = {"points", "images", "dsm", *MASK_NAMES} - set(fields)
    if missing:
        raise InputError(f"{path}: not a prepared patch (missing {sorted(missing)}). Run `implicity prepare` again.")
    scalars = {k: float(fields[k]) for k in ("x0", "y0", "z_shift", "resolution", "patch_size")}
    return PatchData(points=fields["points"], images=fields["images"], dsm=fields["dsm"],
                     **{m: fields[m] for m in MASK_NAMES}, **scalars)


def write_manifest(root: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically."""
    return write_text_atomic(Path(root) / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=False))


def read_manifest(root_or_manifest: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """(dataset root, manifest) from a prepared folder or its manifest file."""
    p = Path(root_or_manifest).expanduser()
    path = p / MANIFEST_NAME if p.is_dir() else p
    if not path.is_file():
        raise InputError(f"{p}: no prepared dataset here ({MANIFEST_NAME} not found). "
                         "Build one with `implicity prepare CONFIG`.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable manifest ({exc}). Run `implicity prepare` again.") from None
    if manifest.get("format") != FORMAT_NAME or manifest.get("version") != FORMAT_VERSION:
        raise InputError(f"{path}: not a version-{FORMAT_VERSION} {FORMAT_NAME} manifest. "
                         "Re-create the dataset with this version's `implicity prepare`.")
    return path.parent, manifest


def source_types(manifest: dict[str, Any]) -> dict[str, str]:
    """{source name: its type} of a manifest ("synthetic", "lidar", ...; "" where not recorded)."""
    return {source["name"]: source.get("type", "") for source in manifest.get("sources", [])}
