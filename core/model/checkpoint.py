"""Checkpoints: our self-describing format, and the reference implementation's files as they are.

Our format is a plain dict (so ``torch.load(..., weights_only=True)`` reads it without unpickling
any object): ``format``/``version`` tags, the ``model_config`` that built the network, the
normalisation constants, the ``model`` state dict and free-form ``training`` metadata.

The reference implementation (prs-eth/ImpliCity) saves ``{"model": state_dict, "n_iter": …, …}``
with no config. Its architecture is read back from the state dict itself (layer widths from tensor
shapes, depths from key names), so the reference's default models and any re-sized variant load
strictly, with no missing and no unexpected keys.
"""
from __future__ import annotations

import dataclasses
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..outputs import atomic_path
from ..vocabulary import VARIANT_NAMES
from .config import ModelConfig, config_from_mapping
from .network import ImpliCityNet, build_model, image_count_message

CHECKPOINT_FORMAT = "implicity-checkpoint"
CHECKPOINT_VERSION = 1

def save_checkpoint(path: str | os.PathLike[str], model: ImpliCityNet, config: ModelConfig | None = None,
                    training: Mapping[str, Any] | None = None, half: bool = False) -> Path:
    """Write ``model`` with the config that built it, atomically (temp file, then rename).

    ``half=True`` stores floating-point tensors as float16 (half the size; the loader casts back
    to float32) — what the weights shipped in the repository use.
    """
    config = config or model.config
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": config.to_dict(),
        "normalization": {"patch_size": config.patch_size, "z_std": config.z_std,
                          "image_mean": config.image_mean, "image_std": config.image_std},
        "model": state,
        "training": dict(training or {}),
        "torch": str(torch.__version__),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw checkpoint dict, read safely; InputError (naming the file) when it cannot be read."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found. Give the path of a trained model (.pt).")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'truncated or corrupt'}). "
                         "The file may be truncated or not a model; download or export it again.") from None
    except Exception as exc:  # noqa: BLE001 - pickle errors of all kinds: refused objects, or bytes that are no pickle
        if "Unsupported global" in str(exc):  # the safe loader met a pickled object
            raise InputError(f"{path}: the checkpoint holds Python objects that are not loaded for safety "
                             f"({type(exc).__name__}). Save only the state dict (and plain data).") from None
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}); the file is "
                         "corrupt or not a model. Download or export it again.") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a checkpoint must be a dict, found a {type(raw).__name__}.")
    return raw


