"""What a trained network has seen: its training record and those of the checkpoints it started from.

Why: a held-out set is only held out if no run in the network's lineage trained or selected on it.
A run fine-tuned (``init_from``) from another inherits everything that one saw, and a shipped file
is often replaced later under the same name, so a path in an old record cannot be followed. The
trainer therefore copies, at the start of a run, the record of every ``init_from`` checkpoint (with
its SHA-256 and that checkpoint's own lineage) into the new run's record (:func:`lineage_of`), and
:func:`exposure` walks that tree back to random weights.

What counts as seen, per run: the prepared dataset's sources whose patches fall in the training or
the validation split (selection reads validation); a degradation variant the run's family did not
exclude; and the stored clouds of the earlier simulator (``training/data/simulate.py``, what
``implicity prepare`` writes), which a run trains on when it has no degradation family.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The splits a run reads: it trains on one and selects its checkpoints on the other.
SEEN_SPLITS = ("train", "val")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The file's SHA-256: names a checkpoint even after another file took its path."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a checkpoint's ``training`` record that says what the run saw (small, JSON-able)."""
    config = record.get("config") or {}
    data = config.get("data") or {}
    manifest = (record.get("data") or {}).get("manifest") or {}
    return {"name": record.get("name"), "steps": record.get("steps"),
            "data_root": data.get("root"), "train_split": data.get("train_split", "train"),
            "val_split": data.get("val_split", "val"), "degradation": data.get("degradation"),
            "sources": (manifest.get("config") or {}).get("sources"),
            "init_from": config.get("init_from"), "lineage": record.get("lineage")}


def lineage_of(paths: list[str]) -> list[dict[str, Any]]:
    """What a run records about the checkpoints it starts from: per file its name, SHA-256 and the
    summary of its own training record (which carries that file's lineage in turn)."""
    from implicity.core.model.checkpoint import read_checkpoint

    entries = []
    for path in paths:
        record = read_checkpoint(Path(path)).get("training")  # None: the reference's, or a bare state dict
        entries.append({"file": Path(path).name, "sha256": file_sha256(path),
                        "run": run_summary(record) if isinstance(record, dict) else None})
    return entries


def _runs(summary: dict[str, Any], complete: list[bool]) -> Iterator[dict[str, Any]]:
    """Every run summary in the lineage tree below ``summary`` (itself first). A run that started
    from a checkpoint without recording it, or from a file with no training record, clears
    ``complete``."""
    yield summary
    lineage = summary.get("lineage")
    if summary.get("init_from") and lineage is None:
        complete[0] = False
        return
    for entry in lineage or []:
        if entry.get("run") is None:
            complete[0] = False
            continue
        yield from _runs(entry["run"], complete)


@dataclass(frozen=True)
class Exposure:
    """What a network's lineage trained or selected on, as far as its records go."""

    runs: int                            # training runs read, the network's own included
    complete: bool                       # False: some ancestor's lineage was not recorded
    scenes: tuple[str, ...]              # held-out scenes some run read (train or val split)
    variants: tuple[str, ...]            # held-out degradation variants some run's family could draw
    legacy_simulator: bool               # some run trained on the stored clouds of simulate.py

    def describe(self) -> str:
        """One line for the model card."""
        parts = [f"held-out scenes: {', '.join(self.scenes) or 'none'}",
                 f"held-out variant: {', '.join(self.variants) or 'never drawn'}",
                 "the legacy simulator's clouds: " + ("trained on" if self.legacy_simulator else
                                                      "never" if self.complete else "not in the recorded runs")]
        head = (f"{self.runs} training run(s) back to random weights" if self.complete else
                f"{self.runs} recorded training run(s), then a checkpoint that recorded no lineage")
        return f"{head}. " + "; ".join(parts) + "."


def _seen_sources(run: dict[str, Any]) -> list[dict[str, Any]]:
    seen = {run.get("train_split", "train"), run.get("val_split", "val")}
    out = []
    for source in run.get("sources") or []:
        split = source.get("split")
        splits = set(split.get("strips", [])) if isinstance(split, dict) else {split}
        if splits & seen:
            out.append(source)
    return out


def exposure(record: dict[str, Any], scene_files: dict[str, str], scene_seeds: dict[str, int],
             held_out_variants: tuple[str, ...]) -> Exposure:
    """Walk ``record`` (a checkpoint's ``training`` record) and its lineage.

    ``scene_files`` maps a held-out scene to its point file's name, ``scene_seeds`` a held-out
    synthetic city to its seed; ``held_out_variants`` are ``"effect:variant"`` names."""
    from implicity.training.data.degrade import family_from_mapping

    complete = [True]
    runs = list(_runs(run_summary(record), complete))
    scenes: set[str] = set()
    variants: set[str] = set()
    legacy = False
    for run in runs:
        for source in _seen_sources(run):
            name = Path(str(source.get("points", ""))).name
            scenes |= {scene for scene, file in scene_files.items() if file == name}
            if source.get("type") == "synthetic":
                seeds = set(source.get("seeds") or [])
                scenes |= {scene for scene, seed in scene_seeds.items() if seed in seeds}
        degradation = run.get("degradation")
        if degradation is None:
            legacy = True
            continue
        family = family_from_mapping(degradation, f"training record of {run.get('name')} [data.degradation]")
        for name in held_out_variants:
            effect, variant = name.split(":", 1)
            if variant in family.choices(effect):
                variants.add(name)
    return Exposure(len(runs), complete[0], tuple(sorted(scenes)), tuple(sorted(variants)), legacy)
