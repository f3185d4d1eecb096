"""Checkpoint selection by the DSM a checkpoint makes, on the validation split only.

Why: the trainer's in-loop validation (``validation.py``) scores a 0.25 m-step search on a fixed
draw of 24 patches, and its DSM MedAE moves by ±0.03 m between neighbouring checkpoints of one run:
picking the lowest of such numbers picks noise. This scores what users get instead: the whole
reconstruction (``reconstruct_dsm``, fast mode, evidence rules) on the validation split's
non-overlapping 64 m patches, each under two input clouds drawn from the training family with the
held-out variants excluded — one at the model card's typical stereo strength, one over the family's
full ranges — and pools MedAE, MAE and NMAD over all of them, and over the real and the synthetic
sets apart (their mean score is the *balanced* score, :data:`GROUPS`). Nothing here reads a held-out scene
or the held-out degradation variant, so selecting with it keeps the protocol honest.

    .venv/bin/python tools/select_checkpoint.py runs/implicity_0_context_lite/snapshots/*.pt
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from implicity.core.errors import InputError

#: Pixels left out along each patch border: there a window sees points on one side only.
BORDER_PX = 8
#: Score = MedAE + MAE (metres, pooled over the sets scored): the product is judged on both (see the
#: model card).
SCORE = ("medae", "mae")
#: The validation sets' two kinds. The split holds about three synthetic sets per real one, while
#: users bring real clouds and two of the three held-out scenes are real: the *balanced* score
#: (the mean of the two groups' scores) gives the real scenes half the say.
GROUPS = ("real", "synthetic")


@dataclass(frozen=True)
class ValidationSet:
    """One validation patch under one input cloud, on disk."""

    name: str
    cloud: Path
    orthos: tuple[Path, ...]
    reference: np.ndarray      # (H, W) heights, NaN where there is no reference
    extent: tuple[float, float, float, float]
    group: str                 # "real" (a LiDAR scene) or "synthetic" (a synthetic city): see GROUPS


def non_overlapping(entries: list[dict[str, Any]], patch_size: float) -> list[dict[str, Any]]:
    """The patches of each source whose origins lie a whole number of patch sizes from the source's
    first one: patches are cut at a stride smaller than their size, this keeps disjoint squares."""
    def on_lattice(offset: float) -> bool:
        k = offset / patch_size
        return abs(k - round(k)) < 1e-6

    keep: list[dict[str, Any]] = []
    for source in sorted({e["source"] for e in entries}):
        own = [e for e in entries if e["source"] == source]
        x0, y0 = min(e["x0"] for e in own), min(e["y0"] for e in own)
        keep += [e for e in own if on_lattice(e["x0"] - x0) and on_lattice(e["y0"] - y0)]
    return keep


def check_validation_fattening(variant: str) -> str:
    """``"fattening:VARIANT"`` for a fattening variant validation may force, or a one-line InputError:
    unknown names, and the held-out variant, which selection must never see."""
    from .data.degrade import VARIANTS
    from .protocol import HELD_OUT_VARIANTS

    allowed = [v for v in VARIANTS["fattening"] if f"fattening:{v}" not in HELD_OUT_VARIANTS]
    if variant not in allowed:
        why = ("is held out of training and selection" if f"fattening:{variant}" in HELD_OUT_VARIANTS
               else "is not a fattening variant (unknown)")
        raise InputError(f"fattening '{variant}' {why}; use one of {', '.join(allowed)}.")
    return f"fattening:{variant}"


def validation_sets(root: str | Path, folder: Path, seed: int = 77, split: str = "val",
                    ortho_shift_m: tuple[float, float] = (0.0, 0.0),
                    ortho_lean_deg: tuple[float, float] | None = None,
                    fattening: str | None = None) -> list[ValidationSet]:
    """Write the input clouds (and orthos) of every validation set into ``folder``.

    ``ortho_shift_m`` (east, north) writes every ortho that far from where it belongs: a misregistered
    ortho, to measure how much an image model loses when the image does not fit the cloud.
    ``ortho_lean_deg`` (azimuth, off-nadir angle) writes every ortho as a standard ortho seen from that
    view shows the patch (elevated objects leaning, ``stereo_view.leaning_view``); the patches'
    own orthos are true orthos (rendered, or made from point colours). ``fattening`` draws every cloud's
    edge fattening from that variant alone (a robustness check against one kind of edge error; never a
    held-out variant, which selection must not see)."""
    from rasterio.crs import CRS

    from implicity.core.pointcloud import PointCloud, write_point_cloud_npz
    from implicity.core.raster import GridSpec, write_geotiff

    from .data.degrade import DegradationFamily, degrade_surface
    from .data.stereo_view import leaning_view
    from .data.store import load_patch, read_manifest, source_types
    from .protocol import HELD_OUT_VARIANTS, TEST_RANGES

    forced = (check_validation_fattening(fattening),) if fattening is not None else ()
    root, manifest = read_manifest(root)
    kinds = source_types(manifest)
    entries = non_overlapping([e for e in manifest["patches"] if e["split"] == split], float(manifest["patch_size"]))
    crs = CRS.from_epsg(32632)  # patch-local coordinates placed in a metric CRS; only metres matter
    x0, y0 = 500000.0, 5000000.0
    strengths = {"typical": TEST_RANGES, "family": {}}
    dx, dy = ortho_shift_m
    sets = []
    for i, entry in enumerate(entries):
        patch = load_patch(root / entry["file"])
        dsm = patch.dsm.astype(np.float64)
        n_rows, n_cols = dsm.shape
        res = float(patch.resolution)
        grid = GridSpec.from_bounds(x0, y0, x0 + n_cols * res, y0 + n_rows * res, res, crs)
        ortho_grid = GridSpec.from_bounds(x0 + dx, y0 + dy, x0 + dx + n_cols * res, y0 + dy + n_rows * res, res, crs)
        images = [np.asarray(img, np.float32) for img in patch.images]
        if ortho_lean_deg is not None:
            images = [leaning_view(img, dsm, res, *ortho_lean_deg) for img in images]
        orthos = tuple(write_geotiff(folder / f"p{i}_ortho{k}.tif", img, ortho_grid) for k, img in enumerate(images))
        reference = np.where(patch.valid > 0, dsm, np.nan)
        for j, (strength, ranges) in enumerate(strengths.items()):
            family = DegradationFamily(exclude=HELD_OUT_VARIANTS, only=forced, **ranges)
            xyz = degrade_surface(np.random.default_rng([seed, i, j]), dsm, patch.valid, res, family).xyz
            cloud = folder / f"p{i}_{strength}.npz"
            write_point_cloud_npz(cloud, PointCloud(xyz=xyz + np.array([x0, y0, 0.0]), crs=crs, source=str(cloud)))
            group = "synthetic" if kinds.get(entry["source"]) == "synthetic" else "real"
            sets.append(ValidationSet(f"{entry['source']} #{i} {strength}", cloud, orthos, reference, grid.bounds,
                                      group))
    return sets


def _residuals(path: Path, reference: np.ndarray) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        dsm = src.read(1, masked=True).filled(np.nan)
    b = BORDER_PX
    ref = reference[b:-b, b:-b]
    err = (dsm[b:-b, b:-b] - ref)[np.isfinite(ref)]
    return np.where(np.isfinite(err), err, np.nan)


def metrics(residuals: np.ndarray) -> dict[str, float]:
    """The evaluation's statistics (``Metrics.of``) of the finite residuals, the share of reference
    pixels left without a height, and the selection score MedAE + MAE."""
    from implicity.core.evaluation import Metrics

    missing = ~np.isfinite(residuals)
    m = Metrics.of(residuals[~missing])
    return {"medae": m.medae, "mae": m.mae, "rmse": m.rmse, "nmad": m.nmad, "missing": float(missing.mean()),
            "score": m.medae + m.mae}


def grouped_metrics(residuals: list[np.ndarray], groups: list[str]) -> dict[str, Any]:
    """:func:`metrics` of all sets' residuals pooled, plus per group (``groups[i]`` is set i's) and
    ``balanced``: the mean of the groups' scores (the pooled score where one group is present)."""
    pooled = metrics(np.concatenate(residuals))
    by_group = {g: metrics(np.concatenate([r for r, k in zip(residuals, groups) if k == g]))
                for g in GROUPS if g in groups}
    return {**pooled, "groups": by_group,
            "balanced": float(np.mean([m["score"] for m in by_group.values()])) if by_group else pooled["score"]}


