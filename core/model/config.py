"""The network's configuration as data: one dataclass, YAML files that inherit from each other.

The defaults are the reference implementation's (ImpliCity-0 with a 64 m patch), so a config only
states what differs. Every size that drives compute is a field, which is what makes the small
"lite" models for CPU training possible without touching code.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..normalization import DEFAULT_Z_STD
from ..vocabulary import variant_name
from ..yamlconfig import check_known_keys, read_with_inheritance, resolve_inheritance

#: Reference ortho-image (panchromatic DN) statistics of the demo configuration.
DEFAULT_IMAGE_MEAN = 1132.664
DEFAULT_IMAGE_STD = 487.496

HEIGHT_REFERENCES = ("window", "prior")
PLANE_CONTEXTS = ("none", "prior")
PRIOR_REFINEMENTS = ("none", "bilateral")
#: How [0, 1] patch coordinates address the plane's cells when features are sampled (decoder.py).
PLANE_SAMPLINGS = ("corners", "centres")
IMAGE_NORMALIZATIONS = ("dataset", "per_image")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class ModelConfig:
    """Everything that defines an ImpliCity network and the coordinates it expects."""

    name: str = "ImpliCity-0"
    n_images: int = 0                   # 0: ImpliCity-0, 1: mono, 2: stereo
    n_classes: int = 1                  # 1: occupancy logit; 3: free / building / terrain
    # patch geometry and normalisation
    patch_size: float = 64.0            # metres per patch side (x, y -> [0, 1])
    z_std: float = DEFAULT_Z_STD        # z -> (z - median) / z_std
    image_size: int = 128               # ortho pixels per patch side
    image_mean: float = DEFAULT_IMAGE_MEAN
    image_std: float = DEFAULT_IMAGE_STD
    # point encoder (local-pool PointNet + 2D U-Net over the xy plane)
    hidden_dim: int = 32
    feature_dim: int = 32
    encoder_blocks: int = 5
    plane_resolution: int = 128         # cells per patch side
    unet_depth: int = 5
    unet_start_filters: int = 32
    # image encoder (stacked hourglass); used when n_images > 0
    image_stacks: int = 4
    image_hourglass_depth: int = 2
    image_stem_channels: int = 64
    image_channels: int = 256
    image_norm_groups: int = 32
    # decoder
    decoder_hidden_dim: int = 32
    decoder_blocks: int = 5
    # robust inputs (off by default: the reference's networks see window-median heights and the
    # data set's image statistics). See prior.py and core/normalization.py for why they help.
    height_reference: str = "window"    # "window": z − window median; "prior": z − robust surface prior
    prior_z_scale: float = 4.0          # metres per decoder unit of the prior-relative height
    prior_outlier_m: float = 5.0        # cells this far from their 5 × 5 median leave the prior
    prior_smoothing: int = 3            # side of the prior's median filter (cells)
    prior_refinement: str = "none"      # "bilateral": edge-preserving robust mean of the points on top
                                        # of the median surface (prior.bilateral_refinement)
    prior_refine_radius_m: float = 2.0  # reach of that mean (metres)
    prior_noise_floor_m: float = 0.1    # the smallest height noise it assumes (metres)
    point_clip_m: float = 0.0           # > 0: clamp input points to prior ± this before encoding
    point_height: str = "window"        # encoder's z: "window" (z − window median) / z_std; "prior":
                                        # (z − prior) / prior_z_scale (needs height_reference: prior)
    image_normalization: str = "dataset"  # "dataset": (v − image_mean) / image_std; "per_image": robust per window
    plane_context: str = "none"         # "prior": the U-Net also sees the prior's relief and the point
                                        # density per cell (needs height_reference: prior; prior.py)
    plane_sampling: str = "corners"     # "corners": [0, 1] on the first / last cell centres, as the
                                        # reference (align_corners=True); "centres": on the outer cell
                                        # edges, so a point reads the cell it was scattered into

    def __post_init__(self) -> None:
        self.validate()

    @property
    def variant(self) -> str:
        """ImpliCity-0 / -mono / -stereo by the number of ortho-images."""
        return variant_name(self.n_images)

    @property
    def image_divisor(self) -> int:
        """``image_size`` must be a multiple of this (stride-2 stem, pooling, hourglass levels)."""
        return 4 * 2 ** self.image_hourglass_depth

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python mapping (what checkpoints store)."""
        return dataclasses.asdict(self)

    def validate(self, source: str = "model config") -> None:
        """Raise InputError for sizes the network cannot be built with."""
        problems: list[str] = []
        positive = ("patch_size", "z_std", "image_size", "image_std", "hidden_dim", "feature_dim",
                    "encoder_blocks", "plane_resolution", "unet_depth", "unet_start_filters",
                    "decoder_hidden_dim", "decoder_blocks", "image_stacks", "image_hourglass_depth",
                    "image_stem_channels", "image_channels", "image_norm_groups")
        for key in positive:
            if not getattr(self, key) > 0:
                problems.append(f"{key} must be > 0 (got {getattr(self, key)})")
        if self.n_images not in (0, 1, 2):
            problems.append(f"n_images must be 0, 1 or 2 (got {self.n_images})")
        if self.height_reference not in HEIGHT_REFERENCES:
            problems.append(f"height_reference must be one of {HEIGHT_REFERENCES} (got {self.height_reference!r})")
        if self.point_height not in HEIGHT_REFERENCES:
            problems.append(f"point_height must be one of {HEIGHT_REFERENCES} (got {self.point_height!r})")
        elif self.point_height == "prior" and self.height_reference != "prior":
            problems.append("point_height 'prior' needs height_reference 'prior'")
        if self.plane_context not in PLANE_CONTEXTS:
            problems.append(f"plane_context must be one of {PLANE_CONTEXTS} (got {self.plane_context!r})")
        elif self.plane_context == "prior" and self.height_reference != "prior":
            problems.append("plane_context 'prior' needs height_reference 'prior'")
        if self.prior_refinement not in PRIOR_REFINEMENTS:
            problems.append(f"prior_refinement must be one of {PRIOR_REFINEMENTS} (got {self.prior_refinement!r})")
        elif self.prior_refinement != "none" and self.height_reference != "prior":
            problems.append(f"prior_refinement {self.prior_refinement!r} needs height_reference 'prior'")
        if not (self.prior_refine_radius_m > 0 and self.prior_noise_floor_m > 0):
            problems.append("prior_refine_radius_m and prior_noise_floor_m must be > 0")
        if self.plane_sampling not in PLANE_SAMPLINGS:
            problems.append(f"plane_sampling must be one of {PLANE_SAMPLINGS} (got {self.plane_sampling!r})")
        if self.image_normalization not in IMAGE_NORMALIZATIONS:
            problems.append(f"image_normalization must be one of {IMAGE_NORMALIZATIONS} "
                            f"(got {self.image_normalization!r})")
        if not (self.prior_z_scale > 0 and self.prior_outlier_m > 0 and self.prior_smoothing >= 1
                and self.point_clip_m >= 0):
            problems.append("prior_z_scale and prior_outlier_m must be > 0, prior_smoothing >= 1, point_clip_m >= 0")
        if self.n_classes not in (1, 3):
            problems.append(f"n_classes must be 1 or 3 (got {self.n_classes})")
        if self.n_images > 0 and not problems:
            if self.image_size % self.image_divisor:
                problems.append(f"image_size {self.image_size} must be a multiple of {self.image_divisor} "
                                f"(4 · 2^image_hourglass_depth)")
            g = self.image_norm_groups
            for ch in (self.image_stem_channels, 2 * self.image_stem_channels, self.image_stem_channels // 2,
                       self.image_channels, self.image_channels // 2, self.image_channels // 4):
                if ch % g:
                    problems.append(f"image_norm_groups {g} must divide every image-encoder width "
                                    f"(stem {self.image_stem_channels}, hourglass {self.image_channels}); {ch} is not")
                    break
            if self.image_channels % 4 or self.image_stem_channels % 2:
                problems.append("image_channels must be a multiple of 4 and image_stem_channels even")
        if problems:
            raise InputError(f"{source}: " + "; ".join(problems) + ". Fix these fields.")


_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def config_from_mapping(data: Mapping[str, Any], source: str = "model config") -> ModelConfig:
    """A validated ModelConfig from a flat mapping; unknown keys are errors (typos must not pass)."""
    check_known_keys(data, _FIELDS, source, what="model config field")
    types = {f.name: f.type for f in dataclasses.fields(ModelConfig)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        kind = types[key]
        try:
            if kind == "int":
                if isinstance(value, bool) or float(value) != int(value):
                    raise ValueError
                values[key] = int(value)
            elif kind == "float":
                values[key] = float(value)
            else:
                values[key] = str(value)
        except (TypeError, ValueError):
            raise InputError(f"{source}: field '{key}' must be {kind}, got {value!r}.") from None
    cfg = ModelConfig.__new__(ModelConfig)
    for f in dataclasses.fields(ModelConfig):
        setattr(cfg, f.name, values.get(f.name, f.default))
    cfg.validate(source)
    return cfg


def load_model_config(path_or_dict: str | os.PathLike[str] | Mapping[str, Any] | ModelConfig,
                      base_dir: str | os.PathLike[str] | None = None) -> ModelConfig:
    """Load a ModelConfig from a YAML file, a mapping or an existing config.

    ``inherit_from`` (a path or list of paths) is resolved relative to the file that names it; for
    a mapping, relative to ``base_dir`` (default: the shipped ``configs/`` folder, so
    ``{"inherit_from": "ImpliCity-mono.yaml"}`` works from anywhere).
    """
    if isinstance(path_or_dict, ModelConfig):
        return dataclasses.replace(path_or_dict)
    if isinstance(path_or_dict, Mapping):
        base = Path(base_dir) if base_dir is not None else CONFIG_DIR
        data = resolve_inheritance(path_or_dict, base, "model config", search_dirs=(CONFIG_DIR,))
        return config_from_mapping(data, "model config mapping")
    path = Path(path_or_dict).expanduser()
    if not path.is_absolute() and not path.exists() and (CONFIG_DIR / path).is_file():
        path = CONFIG_DIR / path          # a bare name such as "ImpliCity-stereo.yaml"
    data = read_with_inheritance(path, "model config", search_dirs=(CONFIG_DIR,))
    return config_from_mapping(data, str(path))


def reference_config(n_images: int, n_classes: int = 1) -> ModelConfig:
    """The reference implementation's default configuration for 0, 1 or 2 ortho-images."""
    files = {0: "train_base.yaml", 1: "ImpliCity-mono.yaml", 2: "ImpliCity-stereo.yaml"}
    if n_images not in files:
        raise InputError(f"no reference ImpliCity configuration with {n_images} ortho-images (0, 1 or 2).")
    cfg = load_model_config(CONFIG_DIR / files[n_images])
    return dataclasses.replace(cfg, n_classes=n_classes)
