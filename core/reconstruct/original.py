"""The paper's DSM generator, reproduced as the ``reference`` mode (the yardstick of the fast mode).

Everything here follows the reference implementation's ``GeneratorDSM`` with its test settings,
including its arithmetic: the vertical search runs on *normalised* heights in float32, and the
highest occupied sample is found as ``max((z + 1000) · occupied) − 1000`` in float32, which rounds
each round's estimate to float32 around 1000 (≈ 3·10⁻⁵ normalised, ≈ 1 mm): reproducing it keeps
the reference on the same lattice of samples as the paper's code. The window plan and blending
weights live in ``tiling.py`` (``original_anchors``, ``original_ramp``), the query positions here
(:func:`query_xy`); ``options.py`` lists the five points where this scheme differs from a
pixel-centred one.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .options import ReferenceSearchOptions
from .tiling import Window

# (pixels, normalised heights (P, K) float32) -> logits (P, K)
EvaluateNormalized = Callable[[np.ndarray, np.ndarray], np.ndarray]

EMPTY_SHIFT = np.float32(1000.0)  # the paper's DEFAULT_SHIFT_H


def lower_median(values: np.ndarray) -> float:
    """The lower of the two middle values for an even count (``torch.median``), the paper's window
    height shift (deviation 3)."""
    k = (values.size - 1) // 2
    return float(np.partition(values, k)[k])


def strict_crop(points: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """The points with x0 < x < x1 and y0 < y < y1, as the paper crops a window (deviation 3)."""
    x, y = points[:, 0], points[:, 1]
    return points[(x > x0) & (x < x1) & (y > y0) & (y < y1)]


def query_xy(window: Window) -> np.ndarray:
    """(h·w, 2) float32 window coordinates of the decoded pixels' queries, row-major, as the paper
    makes them: ``linspace(0, 1, n)`` across the window eastwards and ``linspace(1, 0, n)``
    southwards (torch's float32 values), so its n queries per side run from one window edge to the
    other and sit up to half a pixel off the pixel centres (deviation 1)."""
    n, (pr, pc) = window.n_px, window.origin_px
    xs = torch.linspace(0.0, 1.0, n)[window.c0 - pc:window.c1 - pc].numpy()
    ys = torch.linspace(1.0, 0.0, n)[window.r0 - pr:window.r1 - pr].numpy()
    xx, yy = np.meshgrid(xs, ys)
    return np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float32)


def _highest_occupied(z: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per row, the highest occupied normalised height as the paper computes it; −1000 when none."""
    occupied = (logits > 0).astype(np.float32)
    return ((z + EMPTY_SHIFT) * occupied - EMPTY_SHIFT).max(axis=1)


def original_search(evaluate: EvaluateNormalized, n_pixels: int, z_std: float,
                    ref: ReferenceSearchOptions, lo_offset: float | None = None,
                    n_coarse: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised heights (float32, relative to the window's shift) and the empty mask.

    Coarse scan ``arange(−below, above, step) / z_std``; then ``refinements`` rounds, each dividing
    the step by ``refine_factor`` and testing ``refine_offsets`` steps around the estimate. A pixel
    is empty once a round finds nothing occupied; empty pixels keep height 0 (the shift) and are
    still queried, as in the paper (it evaluates the whole grid every round). ``lo_offset`` and
    ``n_coarse`` override the scan's start (metres below the shift) and sample count (the
    adaptive-range deviation)."""
    z_scale = np.float32(z_std)
    start = -ref.range_below if lo_offset is None else -lo_offset
    count = int(math.ceil((ref.range_above + ref.range_below) / ref.coarse_step - 1e-9)) if n_coarse is None \
        else n_coarse
    coarse = (np.float32(start) + np.float32(ref.coarse_step) * np.arange(count, dtype=np.float32)) / z_scale
    pixels = np.arange(n_pixels)
    z = np.broadcast_to(coarse.astype(np.float32), (n_pixels, count))
    largest = _highest_occupied(z, evaluate(pixels, z))
    empty = largest <= -EMPTY_SHIFT
    largest = largest * ~empty
    step = ref.coarse_step / float(z_std)  # a Python float, divided as the paper does
    offsets = np.asarray(ref.refine_offsets, dtype=np.float64)
    for _ in range(ref.refinements):
        step = step / ref.refine_factor
        z = largest[:, None] + (offsets * step).astype(np.float32)[None, :]
        largest = _highest_occupied(z, evaluate(pixels, z))
        empty |= largest <= -EMPTY_SHIFT
        largest = largest * ~empty
    return largest.astype(np.float32), empty


def original_heights(evaluate: EvaluateNormalized, n_pixels: int, shift: float, z_std: float,
                     ref: ReferenceSearchOptions, adaptive: tuple[float, int] | None = None) -> np.ndarray:
    """Map heights of a window's pixels with the paper's ``fill_empty``: a pixel where nothing is
    occupied takes the window's shift at full weight (deviation 5). ``adaptive``: (metres below the
    shift where the scan starts, sample count), the range-widening deviation."""
    lo_offset, n = adaptive if adaptive is not None else (None, None)
    h_norm, _empty = original_search(evaluate, n_pixels, z_std, ref, lo_offset, n)
    return (h_norm * np.float32(z_std) + np.float32(shift)).astype(np.float64)
