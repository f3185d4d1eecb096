"""``implicity prepare CONFIG``: build a prepared patch dataset from a YAML config.

Every source of the config becomes one or more scenes (:mod:`.scenes`); each scene is cut into
``patch_size`` patches on a ``stride`` lattice and every patch with enough reference and enough
input points is stored (:mod:`.store`). Splits are by region, never by pixel: a source is entirely
in one split (``split: train``), or cut into strips (``split: {strips: [train, train, val, test],
axis: x}``, strip 0 at the west or south) and a patch belongs to a strip only if it lies entirely
inside it, so no reference pixel is shared between splits.

Paths of inputs in the config are relative to the config file's folder; ``output`` (or ``--out``)
is relative to the working directory. The dataset is built in a temporary folder beside the output
and swapped in only when complete; re-running with an unchanged config on a complete dataset
does nothing (the manifest records the config's fingerprint).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from implicity.core.crs import describe_crs
from implicity.core.errors import InputError
from implicity.core.normalization import DEFAULT_Z_STD, PatchFrame
from implicity.core.yamlconfig import dataclass_from_mapping, read_yaml_mapping

from .labels import QuerySamplingConfig
from .scenes import Scene, scenes_from_source
from .store import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, PatchData, read_manifest, save_patch, write_manifest

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PrepareConfig:
    """Top level of a prepare config (``sources`` entries are described in :mod:`.scenes`)."""

    output: str = "prepared"
    patch_size: float = 64.0
    resolution: float = 0.5  # reference DSM and ortho pixel size
    stride: float = 32.0
    n_images: int = 0
    z_std: float = DEFAULT_Z_STD
    min_valid_fraction: float = 0.5
    min_points: int = 200
    queries: dict[str, Any] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def patch_px(self) -> int:
        return int(round(self.patch_size / self.resolution))


def load_prepare_config(path: str | os.PathLike[str]) -> tuple[PrepareConfig, dict[str, Any]]:
    """Parse and check a prepare config; returns it and the raw mapping (for the manifest)."""
    p = Path(path).expanduser()
    raw = read_yaml_mapping(p, "Prepare config")
    cfg = dataclass_from_mapping(PrepareConfig, {k: v for k, v in raw.items()}, str(p))
    cfg = dataclasses.replace(cfg, sources=list(raw.get("sources") or []), queries=dict(raw.get("queries") or {}))
    dataclass_from_mapping(QuerySamplingConfig, cfg.queries, f"{p}: queries")
    if not cfg.sources:
        raise InputError(f"{p}: 'sources' is empty; list at least one synthetic, lidar or rasters source.")
    if abs(cfg.patch_px * cfg.resolution - cfg.patch_size) > 1e-6 or cfg.patch_px < 8:
        raise InputError(f"{p}: patch_size {cfg.patch_size} must be a multiple (>= 8) of resolution {cfg.resolution}.")
    if cfg.stride <= 0 or abs(round(cfg.stride / cfg.resolution) * cfg.resolution - cfg.stride) > 1e-6:
        raise InputError(f"{p}: stride {cfg.stride} must be a positive multiple of resolution {cfg.resolution}.")
    if cfg.n_images not in (0, 1, 2):
        raise InputError(f"{p}: n_images must be 0, 1 or 2 (ImpliCity-0, -mono, -stereo).")
    return cfg, raw


def _split_spec(source: Mapping[str, Any], where: str) -> tuple[list[str], str]:
    """(strip labels, axis); a plain split is one strip."""
    spec = source.get("split", "train")
    if isinstance(spec, str):
        labels, axis = [spec], "x"
    elif isinstance(spec, dict) and isinstance(spec.get("strips"), list):
        labels, axis = list(spec["strips"]), str(spec.get("axis", "x"))
    else:
        raise InputError(f"{where}.split: use train/val/test or {{strips: [train, val, ...], axis: x}}.")
    bad = [s for s in labels if s not in SPLITS]
    if bad or axis not in ("x", "y") or not labels:
        raise InputError(f"{where}.split: strips must be among {SPLITS} and axis x or y (got {labels}, {axis}).")
    return labels, axis


def patch_windows(shape: tuple[int, int], patch_px: int, stride_px: int, labels: list[str],
                  axis: str) -> list[tuple[int, int, str]]:
    """(row_off, col_off, split) of every patch lying entirely inside one strip."""
    height, width = shape
    n = len(labels)
    out = []
    along = width if axis == "x" else height
    for k, label in enumerate(labels):
        a0, a1 = k * along // n, (k + 1) * along // n
        if axis == "y":  # strip 0 in the south = the last rows
            a0, a1 = height - a1, height - a0
        for a in range(a0, a1 - patch_px + 1, stride_px):
            other = height if axis == "x" else width
            for b in range(0, other - patch_px + 1, stride_px):
                out.append((b, a, label) if axis == "x" else (a, b, label))
    return out


def cut_patches(scene: Scene, cfg: PrepareConfig, labels: list[str], axis: str):
    """Yield (split, PatchData, valid_fraction) for the usable patches of a scene."""
    p = cfg.patch_px
    res = scene.grid.resolution
    xs, ys = scene.points[:, 0], scene.points[:, 1]
    for row, col, split in patch_windows(scene.grid.shape, p, int(round(cfg.stride / res)), labels, axis):
        win = np.s_[row:row + p, col:col + p]
        dsm = scene.dsm[win]
        valid = scene.valid[win] & np.isfinite(dsm)
        frac = float(valid.mean())
        if frac < cfg.min_valid_fraction:
            continue
        x0 = scene.grid.transform.c + col * res
        y0 = scene.grid.transform.f - (row + p) * res
        sel = (xs >= x0) & (xs < x0 + cfg.patch_size) & (ys >= y0) & (ys < y0 + cfg.patch_size)
        if int(sel.sum()) < cfg.min_points:
            continue
        frame = PatchFrame.of_points(scene.points[sel], x0, y0, cfg.patch_size, cfg.z_std)
        local, z_shift = frame.local(scene.points[sel]), frame.z_shift
        images = np.stack([im[win] for im in scene.images]) if scene.images else np.zeros((0, p, p), np.float32)
        yield split, PatchData(points=local, images=images, dsm=dsm, valid=valid.astype(np.uint8),
                               building=scene.building[win], forest=scene.forest[win], water=scene.water[win],
                               x0=x0, y0=y0, z_shift=z_shift, resolution=res, patch_size=cfg.patch_size), frac


def config_fingerprint(raw: Mapping[str, Any]) -> str:
    """SHA-256 of the config (minus ``output``) and the storage format version."""
    body = {k: v for k, v in raw.items() if k != "output"}
    text = json.dumps({"format": FORMAT_VERSION, "config": body}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def is_up_to_date(out: Path, fingerprint: str) -> bool:
    """A complete dataset built from the same config is already at ``out``."""
    if not (out / MANIFEST_NAME).is_file():
        return False
    try:
        _, manifest = read_manifest(out)
    except InputError:
        return False
    return manifest.get("config_sha256") == fingerprint and all(
        (out / entry["file"]).is_file() for entry in manifest.get("patches", []))


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` by the finished ``tmp`` folder (an old dataset is removed only afterwards)."""
    old = None
    if out.exists():
        if not (out / MANIFEST_NAME).is_file() and any(out.iterdir()):
            raise InputError(f"{out} exists and is not a prepared dataset; refusing to replace it. "
                             "Choose another output folder.")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _image_statistics(tmp: Path, entries: list[dict[str, Any]], n_images: int) -> dict[str, float]:
    """Mean and std of all image pixels of the training patches (all patches if none are train)."""
    from .store import load_patch

    if n_images == 0:
        return {"mean": 0.0, "std": 1.0}
    chosen = [e for e in entries if e["split"] == "train"] or entries
    total, total_sq, count = 0.0, 0.0, 0
    for e in chosen:
        img = load_patch(tmp / e["file"]).images.astype(np.float64)
        img = img[np.isfinite(img)]
        total += float(img.sum())
        total_sq += float((img ** 2).sum())
        count += img.size
    if count == 0:
        return {"mean": 0.0, "std": 1.0}
    mean = total / count
    std = max(np.sqrt(max(total_sq / count - mean ** 2, 0.0)), 1e-6)
    return {"mean": mean, "std": float(std)}


