"""Benchmark: city scale on a local Dask cluster (issue 14).

Part 1 (``--part small``): a generated 1 km² city at 0.5 m (4 points/m², 4 M points, one LAZ),
``implicity reconstruct`` in one process against ``--workers 2``: wall time (fresh processes, cold
start included), the per-worker peak RSS, and the largest difference between the two DSMs.
Part 2 (``--part big``): a 4 × 4 km city written as ONE LAZ of 64 M points (streamed, tile by tile,
so the generator itself stays small), reconstructed with ``--workers 2`` at ``--big-resolution``
(default 1 m, to keep it tractable on a 2-core machine): wall time, s/km², peak RSS of the client and
of each worker. Every run is a fresh ``implicity`` process timed by ``/usr/bin/time -v``.

The city: terrain rolling by ±10 m, box buildings of 6–35 m on a 40 m lattice (hashed heights,
some lots empty), courtyards, 0.15 m height noise. Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

X0, Y0 = 700000.0, 6600000.0
TILE = 250.0  # generator tile side (m): 250k points per tile at 4 pts/m²


def tile_points(tx: int, ty: int, density: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) points of one generator tile (absolute coordinates)."""
    n = int(TILE * TILE * density)
    xy = rng.uniform(0, TILE, (n, 2)) + [tx * TILE, ty * TILE]
    x, y = xy[:, 0], xy[:, 1]
    z = 50.0 + 6.0 * np.sin(x / 170.0) + 4.0 * np.cos(y / 130.0)
    cell = np.floor(xy / 40.0)
    local = xy - cell * 40.0
    hashed = np.sin(cell[:, 0] * 12.9898 + cell[:, 1] * 78.233) * 43758.5453 % 1.0
    tall = 6.0 + hashed * 29.0
    lot = hashed > 0.15  # some lots stay empty (squares, streets)
    roof = lot & (local[:, 0] > 6) & (local[:, 0] < 32) & (local[:, 1] > 5) & (local[:, 1] < 30)
    court = (hashed > 0.8) & (np.abs(local[:, 0] - 19) < 4) & (np.abs(local[:, 1] - 17.5) < 4)
    z = z + np.where(roof & ~court, tall, 0.0) + rng.normal(0, 0.15, n)
    return np.column_stack([x + X0, y + Y0, z])


def write_city(path: Path, side: float, density: float, seed: int = 0) -> int:
    """One LAZ (EPSG:2154, 1 cm precision) written tile by tile; returns the point count."""
    import laspy
    from pyproj import CRS as ProjCRS

    header = laspy.LasHeader(point_format=1, version="1.4")
    header.offsets = np.array([X0, Y0, 0.0])
    header.scales = np.array([0.01, 0.01, 0.01])
    header.add_crs(ProjCRS.from_epsg(2154))
    n_tiles = int(np.ceil(side / TILE))
    total = 0
    rng = np.random.default_rng(seed)
    with laspy.open(str(path), mode="w", header=header) as writer:
        for ty in range(n_tiles):
            for tx in range(n_tiles):
                pts = tile_points(tx, ty, density, rng)
                rec = laspy.ScaleAwarePointRecord.zeros(pts.shape[0], header=header)
                rec.x, rec.y, rec.z = pts[:, 0], pts[:, 1], pts[:, 2]
                writer.write_points(rec)
                total += pts.shape[0]
    return total


def run_cli(args: list[str], log: Path) -> dict:
    """``implicity reconstruct ARGS`` under /usr/bin/time -v: wall s, peak RSS MB, its stdout."""
    exe = Path(sys.executable).with_name("implicity")
    cmd = ["/usr/bin/time", "-v", str(exe), "reconstruct", *args, "--quiet", "--device", "cpu"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log.write_text(proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    workers = [float(m) for m in re.findall(r"^  worker \S+ peak RSS (\d+(?:\.\d+)?) MB", proc.stdout, re.M)]
    return {"wall": wall, "rss_mb": int(rss.group(1)) / 1024 if rss else float("nan"), "workers_mb": workers,
            "stdout": proc.stdout}


def max_diff(a: Path, b: Path) -> tuple[float, bool]:
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        p, q = x.read(1, masked=True), y.read(1, masked=True)
    same_mask = bool(np.array_equal(np.ma.getmaskarray(p), np.ma.getmaskarray(q)))
    return float(np.abs(p.filled(0).astype(float) - q.filled(0).astype(float)).max()), same_mask


def part_small(work: Path, density: float) -> None:
    laz = work / "city_1km2.laz"
    t0 = time.perf_counter()
    n = write_city(laz, 1000.0, density)
    print(f"1 km² city: {n:,} points written in {time.perf_counter() - t0:.1f} s ({laz.stat().st_size / 2**20:.0f} MiB)")
    common = ["--points", str(laz), "--resolution", "0.5"]
    one = run_cli([*common, "--out", str(work / "one.tif"), "--confidence-out", str(work / "one_c.tif")],
                  work / "one.log")
    print(f"  in one process:   {one['wall']:6.1f} s, peak RSS {one['rss_mb']:.0f} MB")
    two = run_cli([*common, "--out", str(work / "two.tif"), "--confidence-out", str(work / "two_c.tif"),
                   "--workers", "2"], work / "two.log")
    print(f"  --workers 2:      {two['wall']:6.1f} s, peak RSS client {two['rss_mb']:.0f} MB, workers "
          + ", ".join(f"{w:.0f}" for w in two["workers_mb"]) + " MB")
    for name in ("", "_c"):
        d, same = max_diff(work / f"one{name}.tif", work / f"two{name}.tif")
        print(f"  {'DSM' if not name else 'confidence'}: max |one process - workers 2| = {d:.2e}, "
              f"same nodata mask: {same}")


def part_big(work: Path, side: float, density: float, resolution: float) -> None:
    laz = work / "city_big.laz"
    t0 = time.perf_counter()
    n = write_city(laz, side, density)
    km2 = side * side / 1e6
    print(f"{km2:g} km² city: {n:,} points in one LAZ, written in {time.perf_counter() - t0:.1f} s "
          f"({laz.stat().st_size / 2**20:.0f} MiB)")
    out = work / "big.tif"
    r = run_cli(["--points", str(laz), "--resolution", str(resolution), "--out", str(out), "--workers", "2",
                 "--max-pixels", str(400_000_000)], work / "big.log")
    print(f"  --workers 2 at {resolution:g} m: {r['wall']:.1f} s = {r['wall'] / km2:.1f} s/km²; peak RSS client "
          f"{r['rss_mb']:.0f} MB, workers " + ", ".join(f"{w:.0f}" for w in r["workers_mb"]) + " MB")
    for line in r["stdout"].splitlines():
        if line.startswith(("DSM written", "Blocks", "Device", "  worker")):
            print("  " + line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["small", "big", "all"], default="all")
    p.add_argument("--density", type=float, default=4.0, help="points per m² (default 4)")
    p.add_argument("--big-side", type=float, default=4000.0, help="side of the big city in m (default 4000: 16 km²)")
    p.add_argument("--big-resolution", type=float, default=1.0, help="pixel size of the big run (default 1 m)")
    p.add_argument("--workdir", default=None, help="folder for the files (default: a temporary folder, removed)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_city_", dir=args.workdir) as tmp:
        work = Path(tmp)
        if args.part in ("small", "all"):
            part_small(work, args.density)
        if args.part in ("big", "all"):
            part_big(work, args.big_side, args.density, args.big_resolution)


if __name__ == "__main__":
    main()
