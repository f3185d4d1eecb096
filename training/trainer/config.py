"""Training configuration: dataclasses filled from YAML files that may inherit from each other.

A training YAML names its parent(s) with ``inherit_from`` (a path relative to the file, or a list
of them); the child's keys override the parent's, nested sections merge key by key. Keeping the
recipe as data lets ImpliCity-0/-mono/-stereo and their lite variants share one base file.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from implicity.core.errors import InputError
from implicity.core.yamlconfig import check_known_keys, dataclass_from_mapping, read_with_inheritance


@dataclass
class DataConfig:
    """Where the prepared patches are and how many queries each training sample draws."""

    root: str = ""                 # prepared-patch folder or manifest (relative to the YAML file)
    train_split: str = "train"
    val_split: str = "val"
    n_query: int = 20000           # query points per training patch
    n_query_val: int = 20000       # query points per validation patch (IoU)
    augment: bool = True           # random flips / rot90 in the training split
    num_workers: int = 0           # DataLoader worker processes
    max_val_patches: int | None = None
    # A mapping of training.data.degrade.DegradationFamily: every sample's input cloud is degraded
    # afresh from the patch's reference surface (train and val alike). None: the prepared clouds.
    degradation: dict[str, Any] | None = None
    # Photometric/geometric ortho augmentation (training split only): false, true (the defaults of
    # training.data.photometric.PhotometricAugmentation) or a mapping of its options.
    photometric: bool | dict[str, Any] = False
    # Overrides of the manifest's query sampling for the training split (a mapping of
    # training.data.labels.QuerySamplingConfig, e.g. {edge_fraction: 0.4, ...}); None: as prepared.
    queries: dict[str, Any] | None = None
    # Times each training patch of a source appears per epoch, by source name or type (e.g. {lidar: 4}:
    # the real scenes as often as the synthetic cities); a repeat is a new draw, not a copy.
    patch_repeats: dict[str, int] | None = None


@dataclass
class OptimConfig:
    """Adam with a cyclic learning rate; ``accumulate`` samples (batch 1) per optimizer step."""

    lr_base: float = 5e-5
    lr_max: float = 1e-3
    step_size_up: int = 1000
    step_size_down: int = 2500
    lr_mode: str = "triangular2"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    accumulate: int = 64
    grad_clip: float | None = None
    # Parameter-name prefixes kept fixed (not trained, not in Adam), e.g. [point_encoder., decoder.]:
    # train a new branch on top of a network that is already good without it.
    freeze: list[str] = field(default_factory=list)
    # Keep an exponential moving average of the weights (Polyak averaging; 0.98 ≈ the last 50 steps):
    # validation, best.pt and final.pt use the averaged weights, the resume checkpoint keeps both.
    # None: the weights as trained.
    ema_decay: float | None = None


@dataclass
class LossConfig:
    """Weighted BCE; the per-query weights come from the dataset's land-cover/validity masks."""

    use_weights: bool = True
    reduction: str = "mean"        # "mean": sum(w*bce)/M, as the reference; "weighted_mean": /sum(w)
    monotone_weight: float = 0.0   # > 0: add this times loss.monotone_penalty (occupancy rising with height) over
    monotone_dz_m: tuple[float, float] = (0.25, 2.0)  # each query paired with one this far above (m, uniform)
    height_weight: float = 0.0     # > 0: add this times loss.column_height_loss (L1 height of whole columns, m)
    height_columns: int = 128      # columns per sample, over random valid pixels of the reference DSM
    height_samples: int = 16       # queries per column
    height_range_m: float = 3.0    # each column spans twice this around the true height (m)
    height_jitter: float = 0.5     # column centres drawn within ± this × height_range_m of the true height
    # Sources (names or types, as in data.patch_repeats, e.g. [lidar]) whose samples get the columns;
    # None: every sample. Why: the loss lowers the real scenes' MedAE but raises the synthetic cities' MAE.
    height_sources: tuple[str, ...] | None = None


@dataclass
class ScheduleConfig:
    """How long to train and how often to log, validate and write the resume checkpoint."""

    max_steps: int = 10000         # optimizer steps
    max_epochs: int | None = None
    log_every: int = 1
    val_every: int = 500
    checkpoint_every: int = 500
    snapshot_every: int = 0        # also export the network as stepN.pt every N steps (0: never), so a
    #                                run's trajectory can be scored afterwards (tools/select_checkpoint.py)


