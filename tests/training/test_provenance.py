"""What a network's lineage saw (training/provenance.py): recorded by the trainer, kept over a resume,
carried by weight soups, and walked back to random weights for the model card."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from implicity.core.errors import CancelledError
from implicity.training.protocol import HELD_OUT_VARIANTS, lineage_exposures, markdown
from implicity.training.provenance import exposure, file_sha256, lineage_of

from ..helpers.tiny_trainer import make_trainer

SCENE_FILES = {"Louhans": "louhans.las"}
SCENE_SEEDS = {"synthetic city 200": 200}
FAMILY = {"exclude": list(HELD_OUT_VARIANTS)}
SYNTH = {"name": "synth", "type": "synthetic", "seeds": [0, 1], "split": "train"}


def _record(degradation: Any = FAMILY, sources: list[dict] | None = None, init_from: Any = None,
            lineage: Any = None, name: str = "run") -> dict[str, Any]:
    """A checkpoint's training record, as the trainer writes it (only the fields provenance reads)."""
    return {"name": name, "steps": 10, "lineage": lineage,
            "config": {"init_from": init_from, "data": {"root": "prepared/x", "degradation": degradation}},
            "data": {"manifest": {"config": {"sources": sources if sources is not None else [SYNTH]}}}}


def _entry(record: dict[str, Any] | None) -> dict[str, Any]:
    from implicity.training.provenance import run_summary

    return {"file": "parent.pt", "sha256": "0" * 64, "run": None if record is None else run_summary(record)}


def _exposure(record: dict[str, Any]):
    return exposure(record, SCENE_FILES, SCENE_SEEDS, HELD_OUT_VARIANTS)


def test_a_run_from_random_weights_on_the_family_saw_nothing_held_out() -> None:
    seen = _exposure(_record(lineage=[]))
    assert (seen.runs, seen.complete, seen.scenes, seen.variants, seen.legacy_simulator) == (1, True, (), (), False)
    assert "back to random weights" in seen.describe() and "clouds: never" in seen.describe()


def test_an_ancestor_trained_on_the_legacy_simulator_is_found_through_the_chain() -> None:
    first = _record(degradation=None, name="v1", lineage=[])           # no family: the stored clouds
    middle = _record(init_from="v1.pt", lineage=[_entry(first)], name="middle")
    seen = _exposure(_record(init_from="middle.pt", lineage=[_entry(middle)]))
    assert seen.runs == 3 and seen.complete and seen.legacy_simulator
    assert "trained on" in seen.describe()


def test_held_out_scenes_count_in_train_or_validation_but_not_in_a_test_split() -> None:
    test_only = [{"name": "l", "type": "lidar", "points": "../data/louhans.las", "split": "test"},
                 {"name": "s", "type": "synthetic", "seeds": [200, 201], "split": "test"}]
    assert _exposure(_record(sources=test_only, lineage=[])).scenes == ()
    validated = [{"name": "l", "type": "lidar", "points": "/x/louhans.las",
                  "split": {"strips": ["train", "val", "test"], "axis": "x"}},
                 {"name": "s", "type": "synthetic", "seeds": [200], "split": "val"}]
    assert _exposure(_record(sources=validated, lineage=[])).scenes == ("Louhans", "synthetic city 200")


def test_a_family_that_does_not_exclude_the_held_out_variant_could_draw_it() -> None:
    assert _exposure(_record(degradation={}, lineage=[])).variants == HELD_OUT_VARIANTS
    only_dilation = {"only": ["fattening:dilation"]}
    assert _exposure(_record(degradation=only_dilation, lineage=[])).variants == ()


def test_an_unrecorded_ancestor_leaves_the_lineage_incomplete_and_says_so() -> None:
    for record in (_record(init_from="old.pt", lineage=None), _record(init_from="ref.pt", lineage=[_entry(None)])):
        seen = _exposure(record)
        assert not seen.complete and not seen.legacy_simulator
        assert "recorded no lineage" in seen.describe() and "not in the recorded runs" in seen.describe()


