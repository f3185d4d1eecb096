"""tools/train_seeds.py: one recipe under several seeds at once, with a cycle fitted to a time budget.

The real lite ImpliCity-0 network on three 16 m block patches (``write_block_patches``), two seeds,
on the CPU: the probe times a step, each seed then trains the planned cycle in its own process.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from ..helpers.prepared import PATCH_M, write_block_patches

REPO = Path(__file__).resolve().parents[2]
LITE_MODEL = REPO / "core" / "model" / "configs" / "implicity_0_lite.yaml"


@pytest.mark.slow
def test_seeds_train_apart_with_the_planned_cycle(tmp_path: Path) -> None:
    model_pkg = pytest.importorskip("implicity.core.model")
    sys.path.insert(0, str(REPO / "tools"))
    import train_seeds

    data = write_block_patches(tmp_path / "prepared")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"inherit_from: {REPO / 'training' / 'configs' / 'implicity_0_lite.yaml'}\n"
        f"model: {{inherit_from: {LITE_MODEL}, patch_size: {PATCH_M}}}\n"
        "data: {n_query: 256, n_query_val: 256, num_workers: 0}\n"
        "optim: {accumulate: 1}\n"
        "validation: {refinements: 1, coarse_step_m: 8.0, z_min_m: -16.0, z_max_m: 16.0}\n")
    out = tmp_path / "seeds"
    code = train_seeds.main([str(recipe), "--seeds", "1", "2", "--probe-steps", "3", "--budget-s", "600",
                             "--min-steps", "2", "--max-steps", "4", "--device", "cpu", "--data", str(data),
                             "--out", str(out)])
    assert code == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["steps"] == 4 and plan["seconds_per_step"] > 0          # capped by --max-steps
    assert plan["step_size_up"] == 1 and plan["exit_codes"] == {"seed1": 0, "seed2": 0} == dict.fromkeys(plan["runs"], 0)

    weights = {}
    for seed in (1, 2):
        config = (out / "configs" / f"seed{seed}.yaml").read_text()
        assert f"seed: {seed}" in config and "max_steps: 4" in config and "step_size_down: 3" in config
        model, _ = model_pkg.load_model(out / f"seed{seed}" / "final.pt", device="cpu")
        raw = torch.load(out / f"seed{seed}" / "final.pt", map_location="cpu", weights_only=True)
        assert raw["training"]["steps"] == 4
        assert json.loads((out / f"seed{seed}" / "run_summary.json").read_text())["status"] == "finished"
        weights[seed] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert not torch.equal(weights[1], weights[2])          # another seed, another sample order


def test_a_failing_probe_is_reported_by_run_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(REPO / "tools"))
    import train_seeds

    recipes = []
    for stem in ("a", "b"):
        recipes.append(tmp_path / f"{stem}.yaml")
        recipes[-1].write_text(f"inherit_from: {REPO / 'training' / 'configs' / 'implicity_0_lite.yaml'}\n")
    code = train_seeds.main([*map(str, recipes), "--seeds", "3", "--probe-steps", "3", "--budget-s", "60",
                             "--device", "cpu", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert code == 1
    assert "probe failed for a_seed3, b_seed3" in capsys.readouterr().err
    assert "does not exist" in (tmp_path / "o" / "probe" / "a_seed3" / "train.out").read_text()


def test_bad_arguments_are_refused_before_anything_runs(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "tools"))
    import train_seeds

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"inherit_from: {REPO / 'training' / 'configs' / 'implicity_0_lite.yaml'}\n")
    used = tmp_path / "used"
    used.mkdir()
    (used / "plan.json").write_text("{}")
    common = ["--budget-s", "60", "--device", "cpu"]
    for argv, message in (([str(tmp_path / "nope.yaml"), "--seeds", "1", "--out", str(tmp_path / "o")], "no such"),
                          ([str(recipe), "--seeds", "1", "1", "--out", str(tmp_path / "o")], "each seed once"),
                          ([str(recipe), "--seeds", "1", "--out", str(used)], "already holds files")):
        with pytest.raises(SystemExit, match=message):
            train_seeds.main(argv + common)
    assert not (tmp_path / "o").exists() and (used / "plan.json").read_text() == "{}"
