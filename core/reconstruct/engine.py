"""``reconstruct_dsm``: point cloud (+ orthos) + occupancy network → DSM GeoTIFF, any extent.

Flow: load and index the points → plan windows over the output grid → for each window row
(north→south): for each window, read its points and ortho patches, encode once, search the
surface height of every pixel it decodes, blend into a row accumulator → rows no later window can
touch are hole-filled (with a halo) and streamed to the GeoTIFF writers. Memory is bounded by the
point cloud plus a band of output rows; cancelling (checked before every window) raises
:class:`CancelledError` and the writers remove their temporary files, so no output appears.

Confidence raster (optional): per pixel, ``sigmoid(logit(h − δ)) − sigmoid(logit(h + δ))`` with h
the found height and δ = ``confidence_delta`` (0.5 m): the gap between the occupancy probability
just below and just above the surface, in [0, 1]. Close to 1 the network is sure the surface is
within ±δ (a sharp occupied→free transition); close to 0 its occupancy is vague or flat there, and
the height is a guess (filled pixels get 0). It is blended across windows like the heights.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from scipy import ndimage

from ..baseline import load_points
from ..errors import CancelledError, InputError
from ..gridding import grid_for_points, grid_points
from ..outputs import check_output_path
from ..pointcloud import PointCloud
from ..raster import GEOTIFF_SUFFIXES, DEFAULT_NODATA, GeoTiffStreamWriter, GridSpec
from .blending import BlendAccumulator, FillingRowSink
from .decoding import WindowDecoder, WindowFrame, encode_window, image_normalizer, load_occupancy_model
from .device import BatchRunner, auto_batch_size, resolve_device
from .imagery import OrthoWindows, check_image_count
from .options import (FastSearchOptions, ReconstructionInputs, ReconstructionOptions,
                      ReconstructionResult, ReferenceSearchOptions)
from .search import ABOVE, BELOW, bracket_search, coarse_count, reference_search
from .tiling import PointIndex, Window, plan_windows

log = logging.getLogger(__name__)
ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


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
            "projected CRS: reproject the points (e.g. to the local UTM zone) or give --points-crs."
        )
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
        fast_search=dataclasses.replace(fast, bracket_radius=fast.bracket_radius * k,
                                        bracket_margin=fast.bracket_margin * k,
                                        max_coarse_step=fast.max_coarse_step * k, final_step=fast.final_step * k),
        range_margin=options.range_margin * k, confidence_delta=options.confidence_delta * k,
    )


class _Stats(dict):
    def add(self, key: str, value: float) -> None:
        self[key] = self.get(key, 0) + value


def _local_bounds(points: np.ndarray, grid: GridSpec, win: Window, radius_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel min and max point height within ``radius_px`` (NaN where no point is near)."""
    h, w = win.shape
    sub = grid.window(win.r0 - radius_px, win.c0 - radius_px, h + 2 * radius_px, w + 2 * radius_px)
    zmax = grid_points(points, sub, "max")
    zmin = grid_points(points, sub, "min")
    size = 2 * radius_px + 1
    zmax = ndimage.maximum_filter(np.where(np.isfinite(zmax), zmax, -np.inf), size=size, mode="constant", cval=-np.inf)
    zmin = ndimage.minimum_filter(np.where(np.isfinite(zmin), zmin, np.inf), size=size, mode="constant", cval=np.inf)
    core = (slice(radius_px, radius_px + h), slice(radius_px, radius_px + w))
    zmin, zmax = zmin[core].astype(np.float64), zmax[core].astype(np.float64)
    none = ~np.isfinite(zmax)
    zmin[none], zmax[none] = np.nan, np.nan
    return zmin.ravel(), zmax.ravel()


def _wide_range(shift: float, zmin: float, zmax: float, ref: ReferenceSearchOptions,
                adaptive: bool, margin: float) -> tuple[float, int]:
    """Start and sample count of the reference scan, widened on the lattice to the point heights."""
    lo = shift - ref.range_below
    hi = shift + ref.range_above
    if adaptive:
        if zmin - margin < lo:
            lo -= math.ceil((lo - (zmin - margin)) / ref.coarse_step) * ref.coarse_step
        hi = max(hi, zmax + margin)
    n = int(math.floor((hi - lo) / ref.coarse_step + 1e-9)) + 1
    return lo, n


