"""reconstruct_dsm with analytic models: exact surfaces, tile borders, seams, extents, cancel."""
from __future__ import annotations

import numpy as np
import pytest

from implicity.core.errors import CancelledError, InputError
from implicity.core.reconstruct import EvidenceOptions, ReconstructionInputs, ReconstructionOptions, reconstruct_dsm

from ..helpers.reconstruct_support import X0, Y0, NearestPointModel, pixel_scene, read_dsm

RES = 0.5


@pytest.fixture(scope="module")
def scene():
    # 100 x 70 m: not a multiple of the 64 m window nor of the 48 m stride.
    return pixel_scene(100.0, 70.0, RES)


def _run(tmp_path, cloud, model, name="dsm.tif", **opts):
    inputs = ReconstructionInputs(points=cloud, model=model, out_path=tmp_path / name, resolution=RES,
                                  confidence_path=opts.pop("confidence", None), extent=opts.pop("extent", None))
    return reconstruct_dsm(inputs, ReconstructionOptions(device="cpu", **opts))


def test_fast_mode_recovers_surface_everywhere(tmp_path, scene):
    cloud, truth = scene
    model = NearestPointModel()
    result = _run(tmp_path, cloud, model, confidence=tmp_path / "conf.tif")
    dsm = read_dsm(result.dsm_path)
    assert dsm.shape == truth.shape == (140, 200)
    err = np.abs(dsm - truth)
    step = ReconstructionOptions().fast_search.final_step
    assert np.isfinite(dsm).all()
    assert err.max() <= step, f"max error {err.max():.4f} m exceeds the final step {step} m"
    assert result.tiles == 6 and model.encoded == 6  # 3 x 2 windows, each encoded once
    assert result.device == "cpu" and "cpu" in result.device_reason.lower()
    # Analytic: logit slope 4/m probed ±0.5 m around the surface → σ(2) − σ(−2) wherever the points
    # surround the pixel; along the extent border (points on one side only) the height follows the
    # points and the confidence is scaled down by the network's share, to 0 in the corners.
    conf = read_dsm(result.confidence_path)
    expected = 2.0 / (1.0 + np.exp(-2.0)) - 1.0
    inner = np.zeros(truth.shape, bool)
    inner[8:-8, 8:-8] = True  # farther than the 3 m support radius from the border
    assert conf.shape == truth.shape and np.abs(conf[inner] - expected).max() < 0.02
    assert conf.max() < expected + 0.02 and conf[0, 0] < 0.05 and conf[0, 100] < expected - 0.2
    # Queries per decoded pixel stay far below the reference's 32 per window (x16 windows).
    assert result.stats["queries"] / result.stats["decoded_pixels"] < 20


def test_reference_mode_recovers_surface_within_its_final_step(tmp_path):
    cloud, truth = pixel_scene(40.0, 24.0, 1.0)
    model = NearestPointModel()
    inputs = ReconstructionInputs(points=cloud, model=model, out_path=tmp_path / "ref.tif", resolution=1.0)
    result = reconstruct_dsm(inputs, ReconstructionOptions(device="cpu", mode="reference"))
    dsm = read_dsm(result.dsm_path)
    step = ReconstructionOptions().reference_search.final_step
    # The reference keeps the highest occupied sample: at most one final step below the surface
    # (plus ~1 mm: the paper's float32 "+1000" arithmetic, reproduced).
    diff = truth - dsm
    assert np.isfinite(dsm).all()
    assert diff.min() >= -2e-3 and diff.max() <= step + 2e-3
    # The paper's windows stay inside the extent: one 64 m window over this 40 x 24 m extent.
    assert result.tiles == 1


def _envelope(truth: np.ndarray, low: bool) -> np.ndarray:
    """The robust lowest/highest point height within ±2.5 m (11 x 11 pixels at 0.5 m)."""
    from scipy import ndimage

    f = ndimage.minimum_filter if low else ndimage.maximum_filter
    return f(truth, size=11, mode="constant", cval=np.inf if low else -np.inf)