@dataclass
class ValidationConfig:
    """Validation metrics and the model-selection rule."""

    select_on: str = "iou"         # "iou" (higher is better) or "dsm_medae" (lower is better)
    dsm: bool = True               # also reconstruct each validation patch's DSM (MedAE in metres)
    z_min_m: float = -100.0        # coarse height search range relative to the patch's z shift
    z_max_m: float = 80.0
    coarse_step_m: float = 16.0
    refinements: int = 4
    query_chunk: int = 300000


@dataclass
class TrainConfig:
    """One training run: model, data, recipe, and where its outputs go."""

    name: str = "implicity"
    model: Any = None              # path to a model YAML (relative to this file) or an inline mapping
    init_from: Any = None          # checkpoint(s) whose matching weights start the run (a path or a list;
                                   # later files override earlier ones)
    init_grow: bool = False        # init_from a narrower network of the same design: its weights are laid
                                   # into the wider one so that it starts computing the same function
                                   # (core/model/growth.py; checked), the new channels start unused
    zero_init: list[str] = field(default_factory=list)  # parameter-name prefixes set to 0 after init_from:
                                   # a new branch whose output layer starts at zero changes nothing at step 0
    out_dir: str = "runs/implicity"
    seed: int = 0
    device: str = "auto"           # "auto", "cpu", "cuda", "cuda:N"
    amp: bool = True               # mixed precision; only ever used on CUDA
    deterministic: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    source: str | None = None      # the YAML file it was read from (set by the loader)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for checkpoints and the run summary)."""
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "loss": LossConfig,
             "schedule": ScheduleConfig, "validation": ValidationConfig}
_PATH_KEYS = (("data", "root"), ("out_dir",), ("model",), ("init_from",))


def _absolutise_paths(raw: dict[str, Any], folder: Path) -> None:
    """Make relative paths absolute against the YAML file that wrote them, before merging."""
    for keys in _PATH_KEYS:
        holder: Any = raw
        for key in keys[:-1]:
            holder = holder.get(key) if isinstance(holder, Mapping) else None
        if isinstance(holder, dict):
            value = holder.get(keys[-1])
            if isinstance(value, str) and value and not os.path.isabs(value):
                holder[keys[-1]] = str((folder / value).resolve())
            elif isinstance(value, list):  # a list of paths (init_from)
                holder[keys[-1]] = [str((folder / v).resolve()) if isinstance(v, str) and not os.path.isabs(v)
                                    else v for v in value]


def read_yaml_with_inheritance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A training YAML with its ``inherit_from`` parents merged under it; relative paths absolute."""
    return read_with_inheritance(path, "training config", prepare=_absolutise_paths)


def _build_section(cls: type, values: Any, where: str) -> Any:
    if isinstance(values, Mapping) and "betas" in values:
        values = {**values, "betas": tuple(float(b) for b in values["betas"])}
    return dataclass_from_mapping(cls, values, where)


def train_config_from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> TrainConfig:
    """Build and check a :class:`TrainConfig` from an already merged mapping."""
    raw = dict(raw)
    raw.pop("inherit_from", None)
    check_known_keys(raw, (f.name for f in dataclasses.fields(TrainConfig)), source)
    sections = {name: _build_section(cls, raw.pop(name, None), f"{source} [{name}]")
                for name, cls in _SECTIONS.items()}
    config = TrainConfig(**{k: v for k, v in raw.items() if k != "source"}, **sections, source=source)
    validate_train_config(config)
    return config


def load_train_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a training YAML (with ``inherit_from``) into a checked :class:`TrainConfig`."""
    file = Path(path).expanduser().resolve()
    return train_config_from_dict(read_yaml_with_inheritance(file), source=str(file))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_height_range(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value)
            and 0 < value[0] <= value[1])


def _is_name_list(value: Any) -> bool:
    """A non-empty list (or tuple) of non-empty strings."""
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(k, str) and k for k in value)