def prepare_dataset(config_path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                    progress: bool = True, force: bool = False,
                    log: Callable[[str], None] = print) -> Path:
    """Build (or find up to date) the prepared dataset of ``config_path``; returns its folder."""
    from tqdm import tqdm

    cfg, raw = load_prepare_config(config_path)
    base = Path(config_path).expanduser().resolve().parent
    target = Path(out if out is not None else cfg.output).expanduser().resolve()
    fingerprint = config_fingerprint(raw)
    if not force and is_up_to_date(target, fingerprint):
        log(f"{target}: already prepared from this config; nothing to do (use --force to rebuild).")
        return target
    try:  # a dataset is a folder of our own: create its parents like `mkdir -p`
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {target}: cannot create the folder {target.parent} ({exc.strerror}). "
                         "Choose a writable location.") from None

    jobs: list[tuple[int, dict[str, Any]]] = []  # one job per scene (each seed of a synthetic source)
    for i, source in enumerate(cfg.sources):
        if not isinstance(source, dict):
            raise InputError(f"{config_path}: sources[{i}] must be a mapping with a 'type'.")
        _split_spec(source, f"sources[{i}]")
        if source.get("type") == "synthetic":
            jobs += [(i, {**source, "seeds": [s]}) for s in (source.get("seeds") or [0])]
        else:
            jobs.append((i, source))

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        (tmp / "patches").mkdir()
        entries: list[dict[str, Any]] = []
        sources_info: list[dict[str, Any]] = []
        bar = tqdm(jobs, desc="prepare", unit="scene", disable=not progress, dynamic_ncols=True)
        for i, source in bar:
            where = f"sources[{i}]"
            labels, axis = _split_spec(source, where)
            for scene in scenes_from_source(source, cfg.n_images, cfg.resolution, base, where):
                bar.set_postfix_str(f"{scene.name}: cutting patches")
                n_before = len(entries)
                for split, patch, frac in cut_patches(scene, cfg, labels, axis):
                    name = f"patches/{len(entries):06d}.npz"
                    save_patch(tmp / name, patch)
                    entries.append({"file": name, "split": split, "source": scene.name, "x0": patch.x0,
                                    "y0": patch.y0, "z_shift": patch.z_shift, "n_points": int(len(patch.points)),
                                    "valid_fraction": round(frac, 4)})
                sources_info.append({"name": scene.name, "type": source.get("type"), "crs": describe_crs(scene.crs),
                                     "bounds": list(scene.grid.bounds), "n_patches": len(entries) - n_before})
                bar.set_postfix_str(f"{scene.name}: {len(entries) - n_before} patches")
        bar.close()
        if not entries:
            raise InputError(f"{config_path}: no patch passed the checks (min_valid_fraction, min_points, "
                             "patch_size vs scene size). Lower them or add data.")
        manifest = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "config_sha256": fingerprint, "config": raw,
            "patch_size": cfg.patch_size, "resolution": cfg.resolution, "image_size": cfg.patch_px,
            "n_images": cfg.n_images, "z_std": cfg.z_std,
            "queries": dataclasses.asdict(dataclass_from_mapping(QuerySamplingConfig, cfg.queries, "queries")),
            "image_normalization": _image_statistics(tmp, entries, cfg.n_images),
            "crs": {s["name"]: s["crs"] for s in sources_info},
            "sources": sources_info,
            "splits": {s: sum(e["split"] == s for e in entries) for s in SPLITS},
            "patches": entries,
        }
        write_manifest(tmp, manifest)
        _swap_into_place(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"Prepared dataset written: {target} ({len(entries)} patches: "
        + ", ".join(f"{k} {v}" for k, v in manifest["splits"].items()) + ")")
    return target