def _fast_heights(decoder: WindowDecoder, points: np.ndarray, grid: GridSpec, win: Window, shift: float,
                  options: ReconstructionOptions, stats: _Stats) -> np.ndarray:
    fs: FastSearchOptions = options.fast_search
    ref = options.reference_search
    radius_px = max(0, int(round(fs.bracket_radius / grid.resolution)))
    zmin, zmax = _local_bounds(points, grid, win, radius_px)
    zmin_w, zmax_w = float(points[:, 2].min()), float(points[:, 2].max())
    zmin = np.where(np.isfinite(zmin), zmin, zmin_w)
    zmax = np.where(np.isfinite(zmax), zmax, zmax_w)
    lo, hi = zmin - fs.bracket_margin, zmax + fs.bracket_margin
    n = coarse_count(lo, hi, fs.coarse_samples, fs.max_coarse_step)
    pixels = np.arange(lo.size)
    res = bracket_search(decoder, pixels, lo, hi, n, fs.final_step, fs.refine_factor, fs.interpolate)
    height = res.height
    wide_lo, n_wide = _wide_range(shift, zmin_w, zmax_w, ref, options.adaptive_range, options.range_margin)
    wide_hi = wide_lo + (n_wide - 1) * ref.coarse_step
    for status in (ABOVE, BELOW):
        sel = np.flatnonzero(res.status == status)
        if sel.size == 0:
            continue
        stats.add("fallback_pixels", sel.size)
        if status == ABOVE:
            a = hi[sel]
            b = np.maximum(wide_hi, a + ref.coarse_step)
        else:
            b = lo[sel]
            a = np.minimum(wide_lo, b - ref.coarse_step)
        n2 = coarse_count(a, b, 2, ref.coarse_step)
        res2 = bracket_search(decoder, sel, a, b, n2, fs.final_step, fs.refine_factor, fs.interpolate)
        h2 = res2.height
        clipped = res2.status == ABOVE
        h2[clipped] = b[clipped]
        stats.add("clipped_pixels", int(clipped.sum()))
        height[sel] = h2
    return height


def _reference_heights(decoder: WindowDecoder, points: np.ndarray, n_pixels: int, shift: float,
                       options: ReconstructionOptions) -> np.ndarray:
    ref = options.reference_search
    lo, n = _wide_range(shift, float(points[:, 2].min()), float(points[:, 2].max()), ref,
                        options.adaptive_range, options.range_margin)
    pixels = np.arange(n_pixels)
    return reference_search(decoder, pixels, np.full(n_pixels, lo), n, ref.coarse_step, ref.refinements,
                            ref.refine_factor, ref.refine_offsets)


def _confidence(decoder: WindowDecoder, height: np.ndarray, delta: float) -> np.ndarray:
    conf = np.full(height.shape, np.nan, np.float32)
    ok = np.flatnonzero(np.isfinite(height))
    if ok.size:
        z = np.stack([height[ok] - delta, height[ok] + delta], axis=1)
        p = 1.0 / (1.0 + np.exp(-decoder(ok, z).astype(np.float64)))
        conf[ok] = np.clip(p[:, 0] - p[:, 1], 0.0, 1.0)
    return conf


def _validate(options: ReconstructionOptions) -> None:
    if options.mode not in ("fast", "reference"):
        raise InputError(f"--mode '{options.mode}': use fast or reference.")
    if options.fill not in ("idw", "nearest", "none"):
        raise InputError(f"--fill '{options.fill}': use idw, nearest or none.")
    fs = options.fast_search
    if fs.final_step <= 0 or fs.bracket_margin < 0 or fs.bracket_radius < 0 or fs.coarse_samples < 2:
        raise InputError("Fast search: final step must be > 0, margins/radius ≥ 0 and coarse samples ≥ 2.")
    ref = options.reference_search
    if ref.coarse_step <= 0 or ref.refine_factor < 2 or ref.refinements < 0:
        raise InputError("Reference search: coarse step must be > 0, refine factor ≥ 2, refinements ≥ 0.")


