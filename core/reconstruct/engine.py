"""``reconstruct_dsm``: point cloud (+ orthos) + occupancy network → DSM GeoTIFF, any extent.

Flow: load the points (far stray points and NaNs left out, with a warning) and index them → plan
windows over the output grid (size-limited) → for each window row (north→south): for each window,
read its points, the evidence of the points around it (``evidence.py``: height envelope, outer
edge, reach) and its ortho patches, encode once, search the surface height of every pixel it
decodes within the envelope, blend towards the points' surface near the cloud's outer edge, blend
into a row accumulator → rows no later window can touch are hole-filled (with a halo, never beyond
the reach of the points) and streamed to the GeoTIFF writers. Memory is bounded by the point cloud
plus a band of output rows; cancelling (checked before every window) raises
:class:`CancelledError` and the writers remove their temporary files, so no output appears.

Confidence raster (optional): per pixel, ``sigmoid(logit(h − δ)) − sigmoid(logit(h + δ))`` with h
the found height and δ = ``confidence_delta`` (0.5 m): the gap between the occupancy probability
just below and just above the surface, in [0, 1]. Close to 1 the network is sure the surface is
within ±δ (a sharp occupied→free transition); close to 0 its occupancy is vague or flat there, and
the height is a guess (filled pixels get 0). It is scaled by the network's share of the height
near the outer edge and is 0 where the height was clamped to the envelope. It is blended across
windows like the heights.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from scipy.special import expit

from ..baseline import load_points
from ..errors import CancelledError, ImplicityError, InputError, param
from ..gridding import check_resolution, grid_for_points
from ..outliers import axis_body
from ..outputs import check_output_path
from ..pointcloud import PointCloud
from ..progress import CancelFn, ProgressFn
from ..raster import DEFAULT_NODATA, GEOTIFF_SUFFIXES, GeoTiffStreamWriter, GridSpec
from ..vocabulary import FILL_METHODS, MODES, choice_list
from .blending import BlendAccumulator, FillingRowSink
from .decoding import WindowDecoder, WindowFrame, encode_window, image_normalizer, load_occupancy_model, occupancy_logit
from .despeckle import despeckle
from .device import BatchRunner, auto_batch_size, resolve_device
from .evidence import Evidence, context_margin, window_evidence
from .imagery import OrthoWindows, check_image_count, check_ortho_coverage
from .options import (
    FastSearchOptions,
    ReconstructionInputs,
    ReconstructionOptions,
    ReconstructionResult,
    ReferenceSearchOptions,
)
from .original import lower_median, original_heights, query_xy, strict_crop
from .search import ABOVE, BELOW, bracket_search, coarse_count, guided_search
from .symmetry import SYMMETRY_COUNTS, averaged
from .threads import ThreadGovernor
from .tiling import PointIndex, Window, plan_windows

log = logging.getLogger(__name__)


def _input_paths(inputs: ReconstructionInputs) -> list[Any]:
    paths: list[Any] = list(inputs.orthos)
    paths.append(inputs.points.source if isinstance(inputs.points, PointCloud) else inputs.points)
    if isinstance(inputs.model, (str, os.PathLike)):
        paths.append(inputs.model)
    return paths


def _metres_to_map_units(crs) -> float:
    """Map units per metre of the CRS (1 for metric CRSs); geographic CRSs are refused."""
    if crs is None:
        return 1.0
    if crs.is_geographic:
        raise InputError(
            "The point cloud is in a geographic CRS (degrees). ImpliCity works on 64 m windows in a "
            f"projected CRS: reproject the points (e.g. to the local UTM zone) or give {param('points_crs')}.",
            parameter="points_crs")
    try:
        _, factor = crs.linear_units_factor
    except Exception:  # noqa: BLE001 - unknown units: assume metres
        return 1.0
    return 1.0 / float(factor) if factor else 1.0


def _scaled(options: ReconstructionOptions, k: float) -> ReconstructionOptions:
    """All lengths in ``options`` (metres) converted to map units (``k`` map units per metre)."""
    if k == 1.0:
        return options
    ref, fast = options.reference_search, options.fast_search
    return dataclasses.replace(
        options, window_stride=options.stride() * k, overlap=options.blend_overlap() * k,
        reference_search=dataclasses.replace(ref, range_below=ref.range_below * k,
                                             range_above=ref.range_above * k, coarse_step=ref.coarse_step * k),
        fast_search=dataclasses.replace(fast, max_coarse_step=fast.max_coarse_step * k, final_step=fast.final_step * k,
                                        guard=fast.guard * k),
        evidence=dataclasses.replace(options.evidence, radius=options.evidence.radius * k,
                                     margin=options.evidence.margin * k, keep_margin=options.evidence.keep_margin * k,
                                     blunder_gap=options.evidence.blunder_gap * k,
                                     far_blunder_gap=options.evidence.far_blunder_gap * k,
                                     edge_width=options.evidence.edge_width * k),
        range_margin=options.range_margin * k, confidence_delta=options.confidence_delta * k,
    )


class _Stats(dict):
    def add(self, key: str, value: float) -> None:
        self[key] = self.get(key, 0) + value


def _adaptive_range(shift: float, points_z: np.ndarray, ref: ReferenceSearchOptions,
                    margin: float) -> tuple[float, int]:
    """The reference scan widened on its lattice to the window's point heights ± ``margin`` (a lone
    blunder does not widen it): metres below the shift where it starts, and its sample count."""
    below, top = ref.range_below, ref.range_above
    body = axis_body(points_z - shift, max_gap=2.0 * margin)
    if body.lo - margin < -below:
        below += math.ceil((-below - (body.lo - margin)) / ref.coarse_step) * ref.coarse_step
    top = max(top, body.hi + margin)
    return below, max(1, int(math.ceil((top + below) / ref.coarse_step - 1e-9)))


def _fast_heights(decoder: WindowDecoder, ev: Evidence, options: ReconstructionOptions,
                  stats: _Stats) -> tuple[np.ndarray, np.ndarray]:
    """Heights (NaN where not decoded) and the mask of pixels clamped to the envelope.

    The bracket of every pixel is its evidence envelope; a pixel whose crossing lies above (below)
    the envelope takes its top (bottom) and is flagged: the network alone is not evidence enough to
    leave it. Every height is then kept within ``keep_margin`` of the points' range (not flagged:
    the confidence, probed at the kept height, already drops where the network disagrees).
    """
    fs: FastSearchOptions = options.fast_search
    height = np.full(ev.lo.shape, np.nan)
    clamped = np.zeros(ev.lo.shape, bool)
    pixels = np.flatnonzero(ev.eligible)
    if pixels.size == 0:
        return height, clamped
    lo, hi = ev.envelope(options.evidence.margin)
    lo, hi = lo[pixels], hi[pixels]
    if fs.strategy == "guided":
        prior = decoder.prior_heights()  # the network's own surface prior, else the points' surface
        guess = (prior if prior is not None else ev.points_surface)[pixels]
        res = guided_search(decoder, pixels, lo, hi, guess, fs.final_step, fs.guard, max_coarse_step=4 * fs.guard)
    else:
        n = coarse_count(lo, hi, fs.coarse_samples, fs.max_coarse_step)
        res = bracket_search(decoder, pixels, lo, hi, n, fs.final_step, fs.refine_factor, fs.interpolate)
    h = res.height
    above, below = res.status == ABOVE, res.status == BELOW
    h[above], h[below] = hi[above], lo[below]
    keep = options.evidence.keep_margin - options.evidence.margin  # ≤ 0: the kept range inside the bracket
    if keep < 0:
        h = np.clip(h, lo - keep, hi + keep)
    height[pixels] = h
    clamped[pixels] = above | below
    return height, clamped


def _steer_by_evidence(height: np.ndarray, conf: np.ndarray | None, clamped: np.ndarray, ev: Evidence,
                       stats: _Stats) -> tuple[np.ndarray, np.ndarray | None]:
    """Blend towards the points' surface near the outer edge of the data; flag what was steered in
    the confidence (× the network's weight; 0 where clamped to the envelope)."""
    w = ev.weight
    pts = ev.points_surface
    use_pts = np.isfinite(pts) & np.isfinite(height)
    out = np.where(use_pts, w * height + (1.0 - w) * pts, height)
    out[~ev.eligible] = np.nan
    stats.add("clamped_pixels", int(clamped.sum()))
    stats.add("edge_blended_pixels", int((ev.eligible & (w < 1.0)).sum()))
    stats.add("out_of_reach_pixels", int((~ev.eligible).sum()))
    if conf is not None:
        conf = np.where(clamped, 0.0, conf * w).astype(np.float32)
        conf[~ev.eligible] = np.nan
    return out, conf


def _confidence(decoder: WindowDecoder, height: np.ndarray, delta: float) -> np.ndarray:
    conf = np.full(height.shape, np.nan, np.float32)
    ok = np.flatnonzero(np.isfinite(height))
    if ok.size:
        z = np.stack([height[ok] - delta, height[ok] + delta], axis=1)
        p = expit(decoder(ok, z).astype(np.float64))
        conf[ok] = np.clip(p[:, 0] - p[:, 1], 0.0, 1.0)
    return conf


def _number(value: Any, name: str, low: float, low_inclusive: bool = True, high: float = math.inf) -> None:
    """Refuse a NaN, infinite or out-of-range option; the message names the parameter ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    ok = math.isfinite(v) and (v >= low if low_inclusive else v > low) and v <= high
    if not ok:
        bound = f"{'>=' if low_inclusive else '>'} {low:g}" + (f" and <= {high:g}" if math.isfinite(high) else "")
        raise InputError(f"{param(name)} must be a finite number {bound}, got {value}.")


def _validate(options: ReconstructionOptions) -> None:
    """Every option checked before any work starts (NaN used to pass or end in a traceback)."""
    if options.mode not in MODES:
        raise InputError(f"{param('mode')} '{options.mode}': use {choice_list(MODES)}.")
    if options.fill not in FILL_METHODS:
        raise InputError(f"{param('fill')} '{options.fill}': use {choice_list(FILL_METHODS)}.")
    if options.window_stride is not None:
        _number(options.window_stride, "window_stride", 0.0, low_inclusive=False)
    if options.overlap is not None:
        _number(options.overlap, "overlap", 0.0)
    fs = options.fast_search
    _number(fs.final_step, "fast_search.final_step", 0.001)
    _number(fs.max_coarse_step, "fast_search.max_coarse_step", 0.0, low_inclusive=False)
    _number(fs.guard, "fast_search.guard", 0.0, low_inclusive=False, high=1000.0)
    if fs.strategy not in ("guided", "bisection"):
        raise InputError(f"{param('fast_search')}: strategy '{fs.strategy}': use guided or bisection.")
    if not (options.threads in ("auto", "all") or (isinstance(options.threads, int) and options.threads >= 1)):
        raise InputError(f"{param('threads')} '{options.threads}': use auto, all or a number of threads >= 1.")
    _number(options.reserve_cores, "reserve_cores", 0.0, high=4096.0)
    if options.prefetch is not None:
        _number(options.prefetch, "prefetch", 0.0, high=64.0)
    _number(options.despeckle, "despeckle", 0.0, high=1000.0)
    if isinstance(options.symmetries, bool) or options.symmetries not in SYMMETRY_COUNTS:
        raise InputError(f"{param('symmetries')} {options.symmetries!r}: use {choice_list(tuple(map(str, SYMMETRY_COUNTS)))} (copies of "
                         "each window averaged; 1 = off).")
    if int(fs.coarse_samples) < 2 or int(fs.refine_factor) < 2:
        raise InputError(f"{param('fast_search')}: coarse_samples and refine_factor must be at least 2.")
    ev = options.evidence
    _number(ev.radius, "evidence.radius", 0.0, low_inclusive=False, high=1000.0)
    _number(ev.margin, "evidence.margin", 0.0, high=1000.0)
    _number(ev.keep_margin, "evidence.keep_margin", 0.0, high=1000.0)
    if ev.keep_margin > ev.margin:
        raise InputError(f"{param('evidence.keep_margin')} {ev.keep_margin:g} is wider than {param('evidence.margin')} "
                         f"{ev.margin:g}: no height is searched beyond that margin, so it cannot be kept there. Use "
                         f"at most {ev.margin:g}, or raise both.")
    _number(ev.blunder_gap, "evidence.blunder_gap", 0.0, high=1000.0)
    _number(ev.far_blunder_gap, "evidence.far_blunder_gap", 0.0, high=10000.0)
    _number(ev.edge_width, "evidence.edge_width", 0.0, low_inclusive=False, high=1000.0)
    _number(options.fill_max_distance, "fill_max_distance", 0.0, high=10000.0)
    _number(options.range_margin, "range_margin", 0.0)
    _number(options.confidence_delta, "confidence_delta", 0.0, low_inclusive=False)
    _number(options.min_ortho_coverage, "min_ortho_coverage", 0.0, high=1.0)
    ref = options.reference_search
    _number(ref.coarse_step, "reference_search.coarse_step", 0.0, low_inclusive=False)
    _number(ref.range_below, "reference_search.range_below", 0.0)
    _number(ref.range_above, "reference_search.range_above", 0.0)
    if ref.refine_factor < 2 or ref.refinements < 0:
        raise InputError(f"{param('reference_search')}: refine_factor must be >= 2 and refinements >= 0.")


def _load_checked_model(model: Any, device: torch.device) -> tuple[Any, str]:
    """The model ready to use, or a one-line InputError for a checkpoint that cannot give one.

    Why: a malformed config used to end in an allocation traceback, and NaN weights in an
    all-nodata DSM written with exit code 0.
    """
    key = _checkpoint_key(model, device) if isinstance(model, (str, os.PathLike)) else None
    if key is not None and key in _CHECKED_MODELS:
        _CHECKED_MODELS.move_to_end(key)
        return _CHECKED_MODELS[key]
    label = str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
    try:
        loaded, name = load_occupancy_model(model, device)
    except ImplicityError:
        raise
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
            MemoryError) as exc:
        reason = (str(exc).splitlines() or [""])[0][:200]
        raise InputError(f"{param('model')} {label}: no network can be built from this checkpoint ({type(exc).__name__}: "
                         f"{reason}); its config is malformed or it is not an ImpliCity model. Use another "
                         "checkpoint or export it again.") from None
    config = loaded.config
    for attr, high in (("patch_size", 1e5), ("image_size", 4096), ("z_std", 1e5)):
        value = getattr(config, attr, None)
        try:
            ok = math.isfinite(float(value)) and 0 < float(value) <= high
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"{param('model')} {name}: its config has {attr} = {value!r}, which no network can use; the "
                             "checkpoint is malformed. Use another checkpoint.")
    if isinstance(loaded, torch.nn.Module):
        for weight, tensor in [*loaded.named_parameters(), *loaded.named_buffers()]:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise InputError(f"{param('model')} {name}: weight '{weight}' holds NaN or infinite values, so every height "
                                 "would be nodata; the checkpoint is corrupt (a diverged training run?). Use "
                                 "another checkpoint.")
    if isinstance(model, (str, os.PathLike)):
        _smoke_test(loaded, name, device)
        if key is not None:
            _CHECKED_MODELS[key] = (loaded, name)
            while len(_CHECKED_MODELS) > _CHECKED_MODELS_KEPT:
                _CHECKED_MODELS.popitem(last=False)
    return loaded, name


#: Networks loaded from checkpoint files and checked (weights finite, :func:`_smoke_test` passed) in
#: this process, by (resolved path, size, modification time, device); the engine only reads them
#: (eval mode, no gradients). Why: loading and checking cost ~0.2 s on a CPU, a tenth of a fast
#: run, and the QGIS plugin and batch runs use the same file again and again in one process; a
#: file that changes on disk is loaded and checked again. The last two are kept (ImpliCity-0 and
#: mono side by side), so the memory held is that of two networks at most.
_CHECKED_MODELS: OrderedDict[tuple[str, int, int, str], tuple[Any, str]] = OrderedDict()
_CHECKED_MODELS_KEPT = 2


def _checkpoint_key(path: str | os.PathLike[str], device: torch.device) -> tuple[str, int, int, str] | None:
    try:
        resolved = Path(path).expanduser().resolve()
        stat = resolved.stat()
    except OSError:
        return None
    return str(resolved), stat.st_size, stat.st_mtime_ns, str(device)


def _smoke_test(model: Any, name: str, device: torch.device) -> None:
    """Encode a tiny window and decode one query, so that a checkpoint whose config cannot run
    (sizes that allocate terabytes, NaN outputs) fails now, in one line, not in the window loop."""
    rng = np.random.default_rng(0)
    points = rng.random((64, 3)).astype(np.float32) - np.array([0.0, 0.0, 0.5], np.float32)
    n_images = int(model.n_images)
    size = int(model.config.image_size)
    images = np.zeros((n_images, size, size), np.float32) if n_images else None
    try:
        with torch.inference_mode():
            features = encode_window(model, points, images, device, "fp32")
            logits = occupancy_logit(model.decode(torch.tensor([[[0.5, 0.5, 0.0]]], device=device), features))
    except (RuntimeError, MemoryError, ValueError, TypeError, IndexError) as exc:
        reason = (str(exc).splitlines() or [""])[0][:200]
        raise InputError(f"{param('model')} {name}: the network of this checkpoint does not run ({type(exc).__name__}: "
                         f"{reason}); its config is malformed. Use another checkpoint or export it again.") from None
    if not bool(torch.isfinite(logits).all()):
        raise InputError(f"{param('model')} {name}: the network outputs NaN or infinite occupancy, so every height would be "
                         "nodata; the checkpoint is corrupt. Use another checkpoint.")


def _grown(bounds: tuple[float, float, float, float], margin: float) -> tuple[float, float, float, float]:
    return bounds[0] - margin, bounds[1] - margin, bounds[2] + margin, bounds[3] + margin


@dataclass
class WindowContext:
    """What computing a window needs besides its points; shared by the windows of a run (one process)
    or of a block (a Dask task, ``core/cluster``)."""

    model: Any
    device: torch.device
    runner: BatchRunner
    grid: GridSpec
    options: ReconstructionOptions  # in map units (``_scaled``)
    window_size: float
    z_std: float
    orthos: OrthoWindows | None
    with_confidence: bool
    is_cancelled: CancelFn | None = None
    threads: ThreadGovernor | None = None  # CPU: re-sized to the free cores before each window


def blend_windows(windows: Iterable[Window], index: PointIndex, ctx: WindowContext, acc: BlendAccumulator,
                  stats: _Stats, on_window: Callable[[], None] | None = None) -> tuple[int, int]:
    """Compute each window from the points of ``index`` and add its heights (and confidence) to ``acc``.

    The one window loop of the engine: one process calls it per window row, a Dask block task for
    its block's windows; the blend sums are integers (``BlendAccumulator``), so both give the same
    DSM. Returns (windows computed, windows skipped for lack of points); ``on_window`` is called
    after each window, and ``ctx.is_cancelled`` is asked before each.
    """
    tiles = skipped = 0
    with _prepared_windows(windows, index, ctx) as prepared:
        for prep in prepared:
            if ctx.is_cancelled is not None and ctx.is_cancelled():
                raise CancelledError("reconstruction stopped by the user; no output was written")
            if ctx.threads is not None:
                ctx.threads.update()
            if prep.points is None:
                skipped += 1
            else:
                _blend_window(prep.win, prep.points, prep.evidence, ctx, acc, stats)
                tiles += 1
            if on_window is not None:
                on_window()
    return tiles, skipped


#: Windows prepared ahead on a worker thread while the GPU computes the current one (the default
#: of ``ReconstructionOptions.prefetch`` on a GPU; on the CPU it is 0: torch uses the cores there).
GPU_PREFETCH_WINDOWS = 2


@dataclass
class PreparedWindow:
    """A window's CPU-side inputs: its points and, in fast mode, the points' evidence; ``points`` is
    None when the window is skipped (no points, or none within reach of its pixels)."""

    win: Window
    points: np.ndarray | None
    evidence: Evidence | None = None


def prepare_window(win: Window, index: PointIndex, ctx: WindowContext, ctx_margin: float) -> PreparedWindow:
    """Everything of a window that needs only numpy: no model, no device, no shared state."""
    options = ctx.options
    original = options.mode == "reference"
    points = index.query(*win.bounds())
    if original:
        points = strict_crop(points, *win.bounds())
    if points.shape[0] < max(1, options.min_points_per_window):
        return PreparedWindow(win, None)
    if original:
        return PreparedWindow(win, points)
    ev = window_evidence(index.query(*_grown(win.bounds(), ctx_margin)), ctx.grid, win.r0, win.c0,
                         win.shape, options.evidence, options.fill_max_distance)
    if not ev.eligible.any():  # no point within reach of any pixel it decodes
        return PreparedWindow(win, None)
    return PreparedWindow(win, points, ev)


@contextlib.contextmanager
def _prepared_windows(windows: Iterable[Window], index: PointIndex,
                      ctx: WindowContext) -> Iterator[Iterator[PreparedWindow]]:
    """The windows with their CPU-side inputs, in order.

    With ``options.prefetch`` > 0 (the default on a GPU) the next windows are prepared on a worker
    thread while the current one is encoded and decoded, so the GPU waits less for the CPU between
    windows (with the one-tensor bilateral sum, 1 km² at 0.5 m went from 29.5 to 20.2 s on an H200;
    how much each change gave was not measured apart). By default on the CPU they are prepared in turn:
    torch already uses the cores there. Either way the windows and their DSM are the same.
    """
    ctx_margin = context_margin(ctx.grid.resolution, ctx.options.evidence, ctx.options.fill_max_distance)
    ahead_count = ctx.options.prefetch
    if ahead_count is None:
        ahead_count = GPU_PREFETCH_WINDOWS if ctx.device.type == "cuda" else 0
    if int(ahead_count) <= 0:
        yield (prepare_window(win, index, ctx, ctx_margin) for win in windows)
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="implicity-prepare")

    def ahead() -> Iterator[PreparedWindow]:
        pending: deque[Future[PreparedWindow]] = deque()
        for win in windows:
            pending.append(pool.submit(prepare_window, win, index, ctx, ctx_margin))
            if len(pending) > int(ahead_count):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    try:
        yield ahead()
    finally:  # a cancel or an error: drop what was queued, wait for the one running
        pool.shutdown(wait=True, cancel_futures=True)


def _blend_window(win: Window, points: np.ndarray, ev: Evidence | None, ctx: WindowContext, acc: BlendAccumulator,
                  stats: _Stats) -> None:
    """One prepared window (its points, and in fast mode their evidence) into ``acc``."""
    options, grid, model, device = ctx.options, ctx.grid, ctx.model, ctx.device
    res = grid.resolution
    xmin, _, _, ymax = grid.bounds
    window_size, z_std = ctx.window_size, ctx.z_std
    original = options.mode == "reference"
    shift = lower_median(points[:, 2]) if original else float(np.median(points[:, 2]))
    frame = WindowFrame(win.x0, win.y0, window_size, shift, z_std)
    t0 = time.perf_counter()
    images = ctx.orthos.read(win.x0, win.y0, window_size) if ctx.orthos is not None else None
    features = encode_window(model, frame.normalize_points(points), images, device, options.precision)
    t1 = time.perf_counter()
    xy = query_xy(win) if original else win.pixel_centres(res, xmin, ymax)
    decoder = WindowDecoder(model, features, frame, xy, device, ctx.runner, options.precision,
                            xy_is_normalized=original, columns=not original)
    if original:
        widened = _adaptive_range(shift, points[:, 2], options.reference_search, options.range_margin) \
            if options.adaptive_range else None
        height = original_heights(decoder.normalized, win.shape[0] * win.shape[1], shift, z_std,
                                  options.reference_search, widened)
        conf = _confidence(decoder, height, options.confidence_delta) if ctx.with_confidence else None
        eligible = None
    else:
        height, clamped = _fast_heights(decoder, ev, options, stats)
        # Despeckled before the confidence is probed, so that it describes the height written.
        height = despeckle(height.reshape(win.shape), options.despeckle).ravel()
        conf = _confidence(decoder, height, options.confidence_delta) if ctx.with_confidence else None
        height, conf = _steer_by_evidence(height, conf, clamped, ev, stats)
        eligible = ev.eligible.reshape(win.shape)
    stats.add("encode_s", t1 - t0)
    stats.add("search_s", time.perf_counter() - t1)
    stats.add("queries", decoder.queries)
    stats.add("decoded_pixels", height.size)
    acc.add(win.r0, win.c0, height.reshape(win.shape), win.weights(res),
            None if conf is None else conf.reshape(win.shape), eligible)


def check_run(inputs: ReconstructionInputs, options: ReconstructionOptions) -> tuple[Path, Path | None]:
    """Every option, the resolution, the output paths (DSM, confidence) and the ortho count, checked
    before any work starts, by one process and by the cluster's client alike."""
    _validate(options)
    check_resolution(inputs.resolution)
    in_paths = _input_paths(inputs)
    out = check_output_path(inputs.out_path, in_paths, option="--out", suffixes=GEOTIFF_SUFFIXES)
    conf_path = None
    if inputs.confidence_path is not None:
        conf_path = check_output_path(inputs.confidence_path, [*in_paths, out], option="--confidence-out",
                                      suffixes=GEOTIFF_SUFFIXES)
    if len(inputs.orthos) > 2:
        raise InputError(f"--ortho given {len(inputs.orthos)} times; ImpliCity uses 0, 1 or 2 ortho-images.")
    return out, conf_path


def open_outputs(stack: contextlib.ExitStack, out: Path, conf_path: Path | None, grid: GridSpec,
                 options: ReconstructionOptions) -> tuple[BlendAccumulator, FillingRowSink]:
    """The blend accumulator and the row sink that fills holes and streams rows to the atomic
    GeoTIFF writers (entered on ``stack``, so an error or a cancel removes their temporary files)."""
    dsm_writer = stack.enter_context(GeoTiffStreamWriter(out, grid, nodata=DEFAULT_NODATA))
    conf_writer = stack.enter_context(GeoTiffStreamWriter(conf_path, grid, nodata=DEFAULT_NODATA)) \
        if conf_path is not None else None
    sink = FillingRowSink(
        lambda a, r: dsm_writer.write(a, r, 0),
        (lambda a, r: conf_writer.write(a, r, 0)) if conf_writer is not None else None,
        options.fill, options.fill_max_distance / grid.resolution, grid.height,
    )
    return BlendAccumulator(grid.width, conf_writer is not None), sink


def reconstruct_dsm(inputs: ReconstructionInputs, options: ReconstructionOptions | None = None,
                    progress: ProgressFn | None = None, is_cancelled: CancelFn | None = None) -> ReconstructionResult:
    """Reconstruct a DSM (and optionally its confidence) and write it atomically; see module doc."""
    t_start = time.perf_counter()
    options = options or ReconstructionOptions()
    out, conf_path = check_run(inputs, options)
    report = progress or (lambda f, m: None)
    device, reason = resolve_device(options.device)
    # Started now, so that by the first window it has watched the machine while the model and the
    # points were loading (CPU only: a GPU run needs few CPU threads).
    governor = ThreadGovernor(options.threads, options.reserve_cores, min_interval=0.1) \
        if device.type == "cpu" else None
    if options.precision not in ("auto", "fp32") and device.type != "cuda":
        raise InputError(f"--precision {options.precision} needs a CUDA device; on {device} use auto (fp32).")
    log.info("reconstruct: device %s (%s)", device, reason)
    report(0.0, "loading the model")
    model, model_name = _load_checked_model(inputs.model, device)
    model = averaged(model, options.symmetries)
    check_image_count(len(inputs.orthos), int(model.n_images), model_name)
    report(0.0, "reading the points")
    cloud = load_points(inputs.points, inputs.points_crs)
    crs = cloud.require_crs()
    options = _scaled(options, _metres_to_map_units(crs))
    window_size = float(model.config.patch_size) * _metres_to_map_units(crs)
    z_std = float(model.config.z_std) * _metres_to_map_units(crs)
    grid = grid_for_points(cloud.xyz, crs, inputs.resolution, inputs.extent, source=cloud.source,
                           max_pixels=options.max_pixels)
    if inputs.orthos:
        check_ortho_coverage(inputs.orthos, crs, grid, window_size / float(model.config.image_size),
                             options.min_ortho_coverage)
    xmin, ymin, xmax, ymax = grid.bounds
    index = PointIndex(cloud.xyz, (xmin - window_size, ymin - window_size, xmax + window_size, ymax + window_size),
                       bin_size=window_size / 4)
    stats = _Stats(points=len(cloud), points_indexed=len(index))
    del cloud  # the index holds what is needed; a cloud read from a file can be freed now
    rows = plan_windows(grid, window_size, options.stride(), options.mode, options.blend_overlap(),
                        data_bounds=index.bounds)
    runner = BatchRunner(device, auto_batch_size(device, options.batch_size), is_cancelled)
    total = sum(len(r) for r in rows)
    done = tiles = skipped = 0
    with contextlib.ExitStack() as stack:
        orthos = stack.enter_context(OrthoWindows(inputs.orthos, crs, image_normalizer(model),
                                                  int(model.config.image_size))) if inputs.orthos else None
        acc, sink = open_outputs(stack, out, conf_path, grid, options)
        stack.enter_context(torch.inference_mode())
        ctx = WindowContext(model=model, device=device, runner=runner, grid=grid, options=options,
                            window_size=window_size, z_std=z_std, orthos=orthos,
                            with_confidence=conf_path is not None, is_cancelled=is_cancelled,
                            threads=governor)
        if ctx.threads is not None:
            stack.callback(ctx.threads.restore)

        def window_done() -> None:
            nonlocal done
            done += 1
            report(done / max(total, 1), f"window {done}/{total}")

        for j, row in enumerate(rows):
            t, s = blend_windows(row, index, ctx, acc, stats, on_window=window_done)
            tiles += t
            skipped += s
            finished = rows[j + 1][0].r0 if j + 1 < len(rows) and rows[j + 1] else grid.height
            sink.push(*acc.pop(finished))
        sink.push(*acc.pop(grid.height))
        sink.close()
        report(1.0, "writing the GeoTIFF")
    stats["filled_pixels"] = sink.filled_pixels
    stats["empty_pixels"] = sink.empty_pixels
    stats["batch_size"] = runner.batch_size
    stats["batch_halvings"] = runner.halvings
    return ReconstructionResult(
        dsm_path=Path(out), confidence_path=Path(conf_path) if conf_path else None, device=str(device),
        device_reason=reason, mode=options.mode, tiles=tiles, tiles_skipped=skipped,
        seconds=time.perf_counter() - t_start, width=grid.width, height=grid.height, stats=dict(stats),
    )
