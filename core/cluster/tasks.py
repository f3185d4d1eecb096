"""What a Dask worker runs for one block: read its points, compute its windows, return the sums.

Runs in the worker process. The model is loaded once per worker process and kept (a block of
~100 windows would otherwise spend a noticeable share reloading it). The task computes its windows
with the very code of the single-process engine (``engine.blend_windows``) and returns its blend
sums (integers, see ``BlendAccumulator``), so the client's sum is one process's sum.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..raster import GridSpec
from ..reconstruct.options import ReconstructionOptions
from .blocks import Block
from .scratch import ScratchStats, ScratchTiles

_MODELS: dict[tuple[str, str], tuple[Any, str]] = {}


@dataclass(frozen=True)
class RunSpec:
    """What every block of a run shares (sent once per task; small)."""

    scratch_dir: str
    scratch_tile: float
    scratch_stats: ScratchStats
    model: Any  # checkpoint path (str) or a picklable model object
    orthos: tuple[str, ...]
    crs_wkt: str
    grid: GridSpec
    options: ReconstructionOptions  # already in map units
    window_size: float
    z_std: float
    index_bounds: tuple[float, float, float, float]
    bin_size: float
    with_confidence: bool
    threads: int  # torch threads per worker; 0: the worker's cores / the workers on its host
    workers_per_host: dict[str, int] = field(default_factory=dict)
    cancel_event: str | None = None  # name of a distributed.Event set by the client on Cancel
    fail_blocks: tuple[tuple[int, int], ...] = ()  # tests: blocks that raise (a block that keeps failing)


@dataclass
class BlockResult:
    key: tuple[int, int]
    r0: int
    c0: int
    num: np.ndarray
    den: np.ndarray
    conf: np.ndarray | None
    eligible: np.ndarray
    tiles: int
    skipped: int
    points: int
    seconds: float
    worker: str
    peak_rss_mb: float
    stats: dict[str, float] = field(default_factory=dict)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB.

    Linux: ``VmHWM`` of /proc/self/status. Not ``ru_maxrss``: a worker process is forked from the
    client and then exec'd, and its ``ru_maxrss`` keeps the client's size at the fork (measured: every
    worker "peaked" at exactly the client's 739 MB)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cancel_check(name: str | None):
    """A cheap ``is_cancelled`` for the engine: asks the scheduler at most every 0.5 s."""
    if not name:
        return None
    from distributed import Event, get_client

    event = Event(name, client=get_client())
    state = {"t": 0.0, "set": False}

    def is_cancelled() -> bool:
        now = time.monotonic()
        if not state["set"] and now - state["t"] > 0.5:
            state["t"] = now
            try:
                state["set"] = bool(event.is_set())
            except Exception:  # noqa: BLE001 - the scheduler is gone: the run is over anyway
                state["set"] = True
        return state["set"]

    return is_cancelled


def _heap_for_big_arrays() -> None:
    """Undo the nanny's ``MALLOC_TRIM_THRESHOLD_`` (Dask's default environment for worker processes):
    it fixes glibc's mmap threshold at 128 KiB, so every window's temporary arrays were mapped and
    unmapped again, page by page (measured: 3-6x slower windows). Large thresholds keep them on the heap."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 * 2 ** 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 * 2 ** 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _threads(spec: RunSpec) -> int:
    if spec.threads:
        return spec.threads
    try:
        from distributed import get_worker

        host = get_worker().address.split("://")[-1].rsplit(":", 1)[0]
        sharing = max(1, spec.workers_per_host.get(host, 1))
    except Exception:  # noqa: BLE001 - not in a worker (a direct call)
        sharing = 1
    return max(1, (os.cpu_count() or 1) // sharing)


def _model(spec: RunSpec, device):
    from ..reconstruct.engine import _load_checked_model

    key = (str(spec.model) if isinstance(spec.model, (str, os.PathLike)) else f"object:{id(spec.model)}", str(device))
    if key not in _MODELS:
        _MODELS[key] = _load_checked_model(spec.model, device)
    return _MODELS[key]


def run_block(spec: RunSpec, block: Block) -> BlockResult:
    """Compute one block (see the module docstring)."""
    import torch

    from ..errors import ImplicityError
    from ..reconstruct.blending import BlendAccumulator
    from ..reconstruct.decoding import image_normalizer
    from ..reconstruct.device import BatchRunner, auto_batch_size, resolve_device
    from ..reconstruct.engine import WindowContext, _Stats, blend_windows
    from ..reconstruct.imagery import OrthoWindows
    from ..reconstruct.symmetry import averaged
    from ..reconstruct.tiling import PointIndex

    t0 = time.perf_counter()
    if block.key in spec.fail_blocks:
        raise ImplicityError(f"injected failure of block {block.key[0]},{block.key[1]}")
    _heap_for_big_arrays()
    torch.set_num_threads(_threads(spec))
    device, _ = resolve_device(spec.options.device)
    model = averaged(_model(spec, device)[0], spec.options.symmetries)
    scratch = ScratchTiles(spec.scratch_dir, spec.scratch_tile)
    scratch.stats = spec.scratch_stats
    if not scratch.folder.is_dir():
        raise ImplicityError(f"the scratch folder {scratch.folder} does not exist on worker {socket.gethostname()}; "
                             "with a remote scheduler give --scratch-dir on a filesystem every worker sees.")
    points = scratch.read(block.read_bounds)
    index = PointIndex(points, spec.index_bounds, bin_size=spec.bin_size)
    n_points = len(index)
    del points
    is_cancelled = _cancel_check(spec.cancel_event)
    runner = BatchRunner(device, auto_batch_size(device, spec.options.batch_size), is_cancelled)
    stats = _Stats()
    acc = BlendAccumulator(block.c1 - block.c0, spec.with_confidence, base=block.r0, col0=block.c0)
    from rasterio.crs import CRS

    crs = CRS.from_wkt(spec.crs_wkt)
    with contextlib.ExitStack() as stack:
        orthos = stack.enter_context(OrthoWindows(list(spec.orthos), crs, image_normalizer(model),
                                                  int(model.config.image_size))) if spec.orthos else None
        stack.enter_context(torch.inference_mode())
        ctx = WindowContext(model=model, device=device, runner=runner, grid=spec.grid, options=spec.options,
                            window_size=spec.window_size, z_std=spec.z_std, orthos=orthos,
                            with_confidence=spec.with_confidence, is_cancelled=is_cancelled)
        tiles, skipped = blend_windows(block.windows, index, ctx, acc, stats)
    _, num, den, conf, elig = acc.take(block.r1)
    return BlockResult(block.key, block.r0, block.c0, num, den, conf, elig, tiles, skipped, n_points,
                       time.perf_counter() - t0, f"{socket.gethostname()}:{os.getpid()}", peak_rss_mb(), dict(stats))
