"""CLI sub-commands of the classical tools: ``baseline``, ``reference``, ``evaluate``, and the
options every gridding command shares (``reconstruct`` uses them too)."""
from __future__ import annotations

import argparse

from .progress import tqdm_progress
from .vocabulary import (
    DEFAULT_FILL,
    DEFAULT_FILL_MAX_DISTANCE,
    DEFAULT_MAX_SHIFT,
    DEFAULT_REFERENCE_FILL_MAX_DISTANCE,
    DEFAULT_STATISTIC,
    DEFAULT_STEP_HEIGHT,
    FILL_METHODS,
    STATISTICS,
)

#: Core parameters whose flag is not ``--<name>`` (see ``implicity.cli.flag_namer``).
OUTPUT_FLAGS = {"out_path": "--out"}


def add_input_args(p: argparse.ArgumentParser) -> None:
    """``--points``, ``--points-crs``, ``--resolution`` and ``--extent``: the input cloud and the output grid."""
    p.add_argument("--points", required=True, metavar="FILE",
                   help="Input point cloud: LAS, LAZ, PLY or NPZ.")
    p.add_argument("--points-crs", metavar="CRS", default=None,
                   help="CRS of the points (e.g. EPSG:2154) when the file has none; overrides the file's.")
    p.add_argument("--resolution", required=True, type=float, metavar="R",
                   help="Output pixel size in the point cloud's map units (e.g. 0.5).")
    p.add_argument("--extent", default=None, metavar="XMIN,YMIN,XMAX,YMAX",
                   help="Output extent in the point cloud's CRS (default: the extent of the points).")


