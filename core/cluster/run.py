"""``reconstruct_on_cluster``: the single-process reconstruction, cut into blocks run by Dask.

Flow (client): check everything as one process does → stream the points once into scratch tiles
(``scratch.py``; memory: one chunk) → the output grid and the far-point rules from what that pass
kept → the window plan of one process → blocks of windows (``blocks.py``) → one task per block on
the cluster (``tasks.run_block``: reads its tiles, computes its windows, returns integer blend
sums) → the client adds the sums of each block row as soon as it is complete, fills holes with the
same halo-streaming sink as one process and writes rows to the COG writers (atomic: the files
appear at the end). The scratch folder is removed at the end, after a failure and after Cancel.

Faults: a task that raises is retried (``retries``); a worker that dies mid-block has its blocks
rescheduled by Dask on the others (a local cluster's nanny restarts it); a block that still fails
ends the run with one line naming the block. Cancel sets a cluster-wide event the tasks poll
between decoder batches and cancels the futures.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import CancelledError, ImplicityError, InputError
from ..raster import GridSpec

log = logging.getLogger(__name__)
ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]

DEFAULT_BLOCK_SIZE = 512.0  # metres: ~11 windows of the fast mode per block side
SPLIT_SHARE = 0.15  # share of the progress bar given to the first pass over the points


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how to run the blocks. ``workers`` starts a local cluster of that many processes;
    ``scheduler`` (``tcp://host:port``) uses an existing one. One of the two must be given."""

    workers: int | None = None
    scheduler: str | None = None
    block_size: float = DEFAULT_BLOCK_SIZE  # metres, rounded to whole window strides
    scratch_dir: "str | os.PathLike[str] | None" = None  # default: the output's folder
    retries: int = 2  # extra attempts for a block whose task raised
    threads_per_worker: int | None = None  # torch threads per worker; default cores // workers
    fail_blocks: tuple[tuple[int, int], ...] = ()  # for tests: blocks whose task always raises


def check_cluster_options(cluster: ClusterOptions) -> None:
    """One-line errors for impossible values, before anything is read."""
    if cluster.workers is None and not cluster.scheduler:
        raise InputError("--workers N or --scheduler tcp://HOST:PORT is needed to run on a Dask cluster.")
    if cluster.workers is not None and cluster.scheduler:
        raise InputError("--workers starts a local cluster and --scheduler uses an existing one: give only one.")
    if cluster.workers is not None and not (isinstance(cluster.workers, int) and 1 <= cluster.workers <= 1024):
        raise InputError(f"--workers must be a whole number from 1 to 1024, got {cluster.workers}.")
    if cluster.scheduler and "://" not in str(cluster.scheduler) and ":" not in str(cluster.scheduler):
        raise InputError(f"--scheduler {cluster.scheduler}: give the scheduler's address as tcp://HOST:PORT.")
    if not (isinstance(cluster.retries, int) and 0 <= cluster.retries <= 100):
        raise InputError(f"--retries must be a whole number from 0 to 100, got {cluster.retries}.")
    if not (cluster.block_size > 0 and math.isfinite(cluster.block_size)):
        raise InputError(f"--block-size must be a positive number of metres, got {cluster.block_size}.")