def test_surface_far_from_every_point_is_clamped_unless_the_margin_allows_it(tmp_path):
    cloud, truth = pixel_scene(30.0, 20.0, RES)
    model = NearestPointModel(offset=25.0)  # 25 m above every point: the points contradict it
    result = _run(tmp_path, cloud, model, confidence=tmp_path / "conf.tif", evidence=EvidenceOptions(blend=False))
    dsm = read_dsm(result.dsm_path)
    assert np.abs(dsm - _envelope(truth, low=False)).max() < 1e-3  # kept within the points' own range
    assert result.stats["clamped_pixels"] == truth.size  # beyond the 3 m search margin: flagged
    assert np.all(read_dsm(result.confidence_path) == 0.0)
    loose = _run(tmp_path, cloud, model, name="loose.tif", evidence=EvidenceOptions(keep_margin=3.0, blend=False))
    assert np.abs(read_dsm(loose.dsm_path) - (_envelope(truth, low=False) + 3.0)).max() < 1e-3  # the bracket's top
    wide = _run(tmp_path, cloud, model, name="wide.tif",
                evidence=EvidenceOptions(margin=30.0, keep_margin=30.0, blend=False))
    assert np.abs(read_dsm(wide.dsm_path) - (truth + 25.0)).max() <= ReconstructionOptions().fast_search.final_step
    assert wide.stats["clamped_pixels"] == 0


def test_a_surface_just_off_the_points_is_kept_in_their_range_without_a_flag(tmp_path):
    # 0.5 m above every point: inside the 3 m search bracket, outside the points' range.
    cloud, truth = pixel_scene(30.0, 20.0, RES)
    result = _run(tmp_path, cloud, NearestPointModel(offset=0.5), confidence=tmp_path / "conf.tif",
                  evidence=EvidenceOptions(blend=False))
    dsm = read_dsm(result.dsm_path)
    top = _envelope(truth, low=False)
    assert np.all(dsm <= top + 1e-3) and np.all(dsm >= truth - 1e-3)
    assert np.abs(dsm - np.minimum(truth + 0.5, top)).max() <= ReconstructionOptions().fast_search.final_step
    assert result.stats["clamped_pixels"] == 0  # the network was found; only kept in range
    assert np.all(read_dsm(result.confidence_path) > 0.0)


def test_a_blunder_cell_does_not_open_the_kept_range(tmp_path):
    cloud, truth = pixel_scene(30.0, 20.0, RES)
    xyz = cloud.xyz.copy()
    i = np.argmin(np.hypot(xyz[:, 0] - xyz[:, 0].mean(), xyz[:, 1] - xyz[:, 1].mean()))
    xyz[i, 2] += 20.0  # one blunder in the middle
    blunder = type(cloud)(xyz=xyz, crs=cloud.crs, source="blunder")
    model = NearestPointModel(offset=25.0)
    dsm = read_dsm(_run(tmp_path, blunder, model, evidence=EvidenceOptions(blend=False)).dsm_path)
    # As without the blunder, up to one slope step (~0.2 m) where its cell, whose only point it was, is left out.
    assert np.abs(dsm - _envelope(truth, low=False)).max() < 0.25
    opened = read_dsm(_run(tmp_path, blunder, model, name="gap.tif",
                           evidence=EvidenceOptions(blend=False, blunder_gap=50.0)).dsm_path)
    assert opened.max() > truth.max() + 15.0  # a gap wider than the blunder: it bounds the pixels around it


def _sparse_with_one_low_point(drop: float):
    """One point every 4 m (a 5 x 5 block of 0.5 m cells holds only its own), the middle one ``drop`` m low."""
    cloud, truth = pixel_scene(40.0, 40.0, RES)
    xyz = cloud.xyz.reshape(truth.shape + (3,))[4::8, 4::8].reshape(-1, 3).copy()
    i = np.argmin(np.hypot(xyz[:, 0] - xyz[:, 0].mean(), xyz[:, 1] - xyz[:, 1].mean()))
    lowest_true = xyz[:, 2].min()
    xyz[i, 2] -= drop
    return type(cloud)(xyz=xyz, crs=cloud.crs, source="sparse"), lowest_true, float(xyz[i, 2])