def score_checkpoints(checkpoints: list[Path], data_root: str | Path, device: str = "cpu",
                      with_baseline: bool = True, log: Callable[[str], None] = print,
                      symmetries: int = 1, ortho_shift_m: tuple[float, float] = (0.0, 0.0),
                      overrides: dict[str, Any] | None = None,
                      ortho_lean_deg: tuple[float, float] | None = None,
                      fattening: str | None = None) -> dict[str, dict[str, float]]:
    """{label: metrics} for the baseline (3 × 3 median-filtered gridding) and every checkpoint,
    reconstructed with the engine's defaults (and ``symmetries`` copies averaged, symmetry.py;
    ``overrides``: dotted reconstruction options other than the default, ``with_overrides``),
    with the orthos moved by ``ortho_shift_m`` and leaning as seen from ``ortho_lean_deg``, and every
    cloud's edge fattening drawn from ``fattening`` alone (:func:`validation_sets`)."""
    from implicity.core.baseline import make_baseline_dsm
    from implicity.core.model import load_model
    from implicity.core.reconstruct import ReconstructionInputs, ReconstructionOptions, reconstruct_dsm, with_overrides

    from .protocol import BASELINE

    options = with_overrides(ReconstructionOptions(device=device, symmetries=symmetries), overrides or {})
    results: dict[str, dict[str, float]] = {}
    # Every checkpoint is read first: a wrong path fails in a second, not after the sets are built.
    n_images = {path: int(load_model(path, device="cpu")[1].n_images) for path in checkpoints}
    with tempfile.TemporaryDirectory(prefix="implicity-select-") as tmp:
        folder = Path(tmp)
        sets = validation_sets(data_root, folder, ortho_shift_m=ortho_shift_m, ortho_lean_deg=ortho_lean_deg,
                               fattening=fattening)
        log(f"{len(sets)} validation sets from {data_root}")
        if with_baseline:
            res = []
            for s in sets:
                make_baseline_dsm(s.cloud, folder / "b.tif", _resolution(s), extent=s.extent, smooth=3, **BASELINE)
                res.append(_residuals(folder / "b.tif", s.reference))
            results["baseline 3×3 median"] = grouped_metrics(res, [s.group for s in sets])
        for path in checkpoints:
            res = []
            for s in sets:
                out = folder / "m.tif"
                reconstruct_dsm(ReconstructionInputs(points=s.cloud, model=path, out_path=out,
                                                     resolution=_resolution(s), orthos=s.orthos[:n_images[path]],
                                                     extent=s.extent),
                                options)
                res.append(_residuals(out, s.reference))
            results[str(path)] = grouped_metrics(res, [s.group for s in sets])
            m = results[str(path)]
            log(f"{path}: MedAE {m['medae']:.3f} MAE {m['mae']:.3f} NMAD {m['nmad']:.3f} m, balanced score "
                f"{m['balanced']:.3f}")
    return results