def add_quiet_arg(p: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bar."""
    p.add_argument("--quiet", action="store_true", help="No progress bar.")


def _add_points_args(p: argparse.ArgumentParser) -> None:
    add_input_args(p)
    p.add_argument("--out", required=True, metavar="DSM.tif", help="Output GeoTIFF (COG); written atomically.")
    add_max_pixels_arg(p)
    add_quiet_arg(p)
    p.set_defaults(parameter_flags=OUTPUT_FLAGS)


def add_max_pixels_arg(p: argparse.ArgumentParser) -> None:
    """``--max-pixels``: the output size limit shared by every gridding command."""
    from .gridding import DEFAULT_MAX_PIXELS

    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"Refuse an output grid of more than N pixels (default {DEFAULT_MAX_PIXELS:,}, "
                        "i.e. 10,000 x 10,000 px); raise it for larger outputs.")


def _run_baseline(args: argparse.Namespace) -> int:
    from .baseline import make_baseline_dsm

    with tqdm_progress("baseline", not args.quiet) as progress:
        grid = make_baseline_dsm(
            args.points, args.out, args.resolution, points_crs=args.points_crs, statistic=args.statistic,
            fill=args.fill, fill_max_distance=args.fill_max_distance,
            outlier_threshold=args.outlier_threshold, smooth=args.smooth, extent=args.extent, progress=progress,
            max_pixels=args.max_pixels,
        )
    print(f"Baseline DSM written: {args.out} ({grid.width} x {grid.height} px at {grid.resolution:g})")
    return 0


def _run_reference(args: argparse.Namespace) -> int:
    from .reference import make_reference_dsm

    with tqdm_progress("reference", not args.quiet) as progress:
        grid = make_reference_dsm(
            args.points, args.out, args.resolution, points_crs=args.points_crs,
            building_mask_out=args.building_mask_out, fill_max_distance=args.fill_max_distance,
            extent=args.extent, progress=progress, max_pixels=args.max_pixels,
        )
    print(f"Reference DSM written: {args.out} ({grid.width} x {grid.height} px at {grid.resolution:g})")
    if args.building_mask_out:
        print(f"Building mask written: {args.building_mask_out}")
    return 0


def _parse_masks(items: list[str]) -> dict[str, str]:
    from .errors import InputError, param

    masks = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"{param('extra_masks')} '{item}': use NAME=MASK.tif, e.g. forest=forest.tif")
        masks[name] = path
    return masks


def _run_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_dsm

    report = evaluate_dsm(
        args.dsm, args.reference, building_mask=args.building_mask, extra_masks=_parse_masks(args.mask),
        residual_out=args.residual_out, json_out=args.json, html_out=args.html,
        building_dilation_px=args.building_dilation, coregister=args.coregister, max_shift=args.max_shift,
        with_step_regions=args.step_regions, step_height=args.step_height,
    )
    print(f"DSM:       {args.dsm}\nReference: {args.reference}\n")
    print(report.as_table())
    for label, path in (("Residuals", args.residual_out), ("JSON", args.json), ("HTML", args.html)):
        if path:
            print(f"{label} written: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``baseline``, ``reference`` and ``evaluate`` to the ``implicity`` command."""
    p = subparsers.add_parser(
        "baseline", help="Classical DSM by gridding a point cloud (the baseline).",
        description="Grid a point cloud into a DSM: per-cell statistic, optional outlier removal, "
                    "hole filling. This is the classical DSM that ImpliCity is compared against.",
    )
    _add_points_args(p)
    p.add_argument("--statistic", choices=STATISTICS, default=DEFAULT_STATISTIC,
                   help=f"Height statistic of the points in a cell (default: {DEFAULT_STATISTIC} = visible surface).")
    p.add_argument("--fill", choices=FILL_METHODS, default=DEFAULT_FILL,
                   help="How empty cells are filled: inverse-distance weighting, nearest, or left as nodata.")
    p.add_argument("--fill-max-distance", type=float, default=DEFAULT_FILL_MAX_DISTANCE, metavar="D",
                   help=f"Fill only holes within D map units of data (default {DEFAULT_FILL_MAX_DISTANCE:g}); "
                        "wider gaps stay nodata.")
    p.add_argument("--outlier-threshold", type=float, default=None, metavar="T",
                   help="Remove cells deviating more than T from their 5x5 neighbourhood median "
                        "(default: off).")
    p.add_argument("--smooth", type=int, default=1, metavar="K",
                   help="Median-filter the gridded DSM over K x K pixels (odd K, e.g. 3; default 1 = off). "
                        "No-data pixels stay no-data.")
    p.set_defaults(run=_run_baseline)

    p = subparsers.add_parser(
        "reference", help="Reference DSM (+ building mask) from classified LiDAR.",
        description="Make a reference DSM from a classified LiDAR cloud (max of non-noise returns; "
                    "classes 7/18 dropped), and optionally a building mask from class 6.",
    )
    _add_points_args(p)
    p.add_argument("--building-mask-out", default=None, metavar="MASK.tif",
                   help="Also write a 0/1 building mask (cells with class-6 points, closed by 1 px).")
    p.add_argument("--fill-max-distance", type=float, default=DEFAULT_REFERENCE_FILL_MAX_DISTANCE, metavar="D",
                   help="Fill gaps within D map units with the nearest height "
                        f"(default {DEFAULT_REFERENCE_FILL_MAX_DISTANCE:g}).")
    p.set_defaults(run=_run_reference)

    p = subparsers.add_parser(
        "evaluate", help="Compare a DSM with a reference DSM (MAE, RMSE, MedAE, NMAD, bias).",
        description="Compute residual = DSM - reference on the reference's grid and report MAE, RMSE, "
                    "MedAE, NMAD (1.4826*median|r-median r|), bias and pixel counts overall, on "
                    "buildings (mask dilated by 2 px) and on terrain, and optionally at the top and foot of "
                    "the reference's height steps.",
    )
    p.add_argument("--dsm", required=True, metavar="DSM.tif", help="DSM to evaluate.")
    p.add_argument("--reference", required=True, metavar="REF.tif", help="Reference DSM (defines the grid).")
    p.add_argument("--building-mask", default=None, metavar="MASK.tif",
                   help="0/1 building mask; enables the building and terrain rows.")
    p.add_argument("--building-dilation", type=int, default=2, metavar="PX",
                   help="Dilate the building mask by PX pixels (default 2, as in the paper).")
    p.add_argument("--mask", action="append", default=[], metavar="NAME=MASK.tif",
                   help="Extra region mask (repeatable), e.g. --mask forest=forest.tif.")
    p.add_argument("--residual-out", default=None, metavar="RES.tif", help="Write the residual raster.")
    p.add_argument("--json", default=None, metavar="OUT.json", help="Write the metrics as JSON.")
    p.add_argument("--html", default=None, metavar="OUT.html", help="Write the metrics as an HTML table.")
    p.add_argument("--coregister", action="store_true",
                   help="Move the DSM by the shift (east, north, up) that best matches the reference before "
                        "taking the residual, and report that shift (separates a displaced whole from shape errors).")
    p.add_argument("--max-shift", type=float, default=DEFAULT_MAX_SHIFT, metavar="D",
                   help=f"Largest horizontal shift searched by --coregister, in map units (default {DEFAULT_MAX_SHIFT:g}).")
    p.add_argument("--step-regions", action="store_true",
                   help="Also report the reference's height steps: their top, their foot (within 2 px of a jump "
                        "of more than --step-height between neighbouring pixels) and the pixels off steps.")
    p.add_argument("--step-height", type=float, default=DEFAULT_STEP_HEIGHT, metavar="H",
                   help=f"Smallest jump that makes a height step, in height units (default {DEFAULT_STEP_HEIGHT:g}).")
    p.set_defaults(run=_run_evaluate, parameter_flags={
        "dsm_path": "--dsm", "reference_path": "--reference", "json_out": "--json", "html_out": "--html",
        "building_dilation_px": "--building-dilation", "extra_masks": "--mask", "max_shift": "--max-shift",
        "with_step_regions": "--step-regions", "step_height": "--step-height"})