def cuda_devices() -> list[str]:
    """The GPUs a local cluster gives one worker each: CUDA_VISIBLE_DEVICES's entries, or all."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001
        return []


def gpu_worker_specs(devices: list[str], threads: int) -> dict[str, dict[str, Any]]:
    """SpecCluster worker specs: one nanny process per GPU, each seeing only its GPU (as cuda:0)."""
    from distributed import Nanny

    return {f"gpu-{d}": {"cls": Nanny, "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": d,
                                                                             "OMP_NUM_THREADS": str(threads)}}}
            for d in devices}


def _spawn_with_python() -> None:
    """Worker processes are spawned with ``sys.executable``, which inside QGIS is the qgis binary:
    point multiprocessing at the Python interpreter QGIS runs instead."""
    import multiprocessing
    import sys

    if Path(sys.executable).name.lower().startswith("python"):
        return
    major, minor = sys.version_info[:2]
    for prefix in (sys.exec_prefix, sys.base_exec_prefix):
        for name in (f"python{major}.{minor}", f"python{major}", "python", "python.exe"):
            for sub in ("bin", ""):
                candidate = Path(prefix) / sub / name
                if candidate.is_file():
                    multiprocessing.set_executable(str(candidate))
                    return


def worker_environment(threads: int):
    """Dask config for the local workers' environment: torch's thread count, idle OpenMP threads that
    sleep instead of spinning (other processes share the cores), and NOT Dask's default
    ``MALLOC_TRIM_THRESHOLD_``, which pins glibc's mmap threshold. Kept for the whole run: a worker
    that is restarted after a crash gets the same environment."""
    import dask

    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "OMP_WAIT_POLICY": "PASSIVE"}
    return dask.config.set({"distributed.nanny.pre-spawn-environ": env})


def start_local_cluster(workers: int, threads: int, device: str):
    """A local cluster: one single-task process per worker (torch uses ``threads`` threads in each);
    with CUDA (``device`` not cpu), one worker per GPU: dask-cuda's LocalCUDACluster when
    installed, else one process per CUDA_VISIBLE_DEVICES entry. Returns (cluster, description)."""
    from distributed import LocalCluster, Scheduler, SpecCluster

    _spawn_with_python()
    gpus = cuda_devices() if device != "cpu" else []
    if gpus:
        gpus = gpus[:workers]
        try:
            from dask_cuda import LocalCUDACluster

            cluster = LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(gpus), threads_per_worker=1,
                                       dashboard_address=None, silence_logs=logging.ERROR)
            return cluster, f"dask-cuda LocalCUDACluster, one worker per GPU ({','.join(gpus)})"
        except ImportError:
            cluster = SpecCluster(workers=gpu_worker_specs(gpus, threads),
                                  scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
                                  silence_logs=logging.ERROR)
            return cluster, f"local cluster, one worker process per GPU ({','.join(gpus)})"
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    return cluster, f"local cluster of {workers} worker processes × {threads} torch thread(s)"


def print_cluster_summary(result) -> None:
    """The blocks and the peak memory of this process and of every worker process (CLI)."""
    from .tasks import peak_rss_mb

    stats = result.stats
    workers = {k[len("peak_rss_mb["):-1]: v for k, v in stats.items() if k.startswith("peak_rss_mb[")}
    print(f"Blocks: {int(stats.get('blocks', 0))} on {len(workers)} worker process(es); splitting the "
          f"{int(stats.get('points', 0)):,} points took {stats.get('split_s', 0.0):.1f} s; peak RSS of this process "
          f"{peak_rss_mb():.0f} MB")
    for name, mb in sorted(workers.items()):
        print(f"  worker {name} peak RSS {mb:.0f} MB")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _bounds_cloud(b: tuple[float, float, float, float]) -> np.ndarray:
    return np.array([[b[0], b[1], 0.0], [b[2], b[3], 0.0]])


def _float32_bounds(b, origin) -> tuple[float, float, float, float]:
    """Bounds as one process's PointIndex reports them (float32 offsets from its origin)."""
    ox, oy = origin
    return (float(np.float32(b[0] - ox)) + ox, float(np.float32(b[1] - oy)) + oy,
            float(np.float32(b[2] - ox)) + ox, float(np.float32(b[3] - oy)) + oy)