def _resolution(s: ValidationSet) -> float:
    x0, _, x1, _ = s.extent
    return (x1 - x0) / s.reference.shape[1]


def export_resume_state(resume: Path, like: Path, out: Path) -> Path:
    """The weights of a trainer resume checkpoint (``last.ckpt``) as a network checkpoint, with the
    config and normalisation of ``like`` (a checkpoint the same run exported, e.g. its best.pt). A run
    with ``optim.ema_decay`` gives its averaged weights, like its own best.pt and final.pt."""
    from implicity.core.errors import InputError
    from implicity.core.model import load_model, save_checkpoint
    from implicity.core.model.checkpoint import read_checkpoint

    from .trainer.checkpointing import load_train_state

    state = load_train_state(resume)
    model, config = load_model(like, device="cpu")
    try:
        model.load_state_dict(state.get("ema") or state.get("model") or {}, strict=True)
    except RuntimeError:
        raise InputError(f"{resume}: its weights do not fit the network of {like}; give --like a checkpoint "
                         "exported by the same training run.") from None
    progress = state.get("progress", {})
    training = dict(read_checkpoint(Path(like)).get("training") or {})
    training.update(step=int(progress.get("step", -1)), samples=progress.get("samples"),
                    wall_time_s=progress.get("wall_time_s"), exported_from=Path(resume).name)
    return save_checkpoint(out, model, config, training=training)