def validate_train_config(c: TrainConfig) -> None:
    """Reject values that would fail late (after minutes of training) with a clear message now."""
    src = c.source or "training config"
    checks = [
        (c.model is not None, "model: give the path of a model YAML or an inline model mapping"),
        (c.optim.accumulate >= 1, "optim.accumulate must be >= 1"),
        (0 < c.optim.lr_base <= c.optim.lr_max, "optim.lr_base must be > 0 and <= optim.lr_max"),
        (c.optim.step_size_up >= 1 and c.optim.step_size_down >= 1, "optim.step_size_up/down must be >= 1"),
        (c.optim.ema_decay is None or (_is_number(c.optim.ema_decay) and 0.0 < c.optim.ema_decay < 1.0),
         "optim.ema_decay must be between 0 and 1 (e.g. 0.98), or null for no weight averaging"),
        (c.optim.lr_mode in ("triangular", "triangular2", "exp_range"),
         "optim.lr_mode must be triangular, triangular2 or exp_range"),
        (c.loss.reduction in ("mean", "weighted_mean"), "loss.reduction must be 'mean' or 'weighted_mean'"),
        (_is_number(c.loss.monotone_weight) and c.loss.monotone_weight >= 0, "loss.monotone_weight must be 0 (off) or a positive number"),
        (_is_height_range(c.loss.monotone_dz_m), "loss.monotone_dz_m must be [min, max] metres with 0 < min <= max"),
        (_is_number(c.loss.height_weight) and c.loss.height_weight >= 0,
         "loss.height_weight must be 0 (off) or a positive number"),
        (_is_count(c.loss.height_columns) and _is_count(c.loss.height_samples),
         "loss.height_columns and loss.height_samples must be whole numbers >= 1"),
        (_is_number(c.loss.height_range_m) and c.loss.height_range_m > 0,
         "loss.height_range_m must be a positive number of metres"),
        (_is_number(c.loss.height_jitter) and 0 <= c.loss.height_jitter <= 1,
         "loss.height_jitter must be between 0 (columns centred on the true height) and 1"),
        (c.loss.height_sources is None or _is_name_list(c.loss.height_sources),
         "loss.height_sources must be a non-empty list of source names or types (e.g. [lidar]), or null for all"),
        (c.schedule.max_steps >= 1, "schedule.max_steps must be >= 1"),
        (min(c.schedule.log_every, c.schedule.val_every, c.schedule.checkpoint_every) >= 1,
         "schedule.log_every/val_every/checkpoint_every must be >= 1"),
        (_is_count(c.schedule.snapshot_every) or c.schedule.snapshot_every == 0,
         "schedule.snapshot_every must be 0 (no snapshots) or a whole number of steps"),
        (c.validation.select_on in ("iou", "dsm_medae"), "validation.select_on must be 'iou' or 'dsm_medae'"),
        (c.validation.select_on != "dsm_medae" or c.validation.dsm,
         "validation.select_on 'dsm_medae' needs validation.dsm: true"),
        (c.data.n_query >= 1 and c.data.n_query_val >= 1, "data.n_query and data.n_query_val must be >= 1"),
        (c.data.num_workers >= 0, "data.num_workers must be >= 0"),
        (isinstance(c.optim.freeze, (list, tuple)) and all(isinstance(x, str) and x for x in c.optim.freeze),
         "optim.freeze must be a list of parameter-name prefixes, e.g. [point_encoder., decoder.]"),
        (isinstance(c.zero_init, (list, tuple)) and all(isinstance(x, str) and x for x in c.zero_init),
         "zero_init must be a list of parameter-name prefixes, e.g. [image_encoder.l1.]"),
        (isinstance(c.init_grow, bool), "init_grow must be true or false"),
        (not c.init_grow or (isinstance(c.init_from, str) and c.init_from != "")
         or (isinstance(c.init_from, list) and len(c.init_from) == 1),
         "init_grow needs exactly one init_from checkpoint (the narrower network to grow)"),
        (c.device == "auto" or c.device == "cpu" or c.device.startswith("cuda"),
         "device must be auto, cpu, cuda or cuda:N"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(f"{src}: {message}.")
    degradation_family(c)  # both parse now, with the config's name, not when the run opens its data
    ortho_augmentation(c)


def degradation_family(c: TrainConfig) -> Any:
    """The :class:`~training.data.degrade.DegradationFamily` ``data.degradation`` asks for (None:
    the prepared clouds)."""
    from ..data.degrade import family_from_mapping

    if c.data.degradation is None:
        return None
    return family_from_mapping(c.data.degradation, f"{c.source or 'training config'} [data.degradation]")


def ortho_augmentation(c: TrainConfig) -> Any:
    """The :class:`~training.data.photometric.PhotometricAugmentation` ``data.photometric`` asks for:
    None (false), the defaults (true) or the given options."""
    from ..data.photometric import PhotometricAugmentation

    value = c.data.photometric
    if isinstance(value, bool):
        return PhotometricAugmentation() if value else None
    return dataclass_from_mapping(PhotometricAugmentation, value, f"{c.source or 'training config'} [data.photometric]")