def reconstruct_on_cluster(inputs, options=None, cluster: ClusterOptions | None = None,
                           progress: ProgressFn | None = None, is_cancelled: CancelFn | None = None):
    """Same inputs, options and result as ``engine.reconstruct_dsm``, computed by Dask workers."""
    import torch

    from ..crs import check_coordinates_fit_crs
    from ..gridding import grid_for_points, parse_extent
    from ..reconstruct.engine import _load_checked_model, _metres_to_map_units, _scaled, check_run, open_outputs
    from ..reconstruct.evidence import context_margin
    from ..reconstruct.imagery import check_image_count, check_ortho_coverage
    from ..reconstruct.options import ReconstructionOptions, ReconstructionResult
    from ..reconstruct.tiling import plan_windows
    from .blocks import plan_blocks, windows_per_block
    from .scratch import ScratchTiles
    from .sources import open_chunks
    from .tasks import RunSpec, run_block

    t_start = time.perf_counter()
    options = options or ReconstructionOptions()
    cluster = cluster or ClusterOptions(workers=2)
    check_cluster_options(cluster)
    out, conf_path = check_run(inputs, options)
    report = progress or (lambda f, m: None)
    report(0.0, "loading the model")
    model, model_name = _load_checked_model(inputs.model, torch.device("cpu"))  # the config; workers load their own
    check_image_count(len(inputs.orthos), int(model.n_images), model_name)
    extent = parse_extent(inputs.extent) if inputs.extent is not None else None
    src = open_chunks(inputs.points, inputs.points_crs)
    if src.crs is None:
        raise InputError(f"{src.source}: the point cloud has no coordinate reference system in its header. Give it "
                         "with --points-crs (for example EPSG:2154 for Lambert-93, EPSG:28992 for RD New).")
    crs = src.crs
    k = _metres_to_map_units(crs)
    options = _scaled(options, k)
    window_size = float(model.config.patch_size) * k
    z_std = float(model.config.z_std) * k
    keep_region = None
    if extent is not None:  # points farther than a window from the extent are never indexed
        g = GridSpec.from_bounds(*extent, inputs.resolution, crs)
        gx0, gy0, gx1, gy1 = g.bounds
        keep_region = (gx0 - window_size, gy0 - window_size, gx1 + window_size, gy1 + window_size)
    parent = Path(cluster.scratch_dir) if cluster.scratch_dir else Path(out).parent
    scratch = ScratchTiles.create(parent)
    client = local = None
    stack_logs = contextlib.ExitStack()
    futures: list = []
    cancel_event = None
    try:
        def split_progress(f: float, m: str) -> None:
            report(SPLIT_SHARE * f, m)

        st = scratch.write(src.chunks, src.total, keep_region, split_progress, is_cancelled)
        split_s = time.perf_counter() - t_start
        if st.n_finite == 0:
            raise InputError(f"{src.source}: the point cloud contains no (finite) points.")
        if st.n_read > st.n_finite:
            log.warning("%s: ignored %s of %s points with NaN or infinite coordinates.", src.source,
                        f"{st.n_read - st.n_finite:,}", f"{st.n_read:,}")
        check_coordinates_fit_crs(_bounds_cloud((*st.finite_min, *st.finite_max)), crs, src.source)
        if st.z_body.n_cut:
            log.warning("%s: ignored %s of %s points whose heights lie more than %g map units below or above all "
                        "the others (kept heights %.2f..%.2f); they look like blunders.", src.source,
                        f"{st.z_body.n_cut:,}", f"{st.n_finite:,}", 500.0, st.z_body.lo, st.z_body.hi)
        if extent is not None:
            grid = grid_for_points(_bounds_cloud(st.kept_bounds), crs, inputs.resolution, extent, source=src.source,
                                   max_pixels=options.max_pixels)
        else:
            bx, by = st.xy_body
            if bx.n_cut or by.n_cut:
                log.warning("%s: ignored about %s of %s points lying more than 128 map units away from the rest of "
                            "the cloud (the output covers x %.2f..%.2f, y %.2f..%.2f); give --extent to include "
                            "them.", src.source, f"{bx.n_cut + by.n_cut:,}", f"{st.n_kept:,}", bx.lo, bx.hi, by.lo,
                            by.hi)
            grid = grid_for_points(_bounds_cloud((bx.lo, by.lo, bx.hi, by.hi)), crs, inputs.resolution, None,
                                   source=src.source, max_pixels=options.max_pixels)
        if inputs.orthos:
            check_ortho_coverage(inputs.orthos, crs, grid, window_size / float(model.config.image_size),
                                 options.min_ortho_coverage)
        xmin, ymin, xmax, ymax = grid.bounds
        index_bounds = (xmin - window_size, ymin - window_size, xmax + window_size, ymax + window_size)
        data = scratch.data_bounds(index_bounds)
        data = _float32_bounds(data, index_bounds[:2]) if data is not None else None
        rows = plan_windows(grid, window_size, options.stride(), options.mode, options.blend_overlap(),
                            data_bounds=data)
        ctx_margin = context_margin(grid.resolution, options.evidence, options.fill_max_distance)
        blocks = plan_blocks(rows, windows_per_block(cluster.block_size * k, options.stride()), ctx_margin)
        total_windows = sum(len(b.windows) for b in blocks)
        if is_cancelled is not None and is_cancelled():
            raise CancelledError("reconstruction stopped by the user; no output was written")

        from distributed import Client, Event

        report(SPLIT_SHARE, "starting the Dask cluster")
        cores = os.cpu_count() or 1
        per_host: dict[str, int] = {}
        if cluster.scheduler:
            client = Client(cluster.scheduler, timeout="30s")
            info = client.scheduler_info().get("workers", {})
            for w in info.values():
                host = str(w.get("host", ""))
                per_host[host] = per_host.get(host, 0) + 1
            threads = cluster.threads_per_worker or 0  # 0: the worker's cores / workers on its host
            where = f"scheduler {cluster.scheduler} ({len(info)} workers)"
        else:
            threads = cluster.threads_per_worker or max(1, cores // cluster.workers)
            quiet = logging.getLogger("distributed")
            stack_logs.callback(quiet.setLevel, quiet.level)
            quiet.setLevel(logging.ERROR)  # the scheduler runs in this process: its INFO lines are noise here
            stack_logs.enter_context(worker_environment(threads))
            local, where = start_local_cluster(cluster.workers, threads, options.device)
            client = Client(local)
        log.info("reconstruct: %d blocks of up to %d windows (%d windows) on a %s", len(blocks),
                 max(len(b.windows) for b in blocks) if blocks else 0, total_windows, where)
        run_id = uuid.uuid4().hex[:12]
        cancel_event = Event(f"implicity-cancel-{run_id}", client=client)
        spec = RunSpec(
            scratch_dir=str(scratch.folder), scratch_tile=scratch.tile, scratch_stats=st,
            model=os.fspath(inputs.model) if isinstance(inputs.model, (str, os.PathLike)) else inputs.model,
            orthos=tuple(os.fspath(o) for o in inputs.orthos), crs_wkt=crs.to_wkt(), grid=grid, options=options,
            window_size=window_size, z_std=z_std, index_bounds=index_bounds, bin_size=window_size / 4,
            with_confidence=conf_path is not None, threads=threads, workers_per_host=per_host,
            cancel_event=cancel_event.name,
            fail_blocks=tuple(cluster.fail_blocks),
        )
        for i, b in enumerate(blocks):
            futures.append(client.submit(run_block, spec, b, key=f"implicity-{run_id}-block-{b.key[0]}-{b.key[1]}",
                                         retries=cluster.retries, priority=len(blocks) - i, pure=False))
        by_row: dict[int, list] = {}
        for b, f in zip(blocks, futures):
            by_row.setdefault(b.key[0], []).append((b, f))
        block_rows = sorted(by_row)
        result_stats: dict[str, float] = {}
        rss: dict[str, float] = {}
        tiles = skipped = done_windows = 0
        with contextlib.ExitStack() as stack:
            acc, sink = open_outputs(stack, out, conf_path, grid, options)
            results: dict[tuple[int, int], Any] = {}
            pending = list(zip(blocks, futures))
            next_row = 0
            while pending or next_row < len(block_rows):
                if is_cancelled is not None and is_cancelled():
                    raise CancelledError("reconstruction stopped by the user; no output was written")
                finished = [(b, f) for b, f in pending if f.done()]
                if not finished and pending:
                    time.sleep(0.1)
                    continue
                for b, f in finished:
                    pending.remove((b, f))
                    if f.status != "finished":
                        exc = f.exception() if f.status == "error" else RuntimeError(f"task {f.status}")
                        raise ImplicityError(
                            f"{b.label()} failed after {cluster.retries + 1} attempt(s) or lost its worker too often "
                            f"({_first_line(exc)}); the run stopped and no output was written.")
                    res = f.result()
                    f.release()
                    results[b.key] = res
                    tiles += res.tiles
                    skipped += res.skipped
                    done_windows += len(b.windows)
                    rss[res.worker] = max(rss.get(res.worker, 0.0), res.peak_rss_mb)
                    for key, value in res.stats.items():
                        result_stats[key] = result_stats.get(key, 0) + value
                    report(SPLIT_SHARE + (1 - SPLIT_SHARE) * done_windows / max(total_windows, 1),
                           f"block {len(results)}/{len(blocks)}, window {done_windows}/{total_windows}")
                # Add every complete block row, in order, then hand the rows no later block touches to the sink.
                while next_row < len(block_rows) and all(b.key in results for b, _ in by_row[block_rows[next_row]]):
                    for b, _ in by_row[block_rows[next_row]]:
                        res = results.pop(b.key)
                        acc.add_sums(res.r0, res.c0, res.num, res.den, res.conf, res.eligible)
                    next_row += 1
                    finished_row = (min(b.r0 for b, _ in by_row[block_rows[next_row]])
                                    if next_row < len(block_rows) else grid.height)
                    sink.push(*acc.pop(finished_row))
            sink.push(*acc.pop(grid.height))
            sink.close()
            report(1.0, "writing the GeoTIFF")
    except BaseException:
        if cancel_event is not None:
            with contextlib.suppress(Exception):
                cancel_event.set()
        if client is not None and futures:
            with contextlib.suppress(Exception):
                client.cancel(futures, force=True)
        raise
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
        if local is not None:
            with contextlib.suppress(Exception):
                local.close(timeout=10)
        scratch.remove()
        stack_logs.close()
    device = options.device
    stats = dict(result_stats)
    stats.update(split_s=split_s, points=st.n_read, points_kept=st.n_kept, blocks=len(blocks), filled_pixels=sink.filled_pixels,
                 empty_pixels=sink.empty_pixels, workers=len(rss))
    for worker, mb in sorted(rss.items()):
        stats[f"peak_rss_mb[{worker}]"] = mb
    return ReconstructionResult(
        dsm_path=Path(out), confidence_path=Path(conf_path) if conf_path else None, device=f"{device} on Dask workers",
        device_reason=where, mode=options.mode, tiles=tiles, tiles_skipped=skipped,
        seconds=time.perf_counter() - t_start, width=grid.width, height=grid.height, stats=stats,
    )