def _final_record(out: Path) -> dict[str, Any]:
    return torch.load(out / "final.pt", weights_only=True)["training"]


def test_the_trainer_records_its_parents_and_keeps_them_over_a_resume(tmp_path: Path) -> None:
    make_trainer(tmp_path / "parent").fit()
    parent = tmp_path / "parent" / "final.pt"
    assert _final_record(tmp_path / "parent")["lineage"] == []        # from random weights
    lineage = lineage_of([str(parent)])
    assert lineage[0]["file"] == "final.pt" and lineage[0]["sha256"] == file_sha256(parent)
    assert lineage[0]["run"]["name"] == "tiny" and lineage[0]["run"]["lineage"] == []

    child = tmp_path / "child"
    with pytest.raises(CancelledError):
        make_trainer(child, init_from=str(parent), lineage=lineage).fit(stop_after_samples=7)
    make_trainer(child, init_from=str(parent)).fit(resume=True)       # the resume state keeps it
    assert _final_record(child)["lineage"] == lineage
    # started from a checkpoint but told nothing about it: unknown, not "from random weights"
    make_trainer(tmp_path / "blind", init_from=str(parent)).fit()
    assert _final_record(tmp_path / "blind")["lineage"] is None


def test_a_weight_soup_has_seen_what_either_end_saw(tmp_path: Path) -> None:
    from implicity.core.model import build_model, load_model_config, save_checkpoint
    from implicity.core.model.checkpoint import read_checkpoint
    from implicity.training.selection import interpolate_weights

    cfg = load_model_config("implicity_0_lite.yaml")
    clean = save_checkpoint(tmp_path / "a.pt", build_model(cfg), training=_record(lineage=[]))
    legacy = save_checkpoint(tmp_path / "b.pt", build_model(cfg), training=_record(degradation=None, lineage=[]))
    soup = read_checkpoint(interpolate_weights(clean, legacy, 0.25, tmp_path / "soup.pt"))["training"]
    assert [e["file"] for e in soup["lineage"]] == ["a.pt", "b.pt"]
    assert _exposure(soup).legacy_simulator and not _exposure(read_checkpoint(clean)["training"]).legacy_simulator
    line = lineage_exposures({"soup": tmp_path / "soup.pt"})["soup"]
    assert "back to random weights" in line and "trained on" in line


def test_the_card_lists_each_models_lineage() -> None:
    from .test_protocol_report import _results

    results = {**_results(), "lineage": {"ImpliCity-0": "1 training run(s) back to random weights. …"}}
    text = markdown(results)
    assert "### What each model's lineage saw" in text and "- **ImpliCity-0**: 1 training run(s)" in text
    assert "lineage saw" not in markdown(_results())


REPO = Path(__file__).resolve().parents[2]
PREPARE_CONFIGS = sorted((REPO / "training" / "data" / "configs").glob("*.yaml"))
TRAIN_CONFIGS = sorted(p for p in (REPO / "training" / "configs").glob("*.yaml") if p.name != "base.yaml")


def _protocol_exposure(record: dict[str, Any]):
    from implicity.training.protocol import held_out_exposure

    return held_out_exposure(record)


@pytest.mark.parametrize("path", PREPARE_CONFIGS, ids=lambda p: p.stem)
def test_no_prepare_config_puts_a_held_out_scene_in_training_or_validation(path: Path) -> None:
    import yaml

    sources = yaml.safe_load(path.read_text())["sources"]
    assert _protocol_exposure(_record(sources=sources, lineage=[])).scenes == ()


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.stem)
def test_no_training_recipe_can_draw_the_held_out_variant(path: Path) -> None:
    """A recipe with a degradation family excludes the held-out variant; one without trains on the
    legacy simulator's clouds, which the provenance walk reports."""
    from implicity.training.trainer.config import load_train_config

    config = load_train_config(path).to_dict()
    seen = _protocol_exposure({"name": path.stem, "config": config, "lineage": [], "data": {}})
    assert seen.variants == ()
    assert seen.legacy_simulator == (config["data"].get("degradation") is None)
