"""CLI sub-commands of the training data tools: ``prepare`` and ``synth-city``."""
from __future__ import annotations

import argparse

from implicity.core.commands import add_quiet_arg


def _run_prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare_dataset

    prepare_dataset(args.config, out=args.out, progress=not args.quiet, force=args.force)
    return 0


def _run_synth_city(args: argparse.Namespace) -> int:
    import math

    from implicity.core.errors import InputError

    from .export import write_synthetic_city
    from .simulate import StereoSimulationConfig
    from .synthetic_city import CityConfig

    if not all(math.isfinite(v) for v in (args.size, args.resolution, args.density)):
        raise InputError("--size, --resolution and --density must be finite numbers.")
    if args.size <= 0 or args.resolution <= 0 or args.size / args.resolution > 20000:
        raise InputError("--size and --resolution must be positive and give at most 20000 px per side.")
    if args.density <= 0:
        raise InputError(f"--density must be a positive number of points per m², got {args.density}.")
    if args.images not in (0, 1, 2):
        raise InputError("--images must be 0, 1 or 2.")
    city = CityConfig(size_m=args.size, resolution=args.resolution)
    sim = StereoSimulationConfig(gsd=args.resolution, density=args.density)
    paths = write_synthetic_city(args.out, args.seed, city, n_images=args.images, simulation=sim)
    print(f"Synthetic city {args.seed} written to {args.out} (fake CRS {city.crs}):")
    for name, path in paths.items():
        print(f"  {name:<10} {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prepare`` and ``synth-city`` to the ``implicity`` command."""
    p = subparsers.add_parser(
        "prepare", help="Build prepared training patches from a YAML config.",
        description="Cut synthetic cities, LiDAR and user rasters into patches with reference DSMs, "
                    "masks, simulated input clouds and orthos, and write them with a manifest.json. "
                    "Re-running with the same config on a complete dataset does nothing.",
    )
    p.add_argument("config", metavar="CONFIG.yaml", help="Prepare config (see training/data/configs/).")
    p.add_argument("--out", default=None, metavar="DIR", help="Output folder (default: the config's 'output').")
    p.add_argument("--force", action="store_true", help="Rebuild even if the dataset is up to date.")
    add_quiet_arg(p)
    p.set_defaults(run=_run_prepare)

    p = subparsers.add_parser(
        "synth-city", help="Write a synthetic city: reference DSM, masks, orthos, simulated cloud.",
        description="Generate a procedural city (seeded) and write its exact reference DSM, building/"
                    "forest/water masks, 1-2 rendered ortho-images and a simulated satellite-stereo "
                    "point cloud (LAZ). The CRS (EPSG:32632) is a fake georeference.",
    )
    p.add_argument("--seed", type=int, required=True, metavar="S", help="City seed (same seed = same city).")
    p.add_argument("--out", required=True, metavar="DIR", help="Output folder (created if missing).")
    p.add_argument("--size", type=float, default=256.0, metavar="M", help="City side length in metres (256).")
    p.add_argument("--resolution", type=float, default=0.5, metavar="R", help="Pixel size in metres (0.5).")
    p.add_argument("--images", type=int, default=2, metavar="N", help="Number of ortho-images, 0-2 (2).")
    p.add_argument("--density", type=float, default=3.0, metavar="D",
                   help="Mean density of the simulated cloud before holes, points per m² (3).")
    p.set_defaults(run=_run_synth_city)
