"""Model-card numbers: the shipped models against the classical baseline on held-out areas.

Held out = never used for training or model selection:
* synthetic cities with the test seeds of the prepare configs (200, 201; training used 0-5,
  validation 100), written with ``implicity synth-city``'s generator: exact reference DSM and
  building mask, rendered ortho, simulated satellite-stereo cloud;
* the eastern quarter of the Nimes LiDAR HD scene (the prepare configs' test strip), via ``make
  demo``'s pipeline (reference from the LiDAR, simulated input, ortho from the point colours).

Every number comes from :func:`implicity.core.evaluation.evaluate_dsm`, what ``implicity
evaluate`` runs. Prints a Markdown table and writes the numbers as JSON.

    .venv/bin/python tools/model_card.py --out runs/model_card
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # demo.py lives at the repository root

TEST_SEEDS = (200, 201)
METHODS = ("baseline", "ImpliCity-0", "ImpliCity-mono")


def synthetic_rows(out: Path, device: str) -> dict[str, dict[str, dict]]:
    """{seed: {method: evaluation dict}} for the held-out synthetic cities."""
    from demo import BASELINE
    from implicity.core.baseline import make_baseline_dsm
    from implicity.core.evaluation import evaluate_dsm
    from implicity.core.shipped_models import default_model
    from implicity.core.reconstruct import ReconstructionInputs, ReconstructionOptions, reconstruct_dsm
    from implicity.training.data.export import write_synthetic_city

    rows: dict[str, dict[str, dict]] = {}
    for seed in TEST_SEEDS:
        city = write_synthetic_city(out / f"city{seed}", seed, n_images=1)
        dsms = {m: out / f"city{seed}" / f"{m}.tif" for m in METHODS}
        make_baseline_dsm(city["cloud"], dsms["baseline"], 0.5, **BASELINE)
        for method, orthos in (("ImpliCity-0", ()), ("ImpliCity-mono", (city["ortho1"],))):
            t0 = time.perf_counter()
            reconstruct_dsm(ReconstructionInputs(points=city["cloud"], model=default_model(len(orthos)),
                                                 out_path=dsms[method], resolution=0.5, orthos=orthos),
                            ReconstructionOptions(device=device))
            print(f"city {seed}: {method} in {time.perf_counter() - t0:.1f} s")
        rows[f"synthetic city {seed}"] = {
            m: evaluate_dsm(p, city["dsm"], building_mask=city["buildings"]).to_dict() for m, p in dsms.items()}
    return rows


def nimes_rows(out: Path, device: str) -> dict[str, dict]:
    """{method: evaluation dict} of the demo's Nimes run (with its held-out row)."""
    import demo

    outputs = demo.run(out / "nimes", device=device)
    return json.loads(outputs["evaluation.json"].read_text())


def markdown(synthetic: dict, nimes: dict) -> str:
    """One row per area and region: MedAE (MAE) of each method, and the best ImpliCity/baseline ratio."""
    lines = ["| held-out area | region | " + " | ".join(f"{m} MedAE (MAE), m" for m in METHODS)
             + " | best ImpliCity / baseline, MedAE (MAE) |", "|---|---|" + "---|" * (len(METHODS) + 1)]

    def row(area: str, region: str, reports: dict) -> None:
        med = [float(reports[m]["regions"][region]["medae"]) for m in METHODS]
        mae = [float(reports[m]["regions"][region]["mae"]) for m in METHODS]
        best = min((1, 2), key=lambda i: med[i])
        lines.append(f"| {area} | {region} | " + " | ".join(f"{a:.2f} ({b:.2f})" for a, b in zip(med, mae))
                     + f" | {med[best] / med[0]:.2f} ({mae[best] / mae[0]:.2f}) |")

    for area, reports in synthetic.items():
        for region in ("overall", "building", "terrain"):
            row(area, region, reports)
    row("Nîmes, eastern quarter", "held-out", nimes)
    return "\n".join(lines)


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "runs" / "model_card"), help="work and output folder")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    synthetic = synthetic_rows(out, args.device)
    nimes = nimes_rows(out, args.device)
    (out / "model_card.json").write_text(json.dumps({"synthetic": synthetic, "nimes": nimes}, indent=1))
    print("\n" + markdown(synthetic, nimes))
    print(f"\nNumbers: {out / 'model_card.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
