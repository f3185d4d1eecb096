"""The model card's targets and tables, plain and after co-registration (training/protocol.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rasterio.crs import CRS

from implicity.core.raster import GridSpec, write_geotiff
from implicity.training.protocol import PreparedScene, check_targets, displacement_floor, markdown


def _report(medae: float, mae: float, shift: dict | None = None) -> dict:
    metrics = {"medae": medae, "mae": mae, "rmse": 2 * mae, "nmad": medae}
    return {"coregistration": shift, "regions": {"overall": metrics}}


def _results() -> dict:
    shift = {"dx": 0.25, "dy": -0.5, "dz": 0.4, "pixels": 100}
    plain = {"baseline": _report(0.60, 1.00), "baseline 3×3 median": _report(0.50, 0.90),
             "ImpliCity-0": _report(0.45, 0.80), "ImpliCity-mono": _report(0.44, 0.85)}
    coreg = {"baseline": _report(0.40, 0.90, shift), "baseline 3×3 median": _report(0.35, 0.80, shift),
             "ImpliCity-0": _report(0.25, 0.50, shift), "ImpliCity-mono": _report(0.26, 0.52, shift)}
    floor = {**_report(0.42, 0.30), "displacement": {"dx": 0.25, "dy": -0.5, "dz": 0.4}}
    results = {"scenes": {"Town": {"real_ortho": True}},
               "sets": {"Town / family": {"scene": "Town", "degradation": "family", "methods": plain,
                                          "coregistered": coreg, "floor": floor},
                        "Town / legacy": {"scene": "Town", "degradation": "legacy", "methods": plain,
                                          "coregistered": coreg, "floor": None}}}
    results["targets"] = check_targets(results)
    results["coregistered_targets"] = check_targets(results, key="coregistered")
    return results


def test_targets_use_the_better_baseline_plain_and_coregistered():
    results = _results()
    plain = {t["target"]: t for t in results["targets"]}
    medae, mae = plain["ImpliCity-0 medae ≤ 0.8 × better baseline"], plain["ImpliCity-0 mae ≤ 0.7 × better baseline"]
    assert medae["ratio"] == 0.45 / 0.50 and not medae["met"]
    assert mae["ratio"] == 0.80 / 0.90 and not mae["met"]
    assert plain["ImpliCity-mono MedAE ≤ ImpliCity-0 MedAE (real ortho)"]["met"]
    coreg = {t["target"]: t for t in results["coregistered_targets"]}
    assert coreg["ImpliCity-0 medae ≤ 0.8 × better baseline"]["ratio"] == 0.25 / 0.35
    assert coreg["ImpliCity-0 mae ≤ 0.7 × better baseline"]["met"]  # 0.50 / 0.80
    assert not coreg["ImpliCity-mono MedAE ≤ ImpliCity-0 MedAE (real ortho)"]["met"]


def test_markdown_has_both_tables_and_the_shift():
    text = markdown(_results())
    plain, _, coreg = text.partition("## After co-registration (diagnostic)")
    assert "| Town / family | overall | 0.60 / 1.00 / 2.00 / 0.60 |" in plain
    assert "| Town / family | 0.40 / 0.90 | 0.35 / 0.80 | 0.25 / 0.50 | 0.26 / 0.52 | +0.25, -0.50, +0.40 |" in coreg
    assert "| Town / family | ImpliCity-0 mae ≤ 0.7 × better baseline | 0.62 | yes |" in coreg
    assert "| Town / family | ImpliCity-0 mae ≤ 0.7 × better baseline | 0.89 | **no** |" in plain


def test_a_target_that_a_perfect_dsm_of_the_displaced_cloud_misses_is_marked():
    results = _results()
    family = {t["target"]: t for t in results["targets"] if t["set"] == "Town / family"}
    medae, mae = family["ImpliCity-0 medae ≤ 0.8 × better baseline"], family["ImpliCity-0 mae ≤ 0.7 × better baseline"]
    assert medae["floor"] == pytest.approx(0.42 / 0.50) and medae["missed_by_perfect_dsm"]
    assert mae["floor"] == pytest.approx(0.30 / 0.90) and not mae["missed_by_perfect_dsm"]
    assert all("floor" not in t for t in results["targets"] if t["set"] == "Town / legacy")
    assert all("floor" not in t for t in results["coregistered_targets"])
    plain = markdown(results).partition("## After co-registration (diagnostic)")[0]
    assert "| Town / family | ImpliCity-0 medae ≤ 0.8 × better baseline | 0.90 | **no** | 0.840 (a perfect DSM misses it too) |" in plain
    assert "| Town / family | ImpliCity-0 mae ≤ 0.7 × better baseline | 0.89 | **no** | 0.333 |" in plain
    assert "| Town / legacy | ImpliCity-0 mae ≤ 0.7 × better baseline | 0.89 | **no** | — |" in plain


def test_the_floor_is_the_reference_moved_by_the_displacement(tmp_path: Path):
    """A flat 10 m plane with a 12 m-high building: a cloud raised by 0.3 m costs a perfect
    reconstruction 0.3 m everywhere; moved 1 m east too, the building's edges cost more."""
    dsm = np.full((60, 60), 10.0, np.float32)
    dsm[20:40, 20:40] = 22.0
    grid = GridSpec.from_bounds(0.0, 0.0, 30.0, 30.0, 0.5, CRS.from_epsg(32632))
    reference = write_geotiff(tmp_path / "reference.tif", dsm, grid)
    building = write_geotiff(tmp_path / "building.tif", (dsm > 15).astype(np.uint8), grid, nodata=None, dtype="uint8")
    scene = PreparedScene(reference, building, [], None, dsm, np.ones(dsm.shape, np.uint8), grid)
    up = displacement_floor(scene, {"dx": 0.0, "dy": 0.0, "dz": 0.3}, tmp_path / "up.tif")
    assert up["regions"]["overall"]["medae"] == pytest.approx(0.3, abs=1e-4)
    assert up["regions"]["overall"]["mae"] == pytest.approx(0.3, abs=1e-4)
    assert up["displacement"] == {"dx": 0.0, "dy": 0.0, "dz": 0.3}
    moved = displacement_floor(scene, {"dx": 1.0, "dy": 0.0, "dz": 0.3}, tmp_path / "moved.tif")
    assert moved["regions"]["overall"]["medae"] == pytest.approx(0.3, abs=1e-4)
    # two 2-pixel-wide strips of 12 m error along the west and east walls (20 rows each)
    assert moved["regions"]["overall"]["mae"] > up["regions"]["overall"]["mae"] + 0.2