def reconstruct_dsm(inputs: ReconstructionInputs, options: ReconstructionOptions | None = None,
                    progress: ProgressFn | None = None, is_cancelled: CancelFn | None = None) -> ReconstructionResult:
    """Reconstruct a DSM (and optionally its confidence) and write it atomically; see module doc."""
    t_start = time.perf_counter()
    options = options or ReconstructionOptions()
    _validate(options)
    report = progress or (lambda f, m: None)
    in_paths = _input_paths(inputs)
    out = check_output_path(inputs.out_path, in_paths, option="--out", suffixes=GEOTIFF_SUFFIXES)
    conf_path = None
    if inputs.confidence_path is not None:
        conf_path = check_output_path(inputs.confidence_path, [*in_paths, out], option="--confidence-out",
                                      suffixes=GEOTIFF_SUFFIXES)
    if len(inputs.orthos) > 2:
        raise InputError(f"--ortho given {len(inputs.orthos)} times; ImpliCity uses 0, 1 or 2 ortho-images.")
    device, reason = resolve_device(options.device)
    if options.precision not in ("auto", "fp32") and device.type != "cuda":
        raise InputError(f"--precision {options.precision} needs a CUDA device; on {device} use auto (fp32).")
    log.info("reconstruct: device %s (%s)", device, reason)
    report(0.0, "loading the model")
    model, model_name = load_occupancy_model(inputs.model, device)
    check_image_count(len(inputs.orthos), int(model.n_images), model_name)
    report(0.0, "reading the points")
    cloud = load_points(inputs.points, inputs.points_crs)
    crs = cloud.require_crs()
    options = _scaled(options, _metres_to_map_units(crs))
    window_size = float(model.config.patch_size) * _metres_to_map_units(crs)
    z_std = float(model.config.z_std) * _metres_to_map_units(crs)
    grid = grid_for_points(cloud.xyz, crs, inputs.resolution, inputs.extent, source=cloud.source)
    rows = plan_windows(grid, window_size, options.stride(), options.mode, options.blend_overlap())
    xmin, ymin, xmax, ymax = grid.bounds
    index = PointIndex(cloud.xyz, (xmin - window_size, ymin - window_size, xmax + window_size, ymax + window_size),
                       bin_size=window_size / 4)
    del cloud  # the index holds what is needed; a cloud read from a file can be freed now
    runner = BatchRunner(device, auto_batch_size(device, options.batch_size), is_cancelled)
    stats = _Stats()
    total = sum(len(r) for r in rows)
    done = tiles = skipped = 0
    res = grid.resolution
    with contextlib.ExitStack() as stack:
        orthos = stack.enter_context(OrthoWindows(inputs.orthos, crs, image_normalizer(model),
                                                  int(model.config.image_size))) if inputs.orthos else None
        dsm_writer = stack.enter_context(GeoTiffStreamWriter(out, grid, nodata=DEFAULT_NODATA))
        conf_writer = stack.enter_context(GeoTiffStreamWriter(conf_path, grid, nodata=DEFAULT_NODATA)) \
            if conf_path is not None else None
        acc = BlendAccumulator(grid.width, conf_writer is not None)
        sink = FillingRowSink(
            lambda a, r: dsm_writer.write(a, r, 0),
            (lambda a, r: conf_writer.write(a, r, 0)) if conf_writer is not None else None,
            options.fill, options.fill_max_distance / res, grid.height,
        )
        stack.enter_context(torch.inference_mode())
        for j, row in enumerate(rows):
            for win in row:
                if is_cancelled is not None and is_cancelled():
                    raise CancelledError("reconstruction stopped by the user; no output was written")
                done += 1
                points = index.query(*win.bounds())
                if points.shape[0] < max(1, options.min_points_per_window):
                    skipped += 1
                    continue
                shift = float(np.median(points[:, 2]))
                frame = WindowFrame(win.x0, win.y0, window_size, shift, z_std)
                t0 = time.perf_counter()
                images = orthos.read(win.x0, win.y0, window_size) if orthos is not None else None
                features = encode_window(model, frame.normalize_points(points), images, device, options.precision)
                t1 = time.perf_counter()
                cols = xmin + (np.arange(win.c0, win.c1) + 0.5) * res
                rws = ymax - (np.arange(win.r0, win.r1) + 0.5) * res
                xx, yy = np.meshgrid(cols, rws)
                decoder = WindowDecoder(model, features, frame, np.column_stack([xx.ravel(), yy.ravel()]),
                                        device, runner, options.precision)
                if options.mode == "fast":
                    height = _fast_heights(decoder, points, grid, win, shift, options, stats)
                else:
                    height = _reference_heights(decoder, points, xx.size, shift, options)
                conf = _confidence(decoder, height, options.confidence_delta) if conf_writer is not None else None
                stats.add("encode_s", t1 - t0)
                stats.add("search_s", time.perf_counter() - t1)
                stats.add("queries", decoder.queries)
                stats.add("decoded_pixels", height.size)
                acc.add(win.r0, win.c0, height.reshape(win.shape), win.weights(res),
                        None if conf is None else conf.reshape(win.shape))
                tiles += 1
                report(done / max(total, 1), f"window {done}/{total}")
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
