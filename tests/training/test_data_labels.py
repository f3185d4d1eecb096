"""Query sampling and occupancy labels from a reference DSM."""
from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from implicity.core.raster import GridSpec
from implicity.training.data.labels import (
    QuerySamplingConfig,
    edge_cells,
    loss_weights,
    occupancy_labels,
    sample_queries,
)

RES = 0.5


def _patch_dsm() -> np.ndarray:
    """32 x 32 px (16 m) ground at 100 m sloping east, one 15 m building in the north-west corner."""
    cols = np.arange(32)[None, :]
    dsm = np.broadcast_to(100.0 + 0.05 * cols, (32, 32)).astype(np.float32).copy()
    dsm[2:12, 3:10] = 115.0
    return dsm


def test_labels_agree_with_the_reference_dsm():
    dsm = _patch_dsm()
    rng = np.random.default_rng(0)
    q = sample_queries(rng, dsm, RES, 6000)
    occ = occupancy_labels(q, dsm, RES)
    # independent lookup through a GridSpec of the patch (origin 0, 0; rows north->south)
    grid = GridSpec(None, Affine(RES, 0, 0.0, 0, -RES, 32 * RES), 32, 32)
    rows, cols = grid.rowcol(q[:, 0], q[:, 1])
    rows, cols = np.clip(rows, 0, 31), np.clip(cols, 0, 31)
    expected = (q[:, 2] < dsm[rows, cols]).astype(np.float32)
    assert occ.dtype == np.float32 and np.array_equal(occ, expected)
    assert 0.2 < occ.mean() < 0.8  # both classes well represented
    # just below / above the roof of the building, below / above the ground south of it
    probe = np.array([[3.0, 12.0, 114.9], [3.0, 12.0, 115.1], [3.0, 1.0, 99.9], [3.0, 1.0, 100.5]])
    assert occupancy_labels(probe, dsm, RES).tolist() == [1.0, 0.0, 1.0, 0.0]


def test_query_populations():
    dsm = _patch_dsm()
    cfg = QuerySamplingConfig(uniform_fraction=0.2, surface_fraction=0.5, edge_fraction=0.3, z_margin=4.0)
    q = sample_queries(np.random.default_rng(1), dsm, RES, 10000, cfg)
    assert q.shape == (10000, 3)
    uni, surf, edge = q[:2000], q[2000:7000], q[7000:]
    assert uni[:, 2].min() >= 100.0 - 4.0 and uni[:, 2].max() <= 115.0 + 4.0
    assert (q[:, :2] >= 0).all() and (q[:, :2] < 16.0).all()
    rows = np.clip(31 - np.floor(surf[:, 1] / RES).astype(int), 0, 31)
    cols = np.clip(np.floor(surf[:, 0] / RES).astype(int), 0, 31)
    offsets = surf[:, 2] - dsm[rows, cols]
    assert np.std(offsets) == pytest.approx(0.4, rel=0.08) and abs(np.mean(offsets)) < 0.03
    # facade samples: near the building outline, spread over the wall height
    edges, _, _ = edge_cells(dsm, cfg.edge_step_m)
    er, ec = np.nonzero(edges)
    ex, ey = (ec + 0.5) * RES, (31.5 - er) * RES
    d = np.min(np.hypot(edge[:, None, 0] - ex[None], edge[:, None, 1] - ey[None]), axis=1)
    assert np.median(d) < 0.5
    assert edge[:, 2].min() < 101.0 and edge[:, 2].max() > 114.0


def test_loss_weights_follow_masks():
    dsm = _patch_dsm()
    dsm[30, 30] = np.nan
    valid = np.ones_like(dsm, np.uint8)
    valid[0, 31] = 0
    building = np.zeros_like(valid)
    building[2:12, 3:10] = 1
    forest = np.zeros_like(valid)
    forest[20, 20] = 1
    water = np.zeros_like(valid)
    water[25, 5] = 1
    forest[2, 3] = 1  # overlaps the building: building wins
    pts = np.array([[1.6, 14.0, 0], [10.2, 5.7, 0], [2.7, 3.2, 0], [5.0, 1.0, 0], [15.2, 0.7, 0],
                    [15.7, 15.7, 0], [1.7, 14.9, 0]], float)
    w = loss_weights(pts, RES, dsm, valid, building, forest, water)
    assert w.dtype == np.float32
    assert w.tolist() == [1.0, 0.5, 0.5, 1.0, 0.0, 0.0, 1.0]


def test_patch_without_reference_gives_zero_weights():
    dsm = np.full((8, 8), np.nan, np.float32)
    q = sample_queries(np.random.default_rng(0), dsm, RES, 100)
    assert q.shape == (100, 3)
    assert not loss_weights(q, RES, dsm).any()
    assert not occupancy_labels(q, dsm, RES).any()


def test_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        QuerySamplingConfig(uniform_fraction=0.5, surface_fraction=0.5, edge_fraction=0.5)