def interpolate_weights(a: Path, b: Path, t: float | dict[str, float], out: Path) -> Path:
    """The network ``(1 − t) · a + t · b``, weight by weight, with ``a``'s config and normalisation.

    Why: two checkpoints of one lineage (a run continued from a shipped model) often differ by a small
    move in weight space; the points between them are candidates too, which the validation split ranks
    like any other (a "soup" of two). ``t`` may also give each part of the network its own point,
    ``{"encoder": 1.0, "decoder": 0.0}`` (the first name of the weights' keys; every part named), so
    that one part can move while the other stays. Both must be the same network; integer buffers are
    ``a``'s."""
    import torch

    from implicity.core.errors import InputError
    from implicity.core.model import load_model, save_checkpoint
    from implicity.core.model.checkpoint import describe_checkpoint

    from .provenance import lineage_of

    net_a, config = load_model(a, device="cpu")
    net_b, config_b = load_model(b, device="cpu")
    state_a, state_b = net_a.state_dict(), net_b.state_dict()
    if state_a.keys() != state_b.keys() or any(state_a[k].shape != state_b[k].shape for k in state_a):
        raise InputError(f"{a} and {b} are not the same network; only checkpoints of one architecture "
                         "(the same model config) can be interpolated.")
    if config_b != config:  # e.g. orthos normalised with other statistics: the weights expect other inputs
        da, db = config.to_dict(), config_b.to_dict()
        differ = sorted(k for k in {*da, *db} if da.get(k) != db.get(k))
        raise InputError(f"{a} and {b} differ in their model config ({', '.join(differ)}); only checkpoints "
                         "with the same config can be interpolated.")
    parts = sorted({k.split(".")[0] for k in state_a})
    weights = dict(t) if isinstance(t, dict) else {part: float(t) for part in parts}
    if sorted(weights) != parts:
        raise InputError(f"interpolation weights for {', '.join(sorted(weights))}: give one for each part of "
                         f"the network ({', '.join(parts)}), or one number for all.")
    for part, w in weights.items():
        if not 0.0 <= w <= 1.0:
            raise InputError(f"interpolation weight {w:g} ({part}): give a value from 0 ({a.name}) to 1 ({b.name}).")
    mixed = {k: torch.lerp(v.float(), state_b[k].float(), weights[k.split(".")[0]]).to(v.dtype)
             if v.is_floating_point() else v for k, v in state_a.items()}
    net_a.load_state_dict(mixed)
    _config, training = describe_checkpoint(a)
    shared = set(weights.values())
    record = {"a": a.name, "b": b.name, "t": shared.pop() if len(shared) == 1 else weights,
              "steps": [checkpoint_step(a), checkpoint_step(b)]}
    # a soup has seen what either end saw (training/provenance.py)
    return save_checkpoint(out, net_a, config, training={**training, "step": None, "interpolated": record,
                                                         "lineage": lineage_of([str(a), str(b)])})


def parse_interpolation(text: str) -> float | dict[str, float]:
    """``"0.25"`` → 0.25; ``"encoder=1,decoder=0"`` → {"encoder": 1.0, "decoder": 0.0} (``--between``)."""
    from implicity.core.errors import InputError

    try:
        if "=" not in text:
            return float(text)
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise InputError(f"interpolation weight {text!r}: give a number from 0 to 1, or PART=T,PART=T "
                         "(e.g. encoder=1,decoder=0).") from None


def checkpoint_step(path: Path) -> int | None:
    """The training step a network checkpoint records: ``step`` (exported resume states, shipped
    files), else ``steps`` (a run's own best.pt / final.pt); None for one no step made."""
    from implicity.core.model.checkpoint import read_checkpoint

    training = read_checkpoint(path).get("training") or {}
    step = training.get("step", training.get("steps"))
    return int(step) if step is not None else None


#: Logit per decoder unit of height above the prior in :func:`prior_only`. The logit is linear in
#: height and zero exactly on the prior; the gain only makes the occupancy flip sharply there.
PRIOR_ONLY_GAIN = 20.0


def prior_only(source: Path, out: Path) -> Path:
    """``source``'s network with its decoder replaced by −gain × (height above the prior).

    Why: with ``height_reference: prior`` the DSM is the network's correction of a classical
    surface computed inside it; this checkpoint makes the DSM of that surface alone through the
    same reconstruction (windows, blending, evidence rules), so a selection table can show what
    the learnt part adds. Every feature projection and residual block is zeroed; two hidden units
    carry ±(height above the prior) and the output layer subtracts them.
    """
    import torch

    from implicity.core.errors import InputError
    from implicity.core.model import load_model, save_checkpoint

    model, config = load_model(source)
    if config.height_reference != "prior":
        raise InputError(f"{source}: its network has no surface prior (height_reference "
                         f"{config.height_reference!r}); --prior-of needs a robust model.")
    decoder = model.decoder
    with torch.no_grad():
        for module in (*decoder.fc_c, *(block.fc_1 for block in decoder.blocks), decoder.fc_p, decoder.fc_out):
            module.weight.zero_()
            module.bias.zero_()
        decoder.fc_p.weight[0, 2], decoder.fc_p.weight[1, 2] = -1.0, 1.0
        decoder.fc_out.weight[:, 0], decoder.fc_out.weight[:, 1] = PRIOR_ONLY_GAIN, -PRIOR_ONLY_GAIN
    return save_checkpoint(out, model, config, training={"prior_only_of": Path(source).name})


def ship_checkpoint(source: Path, target: Path, shipped: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``source`` to ``target`` in the shipped format (float16), keeping its config,
    normalisation and training record and adding ``shipped`` (where from, why) and ``extra``."""
    from implicity.core.model import load_model, save_checkpoint
    from implicity.core.model.checkpoint import describe_checkpoint

    model, config = load_model(source)
    _config, training = describe_checkpoint(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(target, model, config, training={**training, **(extra or {}), "shipped": shipped},
                           half=True)
