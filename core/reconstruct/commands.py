"""The ``implicity reconstruct`` sub-command: ImpliCity DSM from points (+ orthos) and a model."""
from __future__ import annotations

import argparse
import logging
import sys

from ..cluster.cli import add_cluster_args, cluster_options_from_args
from ..commands import OUTPUT_FLAGS, add_input_args, add_max_pixels_arg, add_quiet_arg
from ..progress import tqdm_progress
from ..vocabulary import (
    DEFAULT_DESPECKLE,
    DEFAULT_DEVICE,
    DEFAULT_FAR_BLUNDER_GAP,
    DEFAULT_FILL,
    DEFAULT_FILL_MAX_DISTANCE,
    DEFAULT_KEEP_MARGIN,
    DEFAULT_MODE,
    DEFAULT_PRECISION,
    DEFAULT_SEARCH_MARGIN,
    FILL_METHODS,
    MODES,
    PRECISIONS,
    SYMMETRY_COUNTS,
)

#: Core parameters (``ReconstructionInputs`` / ``ReconstructionOptions`` fields) and their flags,
#: where the flag is not ``--<name>``.
PARAMETER_FLAGS = {
    **OUTPUT_FLAGS, "orthos": "--ortho", "confidence_path": "--confidence-out", "window_stride": "--stride",
    "fast_search.final_step": "--final-step", "evidence.radius": "--search-radius",
    "evidence.margin": "--search-margin", "evidence.keep_margin": "--keep-margin",
    "evidence.blunder_gap": "--blunder-gap", "evidence.far_blunder_gap": "--far-blunder-gap",
    "evidence.edge_width": "--edge-width",
}