def test_the_card_lists_what_each_set_drew():
    import json

    from implicity.training.data.degrade import DegradationFamily, degrade_surface
    from implicity.training.protocol import TEST_RANGES, drawn_summary

    dsm = np.zeros((96, 96))
    dsm[30:60, 20:70] = 9.0  # one block: edges to fatten, a roof to occlude
    family = DegradationFamily(only=("noise:mixed", "fattening:dilation"), **TEST_RANGES)
    drawn = drawn_summary(degrade_surface(np.random.default_rng(5), dsm, None, 0.5, family).drawn)
    assert json.loads(json.dumps(drawn)) == drawn  # plain JSON values, stored in model_card.json
    assert 0.3 <= drawn["noise_std"] <= 0.8 and 0.2 <= drawn["noise_correlated_share"] <= 0.8
    assert 1.0 <= drawn["fattening_m"] <= 2.0 and 0.0 <= drawn["hole_share"] <= 0.3 + 1e-9
    assert 0.0 < drawn["points_per_m2"] <= 8.0 * 1.1 and 0.0 <= drawn["blunder_share"] <= 0.03

    results = _results()
    results["sets"]["Town / family"]["drawn"] = drawn
    results["sets"]["Town / legacy"]["drawn"] = None
    rows = {line.split(" | ")[0]: line for line in markdown(results).splitlines() if line.startswith("| Town / ")
            and ("m, " in line or "legacy simulator's own" in line)}
    share = round(100 * drawn["noise_correlated_share"])
    assert (f"| Town / family | mixed {drawn['noise_std']:.2f} m, {share} % correlated over "
            f"{drawn['noise_scale_m']:.1f} m") in rows["| Town / family"]
    assert f"| dilation {drawn['fattening_m']:.1f} m on " in rows["| Town / family"]
    east, north = drawn["planimetric_shift_m"]
    assert rows["| Town / family"].endswith(f"| {east:+.2f}, {north:+.2f}, {drawn['vertical_bias_m']:+.2f} |")
    assert "the legacy simulator's own settings" in rows["| Town / legacy"]


def test_a_set_whose_surface_drew_nothing_says_so():
    from implicity.training.data.degrade import DegradationFamily, degrade_surface
    from implicity.training.protocol import drawn_summary

    empty = degrade_surface(np.random.default_rng(0), np.full((8, 8), np.nan), None, 0.5, DegradationFamily())
    results = _results()
    results["sets"]["Town / family"]["drawn"] = drawn_summary(empty.drawn)
    assert "| Town / family | nothing (no known surface) |" in markdown(results)


def test_the_height_step_table_shows_where_the_mae_is_won_and_lost():
    results = _results()
    assert "## Height steps" not in markdown(results)  # results without step regions: no table
    for entry in results["sets"].values():
        for method, report in entry["methods"].items():
            top = 1.5 if method.startswith("ImpliCity") else 0.5   # a model that cuts roofs down
            foot = 0.5 if method.startswith("ImpliCity") else 2.0  # gridding that fattens edges
            report["regions"] = {**report["regions"],
                                 "step top": {"count": 20, "mae": top}, "step foot": {"count": 20, "mae": foot},
                                 "off steps": {"count": 60, "mae": 0.25}}
    text = markdown(results)
    assert "## Height steps (diagnostic)" in text
    assert ("| Town / family | 0.20 / 0.20 / 0.60 | 0.50 / 2.00 / 0.25 | 0.50 / 2.00 / 0.25 | 1.50 / 0.50 / 0.25 "
            "| 1.50 / 0.50 / 0.25 |") in text
