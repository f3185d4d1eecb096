"""``make model-card``: the shipped models against the classical baselines on held-out data.

The protocol (what is held out, which degradations, which metrics and targets) is
:mod:`implicity.training.protocol`. This tool runs it on the shipped models (or the checkpoints
given), prints the Markdown tables, and writes them with the raw numbers:

    .venv/bin/python tools/model_card.py [--zero M.pt] [--mono M.pt] [--stereo M.pt] [--out runs/model_card]
        [--extra "LABEL=M.pt" ...] [--markdown docs/model_card.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    from implicity.core.errors import ImplicityError
    from implicity.core.outputs import write_text_atomic
    from implicity.core.shipped_models import default_model
    from implicity.core.vocabulary import SYMMETRY_COUNTS
    from implicity.training.protocol import lineage_exposures, markdown, run_protocol, write_results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, n in (("--zero", 0), ("--mono", 1), ("--stereo", 2)):
        parser.add_argument(flag, default=default_model(n), type=Path, metavar="MODEL.pt",
                            help=f"checkpoint to evaluate (default: the shipped model for {n} ortho-images)")
    parser.add_argument("--extra", action="append", default=[], metavar="LABEL=MODEL.pt",
                        help="also evaluate this checkpoint as a column named LABEL (repeatable; a candidate "
                             "beside the shipped models: no target is checked on it)")
    parser.add_argument("--data", default=DEFAULT_DATA, type=Path, help="the shared real-data folder")
    parser.add_argument("--out", default=REPO / "runs" / "model_card", type=Path, help="work and output folder")
    parser.add_argument("--markdown", default=REPO / "docs" / "model_card.md", type=Path,
                        help="where the tables are written")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--symmetries", type=int, default=4, choices=SYMMETRY_COUNTS,
                        help="also evaluate ImpliCity-0 with this many turned / mirrored copies averaged "
                             "(reconstruct --symmetries; default 4; 1 = not)")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"model-card: the shared data folder {args.data} is missing; give --data.", file=sys.stderr)
        return 2
    models = {label: path for label, path in (("ImpliCity-0", args.zero), ("ImpliCity-mono", args.mono),
                                               ("ImpliCity-stereo", args.stereo)) if path is not None}
    for item in args.extra:
        label, sep, path = item.partition("=")
        if not sep or not label.strip() or "/" in label or not path.strip() or label.strip() in models:
            print(f"model-card: --extra {item!r}: give LABEL=MODEL.pt with a label of its own, without '/' "
                  f"(not {', '.join(models)}).", file=sys.stderr)
            return 2
        if not Path(path).is_file():
            print(f"model-card: --extra {label}: {path} is not a file.", file=sys.stderr)
            return 2
        models[label.strip()] = Path(path)
    symmetries = {}
    if args.symmetries > 1 and args.zero is not None:
        label = f"ImpliCity-0 ×{args.symmetries}"
        models[label], symmetries[label] = args.zero, args.symmetries
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        results = run_protocol(models, args.data, args.out, args.device, symmetries=symmetries)
    except ImplicityError as exc:
        print(f"model-card: error: {exc}", file=sys.stderr)
        return 2
    results["models"] = {label: str(path) for label, path in models.items()}
    results["lineage"] = lineage_exposures(models)
    results["symmetries"] = symmetries
    write_results(results, args.out / "model_card.json")
    table = markdown(results)
    write_text_atomic(args.markdown, "# Model card: held-out evaluation\n\nMade by `make model-card` "
                      "(tools/model_card.py, protocol in training/protocol.py). Models: "
                      + ", ".join(f"{k} = `{Path(v).name}`" for k, v in models.items())
                      + "".join(f"; {k}: {n} turned / mirrored copies of every window averaged (`implicity reconstruct "
                                f"--symmetries {n}`)" for k, n in symmetries.items()) + ".\n\n" + table + "\n")
    print(table)
    print(f"\nNumbers: {args.out / 'model_card.json'}; tables: {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