def test_a_far_outlier_in_a_sparse_cloud_does_not_sink_the_pixels_around_it(tmp_path):
    cloud, lowest_true, _ = _sparse_with_one_low_point(200.0)
    model = NearestPointModel()  # follows the nearest point: down to the outlier around it
    dsm = read_dsm(_run(tmp_path, cloud, model, evidence=EvidenceOptions(blend=False)).dsm_path)
    assert np.isfinite(dsm).all() and dsm.min() > lowest_true - 1.0
    # Without the far rule nothing bounds it: the 5 x 5 test has no other cell to compare with.
    sunk = read_dsm(_run(tmp_path, cloud, model, name="off.tif",
                         evidence=EvidenceOptions(blend=False, far_blunder_gap=0.0)).dsm_path)
    assert sunk.min() < lowest_true - 150.0


def test_a_lone_low_point_nearer_than_the_far_gap_still_bounds_its_pixels(tmp_path):
    # A street 20 m below the roofs, seen by one point of a sparse cloud, is evidence, not an outlier.
    cloud, lowest_true, street = _sparse_with_one_low_point(20.0)
    assert street < lowest_true - 10.0
    dsm = read_dsm(_run(tmp_path, cloud, NearestPointModel(), evidence=EvidenceOptions(blend=False)).dsm_path)
    assert abs(dsm.min() - street) < 0.1


def test_blending_leaves_no_seam(tmp_path, scene):
    cloud, truth = scene
    # Each window sees the surface tilted by 2 m across its width: hard cuts would jump 1.5 m.
    model = NearestPointModel(x_bias=2.0)
    loose = EvidenceOptions(keep_margin=3.0)  # the tilt leaves the points' range: keep it, to see the blend alone
    dsm = read_dsm(_run(tmp_path, cloud, model, evidence=loose).dsm_path)
    err = dsm - truth
    inner = slice(8, -8)  # the window seams; along the extent border the points' surface is blended in
    jumps = np.abs(np.diff(err, axis=1))[inner, inner]
    assert jumps.max() < 0.2, f"seam of {jumps.max():.3f} m between neighbouring pixels"
    hard = _run(tmp_path, cloud, model, name="hard.tif", overlap=0.0, evidence=loose)
    hard_jumps = np.abs(np.diff(read_dsm(hard.dsm_path) - truth, axis=1))[inner, inner]
    assert hard_jumps.max() > 1.0  # the test model really produces seams without blending


def test_user_extent_and_odd_stride(tmp_path, scene):
    cloud, truth = scene
    extent = (X0 + 10.25, Y0 + 5.0, X0 + 87.0, Y0 + 61.5)
    result = _run(tmp_path, cloud, NearestPointModel(), extent=extent, window_stride=37.0, overlap=6.0)
    dsm = read_dsm(result.dsm_path)
    # The grid snaps to the resolution: columns from 10.0 m, rows from 61.5 m down.
    sub = truth[int((70.0 - 61.5) / RES):int((70.0 - 5.0) / RES), int(10.0 / RES):int(87.0 / RES)]
    assert dsm.shape == sub.shape
    assert np.abs(dsm - sub).max() <= ReconstructionOptions().fast_search.final_step


@pytest.mark.parametrize("prefetch", [None, 3])
def test_cancel_leaves_no_file_and_no_thread(tmp_path, scene, prefetch):
    import threading

    cloud, _ = scene
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 2

    inputs = ReconstructionInputs(points=cloud, model=NearestPointModel(), out_path=tmp_path / "c.tif",
                                  confidence_path=tmp_path / "cc.tif", resolution=RES)
    with pytest.raises(CancelledError):
        reconstruct_dsm(inputs, ReconstructionOptions(device="cpu", prefetch=prefetch), is_cancelled=cancelled)
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("implicity-prepare")]


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_windows_prepared_ahead_give_the_same_dsm(tmp_path, scene, mode):
    """Preparing windows on a worker thread (the GPU default) changes when, not what, is computed."""
    cloud, _ = scene
    inline = _run(tmp_path, cloud, NearestPointModel(), name="inline.tif", mode=mode, prefetch=0)
    ahead = _run(tmp_path, cloud, NearestPointModel(), name="ahead.tif", mode=mode, prefetch=2)
    assert ahead.tiles == inline.tiles and ahead.tiles_skipped == inline.tiles_skipped
    np.testing.assert_array_equal(read_dsm(ahead.dsm_path), read_dsm(inline.dsm_path))