def _state_dict_of(raw: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    state = raw.get("model", raw) if isinstance(raw.get("model", None), Mapping) else raw
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(f"{path}: no model weights found (expected a state dict, or a dict with the "
                         f"state dict under 'model'; found keys {sorted(raw)[:8]}).")
    return dict(state) if state is not raw else tensors


def _count(keys: list[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def infer_reference_config(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> ModelConfig:
    """The ModelConfig of a reference-implementation state dict, read from its keys and shapes."""
    keys = list(state)
    if any(k.startswith("point_encoder.") for k in keys):
        enc = "point_encoder."
    elif any(k.startswith("encoder.") for k in keys):
        enc = "encoder."
    else:
        raise InputError(f"{source}: not an ImpliCity model: no 'encoder.*' or 'point_encoder.*' weights "
                         f"(first keys: {keys[:5]}).")
    try:
        values: dict[str, Any] = {
            "hidden_dim": int(state[enc + "fc_pos.weight"].shape[0]) // 2,
            "feature_dim": int(state[enc + "fc_c.weight"].shape[0]),
            "encoder_blocks": _count(keys, re.escape(enc) + r"blocks\.(\d+)\."),
            "unet_depth": _count(keys, re.escape(enc) + r"unet\.down_convs\.(\d+)\."),
            "unet_start_filters": int(state[enc + "unet.down_convs.0.conv1.weight"].shape[0]),
            "decoder_hidden_dim": int(state["decoder.fc_p.weight"].shape[0]),
            "decoder_blocks": _count(keys, r"decoder\.blocks\.(\d+)\."),
            "n_classes": int(state["decoder.fc_out.weight"].shape[0]),
            "n_images": 0,
        }
        if enc == "point_encoder.":
            conv1 = state["image_encoder.conv1.weight"]
            levels = {int(m.group(1)) for k in keys if (m := re.match(r"image_encoder\.m0\.b1_(\d+)\.", k))}
            values.update({
                "n_images": int(conv1.shape[1]),
                "image_stem_channels": int(conv1.shape[0]),
                "image_channels": int(state["image_encoder.conv_last0.weight"].shape[0]),
                "image_stacks": _count(keys, r"image_encoder\.m(\d+)\."),
                "image_hourglass_depth": max(levels) if levels else 0,
                "image_norm_groups": _groups_hint(state),
            })
            values["name"] = VARIANT_NAMES.get(values["n_images"], "ImpliCity")
        else:
            values["name"] = VARIANT_NAMES[0]
    except KeyError as exc:
        raise InputError(f"{source}: incomplete ImpliCity state dict: {exc.args[0]!r} is missing.") from None
    return config_from_mapping(values, source)


def _groups_hint(state: Mapping[str, torch.Tensor]) -> int:
    """The GroupNorm group count, which no weight stores: the reference's 32 when every norm width
    allows it, else the largest count that divides them all (for re-sized reference models)."""
    widths = [int(v.shape[0]) for k, v in state.items()
              if k.startswith("image_encoder.") and re.search(r"(^|\.)bn(\d|_end\d+)\.weight$", k)]
    for g in (32, 16, 8, 4, 2, 1):
        if all(w % g == 0 for w in widths):
            return g
    return 1


def _config_from_ours(raw: Mapping[str, Any], path: Path) -> ModelConfig:
    version = raw.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise InputError(f"{path}: checkpoint format version {version!r} is newer than this ImpliCity "
                         f"({CHECKPOINT_VERSION}). Update the plugin to load it.")
    return config_from_mapping(raw.get("model_config") or {}, f"{path} (model_config)")


def describe_checkpoint(path: str | os.PathLike[str]) -> tuple[ModelConfig, dict[str, Any]]:
    """(config, metadata) of a checkpoint without building the network: for choosing and messages."""
    path = Path(path).expanduser()
    raw = read_checkpoint(path)
    if raw.get("format") == CHECKPOINT_FORMAT:
        return _config_from_ours(raw, path), dict(raw.get("training") or {})
    state = _state_dict_of(raw, path)
    meta = {k: v for k, v in raw.items() if k != "model" and not isinstance(v, (Mapping, torch.Tensor))}
    return infer_reference_config(state, str(path)), {"source": "reference implementation", **meta}


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu",
               n_images: int | None = None) -> tuple[ImpliCityNet, ModelConfig]:
    """Build the network of a checkpoint (ours or the reference's) and load its weights strictly.

    ``n_images``, when given, is the number of ortho-images the caller has: a mismatch is an
    InputError naming what the model expects. Returns the model in eval mode on ``device``.
    """
    path = Path(path).expanduser()
    raw = read_checkpoint(path)
    if raw.get("format") == CHECKPOINT_FORMAT:
        config = _config_from_ours(raw, path)
        state = raw.get("model")
        if not isinstance(state, Mapping):
            raise InputError(f"{path}: checkpoint has no 'model' state dict.")
    else:
        state = _state_dict_of(raw, path)
        config = infer_reference_config(state, str(path))
    if n_images is not None and n_images != config.n_images:
        raise InputError(f"{path}: {image_count_message(config.n_images, n_images)}. Give "
                         f"{config.n_images} ortho-image(s), or a model trained for {n_images}.")
    model = build_model(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise InputError(
            f"{path}: weights do not fit the {config.variant} architecture "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}). "
            "Is it a checkpoint of another network?")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shapes differ from what the config says
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
        raise InputError(f"{path}: weights do not fit the {config.variant} architecture: {first}") from None
    return model.to(device).eval(), dataclasses.replace(config)
