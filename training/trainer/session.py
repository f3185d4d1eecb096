"""One training run from a config file: pick the device, join torchrun, build the model and the
datasets, train. This is what ``implicity train`` calls; tests build :class:`Trainer` directly."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from implicity.core.errors import InputError

from .config import TrainConfig, load_train_config
from .distributed import DistContext, init_distributed, shutdown_distributed
from .loop import RESUME_FILE, Trainer, seed_everything


def build_model_from_config(config: TrainConfig) -> tuple[Any, Any]:
    """The network and its ModelConfig named by ``config.model`` (a YAML path or an inline mapping)."""
    from implicity.core.model import build_model, load_model_config

    model_config = load_model_config(config.model)
    return build_model(model_config), model_config


def open_datasets(config: TrainConfig) -> tuple[Any, Any]:
    """The training and validation splits of the prepared patches named by ``config.data``."""
    from implicity.training.data import PatchDataset

    d = config.data
    if not d.root:
        raise InputError(f"{config.source}: data.root is empty. Set it to the folder (or manifest) "
                         "written by `implicity prepare`.")
    if not Path(d.root).exists():
        raise InputError(f"{config.source}: data.root {d.root} does not exist. Run `implicity prepare` "
                         "first, or point data.root at prepared patches.")
    train = PatchDataset(d.root, split=d.train_split, n_query=d.n_query, augment=d.augment, seed=config.seed)
    val = PatchDataset(d.root, split=d.val_split, n_query=d.n_query_val, augment=False, seed=config.seed)
    return train, val


def run_training(config_path: str | os.PathLike[str], resume: bool = False, device: str | None = None,
                 out_dir: str | None = None, max_steps: int | None = None, data_root: str | None = None,
                 progress_bar: bool = True) -> dict[str, Any]:
    """Train as ``config_path`` says; with ``resume`` continue from ``out_dir/last.ckpt``.

    ``device``, ``out_dir``, ``max_steps`` and ``data_root`` override the config's values.
    """
    config = load_train_config(config_path)
    if device is not None:
        config.device = device
    if data_root is not None:
        config.data = dataclasses.replace(config.data, root=str(Path(data_root).expanduser().resolve()))
    if out_dir is not None:
        config.out_dir = str(Path(out_dir).expanduser().resolve())
    if max_steps is not None:
        config.schedule = dataclasses.replace(config.schedule, max_steps=max_steps)
    resume_file = Path(config.out_dir) / RESUME_FILE
    if not resume and resume_file.exists():
        raise InputError(f"{config.out_dir} already holds a run ({resume_file.name}). Continue it with "
                         "--resume, or choose another out_dir (--out-dir) to start afresh.")
    ctx: DistContext = init_distributed(config.device)
    try:
        seed_everything(config.seed)
        model, model_config = build_model_from_config(config)
        train, val = open_datasets(config)
        trainer = Trainer(config, model, model_config, train, val, ctx=ctx,
                          progress_bar=progress_bar and ctx.is_main)
        return trainer.fit(resume=resume)
    finally:
        shutdown_distributed(ctx)
