"""Rank checkpoints by the DSM they make on the validation split (``training/selection.py``).

    .venv/bin/python tools/select_checkpoint.py CKPT.pt [CKPT.pt ...] [--data prepared/family_points_only]
        [--like runs/RUN/best.pt]  # needed for trainer resume states (*.ckpt)
        [--copy-best models/implicity-0-lite.pt]
        [--prior-of CKPT.pt]       # also score that network's surface prior alone (an ablation)
        [--between A.pt B.pt T]    # also score (1 - T) * A + T * B, weight by weight
        [--option NAME=VALUE]      # reconstruct with one option other than the default
        [--ortho-lean AZ OFF_NADIR] [--fattening VARIANT]  # robustness checks of the same sets

Prints MedAE / MAE / NMAD per checkpoint and the 3 × 3 median-filtered baseline, with the score
(MedAE + MAE) of the real and the synthetic validation sets apart, lowest *balanced* score (the mean
of those two; ``--rank-by pooled``: the score of all sets pooled, the rule before 2026-11-26 19:02 UTC)
first. Trainer resume states (``last.ckpt`` copies) are exported with the config of
``--like`` first. ``--copy-best`` writes the best checkpoint there in float16 (the shipped format).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from implicity.core.errors import ImplicityError
    from implicity.core.vocabulary import SYMMETRY_COUNTS
    from implicity.training.data.stereo_view import MAX_OFF_NADIR_DEG
    from implicity.training.selection import (
        GROUPS,
        export_resume_state,
        interpolate_weights,
        parse_interpolation,
        prior_only,
        score_checkpoints,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data", default=REPO / "prepared" / "family_points_only", type=Path,
                        help="prepared patches whose validation split is scored")
    parser.add_argument("--like", type=Path, default=None,
                        help="a network checkpoint of the same run (config for exporting *.ckpt resume states)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--symmetries", type=int, default=1, choices=SYMMETRY_COUNTS,
                        help="reconstruct with this many symmetric copies averaged (implicity reconstruct --symmetries)")
    parser.add_argument("--ortho-shift-m", type=float, nargs=2, default=(0.0, 0.0), metavar=("EAST", "NORTH"),
                        help="write every validation ortho this far from where it belongs: how much an image model "
                             "loses when the ortho does not fit the cloud (a robustness check, not the ranking)")
    parser.add_argument("--ortho-lean", type=float, nargs=2, default=None, metavar=("AZIMUTH", "OFF_NADIR"),
                        help="write every validation ortho as a standard ortho seen from this view (degrees) shows "
                             "the patch, elevated objects leaning; the patches' own orthos are true orthos")
    parser.add_argument("--fattening", default=None, metavar="VARIANT",
                        help="draw every validation cloud's edge fattening from this variant alone, e.g. directional "
                             "(training/data/README.md; a robustness check, never the held-out variant)")
    parser.add_argument("--rank-by", choices=("balanced", "pooled"), default="balanced",
                        help="balanced: the mean of the real and the synthetic sets' MedAE + MAE (default); "
                             "pooled: MedAE + MAE over all sets")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="reconstruct with this option other than the default, e.g. "
                             "evidence.far_blunder_gap=0 (a ReconstructionOptions field, dotted; repeatable)")
    parser.add_argument("--between", nargs=3, action="append", default=[], metavar=("A", "B", "T"),
                        help="also score the network (1 - T) * A + T * B, weight by weight (two checkpoints of one "
                             "architecture; training/selection.py interpolate_weights); T may also be given per part "
                             "of the network, e.g. encoder=1,decoder=0; repeatable")
    parser.add_argument("--copy-best", type=Path, default=None, help="write the best checkpoint here (float16)")
    parser.add_argument("--prior-of", type=Path, action="append", default=[],
                        help="also score the surface prior of this checkpoint alone (never shipped)")
    args = parser.parse_args(argv)
    bad = [o for o in args.option if "=" not in o]
    if bad:
        parser.error(f"--option {bad[0]!r}: give NAME=VALUE, e.g. evidence.far_blunder_gap=0")
    if args.ortho_lean is not None and not 0.0 <= args.ortho_lean[1] < MAX_OFF_NADIR_DEG:
        parser.error(f"--ortho-lean: the off-nadir angle must lie in [0, {MAX_OFF_NADIR_DEG:g}) degrees "
                     f"(got {args.ortho_lean[1]:g}); e.g. --ortho-lean 45 15")
    if args.fattening is not None:
        from implicity.training.selection import check_validation_fattening

        try:
            check_validation_fattening(args.fattening)
        except ImplicityError as exc:
            parser.error(f"--fattening: {exc}")
    overrides = dict(o.split("=", 1) for o in args.option)
    try:
        with tempfile.TemporaryDirectory(prefix="implicity-export-") as tmp:
            resume_states = [p for p in (*args.checkpoints, *args.prior_of) if p.suffix == ".ckpt"]
            if resume_states and args.like is None:
                print(f"select-checkpoint: {resume_states[0]} is a trainer resume state; give --like RUN/best.pt.",
                      file=sys.stderr)
                return 2

            def network(path: Path) -> Path:  # resume states are exported with --like's config first
                if path.suffix != ".ckpt":
                    return path
                return export_resume_state(path, args.like, Path(tmp) / f"{path.stem}.pt")

            paths = [network(path) for path in args.checkpoints]
            for a, b, weight in args.between:
                a, b = network(Path(a)), network(Path(b))
                share = parse_interpolation(weight)
                tag = f"{share:g}" if isinstance(share, float) else "-".join(f"{k}{v:g}" for k, v in share.items())
                paths.append(interpolate_weights(a, b, share, Path(tmp) / f"{a.stem}-{b.stem}-t{tag}.pt"))
            priors = [prior_only(network(path), Path(tmp) / f"prior-only-{i}-{path.stem}.pt")
                      for i, path in enumerate(args.prior_of)]
            results = score_checkpoints(paths + priors, args.data, device=args.device, symmetries=args.symmetries,
                                        ortho_shift_m=tuple(args.ortho_shift_m), overrides=overrides,
                                        ortho_lean_deg=tuple(args.ortho_lean) if args.ortho_lean else None,
                                        fattening=args.fattening)
            for path, prior in zip(args.prior_of, priors):  # labelled by what they are; never shippable
                results[f"prior of {path.name}"] = results.pop(str(prior))
            key = "balanced" if args.rank_by == "balanced" else "score"
            if overrides:
                print("\nreconstructed with " + ", ".join(f"{k} = {v}" for k, v in overrides.items())
                      + " (every other option at its default)")
            ranked = sorted(results.items(), key=lambda kv: kv[1][key])
            groups = [g for g in GROUPS if any(g in m["groups"] for m in results.values())]
            print("\n| checkpoint | step | MedAE | MAE | NMAD | no height | "
                  + "".join(f"{g} score | " for g in groups) + "balanced score |\n|---|---|---|---|---|---|"
                  + "---|" * (len(groups) + 1))
            for label, m in ranked:
                step = _step(label)
                print(f"| {Path(label).name} | {step} | {m['medae']:.3f} | {m['mae']:.3f} | {m['nmad']:.3f} | "
                      f"{100 * m['missing']:.2f} % | " + "".join(f"{m['groups'][g]['score']:.3f} | " for g in groups)
                      + f"{m['balanced']:.3f} |")
            if args.json is not None:
                from implicity.core.outputs import write_text_atomic

                write_text_atomic(args.json, json.dumps({k: {**v, "step": _step(k)} for k, v in results.items()},
                                                        indent=1))
            best = next((label for label, _ in ranked if Path(label).is_file()), None)
            if args.copy_best is not None and best is not None:
                from implicity.training.selection import ship_checkpoint

                rule = (("lowest mean of the real and the synthetic sets' MedAE + MAE" if key == "balanced"
                         else "lowest MedAE + MAE") + " on the validation split (training/selection.py, "
                        "tools/select_checkpoint.py)")
                scores = {Path(k).name: {**v, "step": _step(k)} for k, v in results.items()}
                ship_checkpoint(Path(best), args.copy_best, {"from": Path(best).name, "step": _step(best),
                                                            "selection": rule},
                                extra={"selection": {"rule": rule, "scores": scores}})
                print(f"best: {Path(best).name} -> {args.copy_best}")
    except ImplicityError as exc:
        print(f"select-checkpoint: {exc}", file=sys.stderr)
        return 2
    return 0


def _step(label: str) -> int | None:
    from implicity.training.selection import checkpoint_step

    path = Path(label)
    return checkpoint_step(path) if path.is_file() else None


if __name__ == "__main__":
    raise SystemExit(main())
