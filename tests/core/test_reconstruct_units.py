"""Units of the reconstruction engine: height searches, window layout, point index, row streaming."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from implicity.core.gridding import fill_holes
from implicity.core.raster import GridSpec
from implicity.core.reconstruct.blending import BlendAccumulator, FillingRowSink
from implicity.core.reconstruct.device import BatchRunner, auto_batch_size, resolve_device
from implicity.core.reconstruct.options import ReferenceSearchOptions
from implicity.core.reconstruct.original import original_search
from implicity.core.reconstruct.search import ABOVE, BELOW, bracket_search
from implicity.core.reconstruct.tiling import PointIndex, plan_windows

RNG = np.random.default_rng(7)


def _linear_field(surface: np.ndarray, slope: float = 3.0):
    calls = []

    def evaluate(pixels, heights):
        calls.append(heights.size)
        return (slope * (surface[pixels][:, None] - heights)).astype(np.float32)

    return evaluate, calls


def test_bracket_search_hits_the_crossing():
    s = RNG.uniform(10, 30, 500)
    evaluate, calls = _linear_field(s)
    res = bracket_search(evaluate, np.arange(500), s - RNG.uniform(0.1, 8, 500), s + RNG.uniform(0.1, 8, 500),
                         n_coarse=6, final_step=0.0625)
    assert (res.status == 0).all()
    assert np.abs(res.height - s).max() < 1e-4  # a linear logit is interpolated exactly
    no_interp = bracket_search(evaluate, np.arange(500), s - 5, s + 5, 6, 0.0625, interpolate=False)
    d = s - no_interp.height
    assert d.min() >= 0 and d.max() <= 0.0625  # highest occupied sample, like the reference
    assert res.queries / 500 < 14


def test_bracket_search_takes_the_highest_crossing_and_reports_misses():
    # Occupied below 10 and again between 19.5 and 21.2 (an overhang): the DSM is its top.
    def evaluate(pixels, z):
        occ = (z < 10) | ((z > 19.5) & (z < 21.2))
        return np.where(occ, 1.0, -1.0).astype(np.float32)

    res = bracket_search(evaluate, np.arange(3), np.array([0.0, 22.0, -5.0]), np.array([25.0, 30.0, 15.0]),
                         n_coarse=26, final_step=0.01, interpolate=False)
    assert abs(res.height[0] - 21.2) <= 0.01
    assert res.status[1] == BELOW and np.isnan(res.height[1])
    assert abs(res.height[2] - 10.0) <= 0.01
    above = bracket_search(evaluate, np.arange(1), np.array([0.0]), np.array([5.0]), 4, 0.01)
    assert above.status[0] == ABOVE


def test_original_search_semantics():
    s = RNG.uniform(-50, 60, 300)
    calls = []

    def evaluate(pixels, zn):  # the paper searches normalised heights (z_std 30 m here)
        calls.append(zn.size)
        assert zn.dtype == np.float32 and zn.shape[0] == 300  # every pixel, every round, as the paper
        return np.where(zn * 30.0 < s[pixels, None], 1.0, -1.0).astype(np.float32)

    h, empty = original_search(evaluate, 300, 30.0, ReferenceSearchOptions())
    d = s - h * 30.0
    # The highest occupied sample: up to one final step below; float32 rounding around 1000 (its
    # "+1000" trick) moves each estimate by at most ~1 mm.
    assert not empty.any() and d.min() >= -2e-3 and d.max() < 16.0 / 4 ** 4 + 2e-3
    assert sum(calls) == 300 * (12 + 4 * 5)  # the reference's 32 queries per pixel
    nothing, empty = original_search(lambda p, z: -np.ones(z.shape, np.float32), 5, 30.0, ReferenceSearchOptions())
    assert empty.all() and (nothing == 0).all()  # fill_empty: height 0 = the window's shift


@pytest.mark.parametrize("width_m,height_m,res", [(100.0, 70.0, 0.5), (64.0, 64.0, 1.0), (13.0, 200.0, 0.3)])
def test_fast_windows_cover_every_pixel_with_weights_summing_to_one(width_m, height_m, res):
    grid = GridSpec.from_bounds(0.0, 0.0, width_m, height_m, res, None)
    rows = plan_windows(grid, 64.0, 48.0, "fast", overlap=8.0)
    total = np.zeros(grid.shape)
    for row in rows:
        assert len({(w.r0, w.r1) for w in row}) == 1  # a row of windows shares its rows
        for w in row:
            assert w.size == 64.0 and w.r1 - w.r0 <= 56 / res + 1
            total[w.r0:w.r1, w.c0:w.c1] += w.weights(res)
    # Partners' ramps sum to one; only the outer 4 m (half an overlap, no partner) weigh less.
    inner = total[int(4 / res) + 1:-int(4 / res) - 1, int(4 / res) + 1:-int(4 / res) - 1]
    assert total.min() > 0.25 and total.max() <= 1.0 + 1e-6
    assert inner.size == 0 or np.allclose(inner, 1.0, atol=1e-6)


def test_reference_windows_cover_every_pixel_with_the_papers_weights():
    grid = GridSpec.from_bounds(0.0, 0.0, 96.0, 80.0, 1.0, None)
    count = np.zeros(grid.shape, int)
    for row in plan_windows(grid, 64.0, 16.0, "reference"):
        for w in row:
            count[w.r0:w.r1, w.c0:w.c1] += 1
            wt = w.weights(1.0)
            assert w.shape == (64, 64) and wt.min() >= 0.001 ** 2 and wt.max() <= 1.0
    # x anchors 0, 16, 32 (flush); y anchors 0, 16 (flush): corners are decoded once, the centre 6 times.
    assert count[0, 0] == 1 and count[40, 48] == 6 and (count >= 1).all()


def test_point_index_matches_brute_force():
    xyz = np.column_stack([RNG.uniform(0, 300, 20000), RNG.uniform(0, 200, 20000), RNG.uniform(0, 50, 20000)])
    xyz[:, :2] += (700000.0, 6600000.0)
    index = PointIndex(xyz, (700000.0 - 64, 6600000.0 - 64, 700300.0 + 64, 6600200.0 + 64), 16.0)
    for x0, y0 in [(700010.3, 6600020.7), (699990.0, 6599980.0), (700250.0, 6600150.0)]:
        got = index.query(x0, y0, x0 + 64, y0 + 64)
        m = (xyz[:, 0] >= x0) & (xyz[:, 0] < x0 + 64) & (xyz[:, 1] >= y0) & (xyz[:, 1] < y0 + 64)
        assert got.shape[0] == m.sum()
        key = lambda a: np.lexsort(np.round(a, 2).T)  # noqa: E731
        assert np.allclose(got[key(got)], xyz[m][key(xyz[m])], atol=2e-3)


@pytest.mark.parametrize("fill", ["idw", "nearest", "none"])
def test_streamed_filling_equals_whole_raster_filling(fill):
    dsm = RNG.normal(10, 1, (90, 40)).astype(np.float32)
    dsm[RNG.random(dsm.shape) < 0.3] = np.nan
    dsm[20:35, 5:25] = np.nan
    out = np.full(dsm.shape, -1.0, np.float32)

    def write(a, r):
        out[r:r + a.shape[0]] = a

    sink = FillingRowSink(write, None, fill, 4.0, dsm.shape[0])
    for r0 in range(0, 90, 13):
        sink.push(r0, dsm[r0:r0 + 13], None)
    sink.close()
    expected = fill_holes(dsm, fill, 4.0)
    assert np.array_equal(np.isnan(out), np.isnan(expected))
    assert np.allclose(np.nan_to_num(out), np.nan_to_num(expected), atol=1e-5)


def test_accumulator_blends_and_releases_rows():
    acc = BlendAccumulator(4, with_confidence=True)
    acc.add(0, 0, np.full((3, 4), 10.0), np.ones((3, 4)), np.full((3, 4), 0.5))
    acc.add(2, 0, np.array([[20.0, np.nan, 20.0, 20.0]] * 2), np.full((2, 4), 3.0), np.ones((2, 4)))
    first, dsm, conf = acc.pop(3)
    assert first == 0 and dsm.shape == (3, 4)
    assert np.allclose(dsm[2], [17.5, 10.0, 17.5, 17.5]) and np.allclose(dsm[0], 10.0)
    assert np.allclose(conf[2], [0.875, 0.5, 0.875, 0.875])
    first, dsm, _ = acc.pop(4)
    assert first == 3 and np.allclose(dsm, [[20.0, np.nan, 20.0, 20.0]], equal_nan=True)
    with pytest.raises(RuntimeError):
        acc.add(1, 0, np.ones((1, 4)), np.ones((1, 4)))


def test_device_choice_and_batching():
    dev, why = resolve_device("auto")
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu") and why
    assert resolve_device("cpu")[0].type == "cpu"
    assert auto_batch_size(torch.device("cpu")) >= 256
    assert auto_batch_size(torch.device("cpu"), 1000) == 1000
    runner = BatchRunner(torch.device("cpu"), 7)
    assert runner.map(20, lambda a, b: (a, b)) == [(0, 7), (7, 14), (14, 20)]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_out_of_memory_halves_the_batch():
    runner = BatchRunner(torch.device("cuda:0"), 4096)
    seen = []

    def fn(a, b):
        if b - a > 1024:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        seen.append(b - a)
        return b - a

    assert sum(runner.map(5000, fn)) == 5000
    assert runner.batch_size == 1024 and runner.halvings == 2


def test_multiclass_output_becomes_an_occupancy_logit():
    from implicity.core.reconstruct.decoding import occupancy_logit

    free, building, terrain = torch.tensor(0.2), torch.tensor(1.0), torch.tensor(-0.5)
    logits = torch.stack([free, building, terrain]).reshape(1, 1, 3)
    p = torch.softmax(logits, -1)[0, 0]
    expected = torch.log(p[1] + p[2]) - torch.log(p[0])
    assert torch.allclose(occupancy_logit(logits), expected.reshape(1, 1), atol=1e-6)
    plain = torch.randn(2, 5)
    assert torch.equal(occupancy_logit(plain), plain)
