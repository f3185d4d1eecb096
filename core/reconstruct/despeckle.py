"""Removing the network's pixel-level speckle from a window's heights (fast mode).

Why: the network's surface has isolated wrong pixels — a column that crosses twice near a wall, a
query between two features — decimetres to metres off their neighbours. On the validation split a
3 × 3 median filter of the whole DSM lowered ImpliCity-0's MedAE / MAE from 0.315 / 1.049 to
0.311 / 1.028 m, but a median also cuts every convex building corner (the corner pixel has five
ground pixels around it) and every line one pixel wide. Only *speckles* are replaced here: pixels
more than ``threshold`` from the median of their 3 × 3 neighbourhood that also agree (within
``threshold``) with at most one of their eight neighbours. A corner agrees with three, a line with
two, so both stay (a line's two end pixels agree with one and go); a lone pixel or a pair takes the
median. On a plane the two neighbours along its contour agree, however steep; beside a wall on a
slope steeper than ``threshold`` per pixel a ground pixel may agree with one only and move by up
to a slope step. Validation: 0.312 / 1.033 m.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..gridding import median_smooth

#: A pixel agreeing with more of its eight neighbours than this is a feature, not a speckle.
MAX_AGREEING_NEIGHBOURS = 1


def despeckle(height: np.ndarray, threshold: float) -> np.ndarray:
    """``height`` (H, W) with its speckles replaced by their 3 × 3 median; NaN stays NaN, and
    ``threshold`` <= 0 returns it unchanged."""
    if threshold <= 0 or min(height.shape) < 3:
        return height
    median = median_smooth(height, 3)
    padded = np.pad(height, 1, mode="constant", constant_values=np.nan)
    around = sliding_window_view(padded, (3, 3)).reshape(*height.shape, 9)[..., [0, 1, 2, 3, 5, 6, 7, 8]]
    with np.errstate(invalid="ignore"):
        agreeing = (np.abs(around - height[..., None]) <= threshold).sum(axis=-1)
        speckle = (np.abs(height - median) > threshold) & (agreeing <= MAX_AGREEING_NEIGHBOURS)
    return np.where(speckle, median, height)