MODE_HELP = ("fast (default): 48 m stride, each pixel decoded ~1.3x, search from the network's own surface "
             "prior with false-position steps (~6 queries per pixel), evidence rules against pits. reference: the paper's "
             "generator, reproduced as the yardstick (16 m stride, -100..+80 m scan at 16 m, 4 refinements /4, "
             "its query positions and blend weights, no evidence rules); much slower.")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``reconstruct`` to the ``implicity`` command."""
    p = subparsers.add_parser(
        "reconstruct", help="ImpliCity DSM from a point cloud (+ 0/1/2 ortho-images) and a trained model.",
        description="Reconstruct a DSM with a trained ImpliCity network: the extent is cut into 64 m "
                    "windows, each encoded once; per pixel the height where the predicted occupancy "
                    "crosses 0.5 is searched; windows are blended and streamed to a COG GeoTIFF "
                    "(written atomically; nothing is left behind on error or Ctrl-C).",
    )
    add_input_args(p)
    p.add_argument("--ortho", action="append", default=[], metavar="IMAGE.tif",
                   help="Ortho-image (repeat for stereo). Count must match the model: none for ImpliCity-0, "
                        "one for -mono, two for -stereo. Any CRS/pixel size (reprojected per window); "
                        "multi-band images are converted to grey (luma of the first three bands).")
    p.add_argument("--model", default=None, metavar="MODEL.pt",
                   help="Trained checkpoint (ours or the reference implementation's). Default: the model "
                        "shipped in models/ for the number of --ortho images given.")
    p.add_argument("--out", required=True, metavar="DSM.tif", help="Output DSM GeoTIFF (COG); must not be an input.")
    p.add_argument("--device", default=DEFAULT_DEVICE, metavar="D",
                   help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N. The choice is logged.")
    p.add_argument("--confidence-out", default=None, metavar="CONF.tif",
                   help="Also write a confidence raster in [0,1]: P(occupied) 0.5 m below the surface "
                        "minus P(occupied) 0.5 m above it, times the network's share of the height (1 = sharp, "
                        "certain surface; lower near the cloud's outer edge, where the points' surface is "
                        "blended in; 0 = clamped to the points' height range, or filled).")
    p.add_argument("--mode", choices=MODES, default=DEFAULT_MODE, help=MODE_HELP)
    p.add_argument("--stride", type=float, default=None, metavar="M",
                   help="Distance between window origins in metres (default: fast 48, reference 16).")
    p.add_argument("--overlap", type=float, default=None, metavar="M",
                   help="Fast mode: width of the linear blending ramp between neighbouring windows (default 8).")
    p.add_argument("--final-step", type=float, default=None, metavar="M",
                   help="Fast mode: refine until the height bracket is this thin (default 0.0625 m).")
    p.add_argument("--search-radius", type=float, default=None, metavar="R",
                   help="Points within R map units of a pixel (a square) bound its height (default 2.5 m).")
    p.add_argument("--search-margin", type=float, default=None, metavar="M",
                   help="Heights are searched between the robust lowest nearby point minus M and the "
                        f"highest plus M (default {DEFAULT_SEARCH_MARGIN:g} m); where the network's surface lies outside, the pixel "
                        "takes the nearest bound and is flagged (confidence 0).")
    p.add_argument("--keep-margin", type=float, default=None, metavar="K",
                   help="Heights are then kept between the robust lowest nearby point minus K and the highest "
                        f"plus K (default {DEFAULT_KEEP_MARGIN:g}; 0 = the points' own range; at most --search-margin).")
    p.add_argument("--blunder-gap", type=float, default=None, metavar="G",
                   help="A pixel cell whose lowest (highest) point lies more than G below (above) all others of "
                        "its 5 x 5 cells does not bound the heights around it (default 1 m).")
    p.add_argument("--far-blunder-gap", type=float, default=None, metavar="G",
                   help="Where the cloud is too sparse for --blunder-gap: a pixel cell more than G below (above) every "
                        "other cell within --fill-max-distance plus --search-radius does not bound the heights around "
                        f"it either (default {DEFAULT_FAR_BLUNDER_GAP:g} m; 0 = off).")
    p.add_argument("--despeckle", type=float, default=None, metavar="T",
                   help="Fast mode: a pixel more than T from the median of its 3 x 3 neighbourhood that agrees with "
                        f"at most one neighbour takes that median (default {DEFAULT_DESPECKLE:g} m; 0 = off). Corners and lines one "
                        "pixel wide stay.")
    p.add_argument("--symmetries", type=int, choices=SYMMETRY_COUNTS, default=1, metavar="N",
                   help="Average the network over N turned / mirrored copies of every window: 1 (default, off), 2, "
                        "4 or 8. About N times slower; a slightly less noisy surface (on the validation split, 4: "
                        "MAE -1.7 %%).")
    p.add_argument("--edge-width", type=float, default=None, metavar="W",
                   help="Within W map units of the outer edge of the cloud (where the network sees points on one "
                        "side only and sinks) heights are blended towards the points' own surface (default 4 m).")
    p.add_argument("--no-edge-blend", action="store_true",
                   help="Keep the network's heights along the outer edge of the cloud (still bounded by "
                        "--search-margin).")
    p.add_argument("--adaptive-range", action="store_true",
                   help="Reference mode: widen the paper's -100..+80 m scan to the window's point heights "
                        "(towers, valleys). A deviation from the paper's generator, so off by default.")
    p.add_argument("--threads", default="auto", metavar="auto|all|N",
                   help="CPU threads: auto (default) uses the cores other processes leave free, re-checked before "
                        "every window, so a busy machine slows the run down gracefully; all = every core; or a number.")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="Decoder queries per call (default: from free memory; halved on CUDA out-of-memory).")
    p.add_argument("--fill", choices=FILL_METHODS, default=DEFAULT_FILL,
                   help="Holes no window gave a height to (reference mode: nothing occupied in its scan): "
                        "filled (idw/nearest) within --fill-max-distance of the points, or nodata (none).")
    p.add_argument("--fill-max-distance", type=float, default=DEFAULT_FILL_MAX_DISTANCE, metavar="D",
                   help=f"No height farther than D map units from every input point (default "
                        f"{DEFAULT_FILL_MAX_DISTANCE:g}), and beyond the cloud's outer edge none farther than "
                        "--search-radius: empty corners of the extent stay nodata and are never filled.")
    add_max_pixels_arg(p)
    p.add_argument("--min-ortho-coverage", type=float, default=0.5, metavar="F",
                   help="Refuse an ortho-image whose valid pixels cover less than this share of the output "
                        "extent (default 0.5); below 0.9 a warning is printed.")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                   help="auto = fp32. fp16/bf16: CUDA mixed precision (faster, may move heights by cm).")
    add_quiet_arg(p)
    add_cluster_args(p)
    p.set_defaults(run=_run, parameter_flags=PARAMETER_FLAGS)


def _run(args: argparse.Namespace) -> int:
    from .engine import reconstruct_dsm
    from .options import ReconstructionInputs, ReconstructionOptions, with_overrides

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # The flags of nested options, by their dotted names (the same names as PARAMETER_FLAGS).
    nested = {"fast_search.final_step": args.final_step, "evidence.margin": args.search_margin,
              "evidence.keep_margin": args.keep_margin, "evidence.blunder_gap": args.blunder_gap,
              "evidence.far_blunder_gap": args.far_blunder_gap, "evidence.radius": args.search_radius,
              "evidence.edge_width": args.edge_width, "evidence.blend": False if args.no_edge_blend else None}
    options = with_overrides(ReconstructionOptions(
        mode=args.mode, device=args.device, window_stride=args.stride, overlap=args.overlap,
        adaptive_range=args.adaptive_range, batch_size=args.batch_size, fill=args.fill,
        threads=int(args.threads) if str(args.threads).isdigit() else args.threads,
        fill_max_distance=args.fill_max_distance, precision=args.precision, max_pixels=args.max_pixels,
        min_ortho_coverage=args.min_ortho_coverage,
        despeckle=DEFAULT_DESPECKLE if args.despeckle is None else args.despeckle, symmetries=args.symmetries,
    ), {name: value for name, value in nested.items() if value is not None})
    model = args.model
    if model is None:
        from ..errors import InputError
        from ..shipped_models import default_model, missing_model_message

        model = default_model(len(args.ortho))
        if model is None:
            raise InputError(missing_model_message(len(args.ortho)))
        print(f"Model: {model.name} (shipped, for {len(args.ortho)} ortho-image(s))")
    inputs = ReconstructionInputs(
        points=args.points, points_crs=args.points_crs, orthos=tuple(args.ortho), model=model,
        out_path=args.out, confidence_path=args.confidence_out, resolution=args.resolution, extent=args.extent,
    )
    cluster = cluster_options_from_args(args)
    with tqdm_progress(f"reconstruct ({args.mode})", not args.quiet) as progress:
        if cluster is None:
            result = reconstruct_dsm(inputs, options, progress=progress)
        else:
            from ..cluster.run import reconstruct_on_cluster

            result = reconstruct_on_cluster(inputs, options, cluster, progress=progress)
    print(f"Device: {result.device} ({result.device_reason})")
    print(f"DSM written: {result.dsm_path} ({result.width} x {result.height} px at {args.resolution:g}); "
          f"{result.tiles} windows ({result.tiles_skipped} without points) in {result.seconds:.1f} s")
    if result.confidence_path:
        print(f"Confidence written: {result.confidence_path}")
    if cluster is not None:
        from ..cluster.run import print_cluster_summary

        print_cluster_summary(result)
    return 0
