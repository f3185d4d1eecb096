"""The model card's targets and tables, plain and after co-registration (training/protocol.py)."""
from __future__ import annotations

from implicity.training.protocol import check_targets, markdown


def _report(medae: float, mae: float, shift: dict | None = None) -> dict:
    metrics = {"medae": medae, "mae": mae, "rmse": 2 * mae, "nmad": medae}
    return {"coregistration": shift, "regions": {"overall": metrics}}


def _results() -> dict:
    shift = {"dx": 0.25, "dy": -0.5, "dz": 0.4, "pixels": 100}
    plain = {"baseline": _report(0.60, 1.00), "baseline 3×3 median": _report(0.50, 0.90),
             "ImpliCity-0": _report(0.45, 0.80), "ImpliCity-mono": _report(0.44, 0.85)}
    coreg = {"baseline": _report(0.40, 0.90, shift), "baseline 3×3 median": _report(0.35, 0.80, shift),
             "ImpliCity-0": _report(0.25, 0.50, shift), "ImpliCity-mono": _report(0.26, 0.52, shift)}
    results = {"scenes": {"Town": {"real_ortho": True}},
               "sets": {"Town / family": {"scene": "Town", "degradation": "family", "methods": plain,
                                          "coregistered": coreg}}}
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
