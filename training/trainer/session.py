"""One training run from a config file: pick the device, join torchrun, build the model and the
datasets, train. This is what ``implicity train`` calls; tests build :class:`Trainer` directly."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from implicity.core.errors import InputError
from implicity.core.yamlconfig import dataclass_from_mapping

from ..provenance import lineage_of
from .config import TrainConfig, degradation_family, load_train_config, ortho_augmentation
from .distributed import DistContext, init_distributed, shutdown_distributed
from .loop import RESUME_FILE, Trainer, seed_everything
from .parameters import zero_parameters


def build_model_from_config(config: TrainConfig) -> tuple[Any, Any]:
    """The network and its ModelConfig named by ``config.model`` (a YAML path or an inline mapping)."""
    from implicity.core.model import build_model, load_model_config

    model_config = load_model_config(config.model)
    return build_model(model_config), model_config


def align_model_config(model_config: Any, train: Any, source: str) -> Any:
    """The model config with the prepared data's normalisation constants.

    Inference must normalise exactly as training did: the checkpoint carries z_std and the image
    statistics of the training patches (the reference's DN statistics mean nothing for 8-bit
    orthos). Geometry that cannot be reconciled (patch size, image count and size) is an error.
    """
    manifest = train.manifest
    problems = []
    if int(manifest["n_images"]) != model_config.n_images:
        problems.append(f"the model ({model_config.variant}) takes {model_config.n_images} ortho-image(s), "
                        f"the prepared data has {manifest['n_images']}")
    if abs(float(manifest["patch_size"]) - model_config.patch_size) > 1e-9:
        problems.append(f"patch_size {model_config.patch_size:g} m (model) vs {manifest['patch_size']:g} m (data)")
    if model_config.n_images and int(manifest.get("image_size", 0)) != model_config.image_size:
        problems.append(f"image_size {model_config.image_size} px (model) vs {manifest.get('image_size')} px (data)")
    if problems:
        raise InputError(f"{source}: model and prepared data do not match: " + "; ".join(problems) +
                         ". Choose the model config that fits the data, or prepare the data for this model.")
    updates: dict[str, Any] = {"z_std": float(train.z_std)}
    if model_config.n_images:
        updates.update(image_mean=float(train.image_mean), image_std=float(train.image_std))
    return dataclasses.replace(model_config, **updates)


def initialise_from(model: Any, path: str, log: Any = print, grow: bool = False) -> int:
    """Copy the weights of checkpoint ``path`` whose names and shapes match into ``model``.

    Why: a run on new data or with robust inputs converges far faster from a trained network than
    from scratch. ImpliCity-0 names its point encoder ``encoder`` and mono/stereo ``point_encoder``,
    so either name is matched to the other. With ``grow`` (``init_grow``), narrower weights are laid
    into a wider network so that it computes what the checkpoint computed (core/model/growth.py),
    which is checked. Returns how many tensors were copied.
    """
    from implicity.core.model import load_model
    from implicity.core.model.growth import grow_state_dict, same_function

    source, _ = load_model(path, device="cpu")
    theirs = source.state_dict()
    ours = model.state_dict()
    renamed = {}
    for key in ours:
        for name in (key, key.replace("point_encoder.", "encoder.", 1), key.replace("encoder.", "point_encoder.", 1)):
            if name in theirs:
                renamed[key] = theirs[name]
                break
    if grow:
        copied = grow_state_dict(model, renamed, str(path))
    else:
        copied = {k: v.to(ours[k].dtype) for k, v in renamed.items() if v.shape == ours[k].shape}
    if not copied:
        raise InputError(f"init_from {path}: no weight of that checkpoint fits this model (names or shapes differ).")
    model.load_state_dict(copied, strict=False)
    if grow:
        same_function(source, model, str(path))
    widened = sum(1 for k, v in copied.items() if v.shape != renamed[k].shape)
    log(f"init_from {Path(path).name}: {len(copied)} of {len(ours)} tensors copied"
        + (f" ({widened} grown wider)" if grow else ""))
    return len(copied)


def _query_sampling(config: TrainConfig) -> Any:
    """The training split's query sampling: the manifest's, with ``data.queries`` laid over it
    (None without overrides: the dataset reads the manifest's own)."""
    if config.data.queries is None:
        return None
    from ..data.labels import QuerySamplingConfig
    from ..data.store import read_manifest

    _, manifest = read_manifest(config.data.root)
    merged = {**manifest.get("queries", {}), **config.data.queries}
    return dataclass_from_mapping(QuerySamplingConfig, merged, f"{config.source} [data.queries]")


def open_datasets(config: TrainConfig, image_normalization: str = "dataset") -> tuple[Any, Any]:
    """The training and validation splits of the prepared patches named by ``config.data``.

    ``image_normalization`` is the model's (see ``normalize_image``): the datasets normalise orthos
    exactly as inference will.
    """
    from ..data import PatchDataset
    from ..data.dataset import check_source_keys

    d = config.data
    if not d.root:
        raise InputError(f"{config.source}: data.root is empty. Set it to the folder (or manifest) "
                         "written by `implicity prepare`.")
    if not Path(d.root).exists():
        raise InputError(f"{config.source}: data.root {d.root} does not exist. Run `implicity prepare` "
                         "first, or point data.root at prepared patches.")
    family = degradation_family(config)
    train = PatchDataset(d.root, split=d.train_split, n_query=d.n_query, augment=d.augment, seed=config.seed,
                         degradation=family, photometric=ortho_augmentation(config),
                         image_normalization=image_normalization, query_config=_query_sampling(config),
                         patch_repeats=d.patch_repeats)
    val = PatchDataset(d.root, split=d.val_split, n_query=d.n_query_val, augment=False, seed=config.seed,
                       degradation=family, image_normalization=image_normalization)
    if config.loss.height_weight > 0 and config.loss.height_sources is not None:
        check_source_keys(train.manifest, config.loss.height_sources, "loss.height_sources", str(train.root))
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
        from implicity.core.model import load_model_config

        train, val = open_datasets(config, load_model_config(config.model).image_normalization)
        seed_everything(config.seed)
        model, model_config = build_model_from_config(config)
        model_config = align_model_config(model_config, train, config.source)
        model.config = model_config
        lineage = None
        if config.init_from and not resume:
            sources = config.init_from if isinstance(config.init_from, list) else [config.init_from]
            for path in sources:
                initialise_from(model, str(path), grow=config.init_grow)
            lineage = lineage_of([str(path) for path in sources])
        if config.zero_init and not resume:
            zeroed = zero_parameters(model, config.zero_init, config.source)
            print(f"zero_init: {zeroed} tensors set to 0 ({', '.join(config.zero_init)})")
        trainer = Trainer(config, model, model_config, train, val, ctx=ctx,
                          progress_bar=progress_bar and ctx.is_main, lineage=lineage)
        summary = trainer.fit(resume=resume)
    except BaseException:
        shutdown_distributed(ctx, wait_for_others=False)
        raise
    shutdown_distributed(ctx)
    return summary