def test_progress_is_reported_and_monotone(tmp_path):
    cloud, _ = pixel_scene(30.0, 20.0, 1.0)
    seen: list[float] = []
    inputs = ReconstructionInputs(points=cloud, model=NearestPointModel(), out_path=tmp_path / "p.tif", resolution=1.0)
    reconstruct_dsm(inputs, ReconstructionOptions(device="cpu"), progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen)


@pytest.mark.parametrize("fill", ["idw", "nearest", "none"])
def test_holes_are_decoded_but_nothing_far_beyond_the_outer_edge_whatever_the_fill(tmp_path, fill):
    # Points at x < 20 m and 32 <= x < 40 m of a 60 m wide extent: the 12 m gap is a hole (narrower
    # than twice the 10 m reach), the 20 m beyond x = 40 m lie outside the cloud.
    cloud, truth = pixel_scene(60.0, 30.0, RES)
    lx = cloud.xyz[:, 0] - X0
    kept = cloud.subset((lx < 20.0) | ((lx >= 32.0) & (lx < 40.0)))
    result = _run(tmp_path, kept, NearestPointModel(), fill=fill, extent=(X0, Y0, X0 + 60.0, Y0 + 30.0),
                  fill_max_distance=10.0)
    dsm = read_dsm(result.dsm_path)
    cols = (np.arange(dsm.shape[1]) + 0.5) * RES
    # The hole is decoded (near the top and bottom it opens onto the outside of the extent).
    assert np.isfinite(dsm[20:-20, cols < 40.0]).all()
    assert np.isfinite(dsm[:, (cols > 40.0) & (cols < 42.0)]).all()  # up to the 2.5 m radius beyond the edge
    assert np.isnan(dsm[:, cols > 43.0]).all()  # and no farther
    assert result.stats["out_of_reach_pixels"] > 0 and result.stats["filled_pixels"] == 0


def test_network_finding_nothing_gives_the_envelope_bottom_flagged(tmp_path):
    cloud, truth = pixel_scene(30.0, 20.0, RES)
    model = NearestPointModel(offset=-500.0)  # free space at every searched height
    result = _run(tmp_path, cloud, model, fill="none", confidence=tmp_path / "c.tif",
                  evidence=EvidenceOptions(blend=False))
    assert np.abs(read_dsm(result.dsm_path) - _envelope(truth, low=True)).max() < 1e-3  # the kept range's bottom
    assert np.all(read_dsm(result.confidence_path) == 0.0)
    assert result.stats["clamped_pixels"] == truth.size


@pytest.mark.parametrize("kwargs,option", [
    (dict(device="cuda:7"), "device"),
    (dict(device="tpu"), "device"),
    (dict(mode="slow"), "mode"),
    (dict(prefetch=-1), "prefetch"),
])
def test_bad_options_are_explained(tmp_path, kwargs, option):
    cloud, _ = pixel_scene(10.0, 10.0, 1.0)
    inputs = ReconstructionInputs(points=cloud, model=NearestPointModel(), out_path=tmp_path / "x.tif", resolution=1.0)
    with pytest.raises(InputError) as info:
        reconstruct_dsm(inputs, ReconstructionOptions(**kwargs))
    # the error names the option as a core parameter (each front end renders it: --mode, 'Search mode'),
    # or, where core still writes the flag itself, as the flag
    assert info.value.parameter == option or f"--{option}" in str(info.value)
