"""Test-time symmetry averaging (core/reconstruct/symmetry.py, ``--symmetries``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from implicity.core.errors import InputError
from implicity.core.reconstruct import EvidenceOptions, ReconstructionInputs, ReconstructionOptions, reconstruct_dsm
from implicity.core.reconstruct.symmetry import SymmetryAveraged, symmetries, transform_images, transform_xy
from implicity.training.data.dataset import augment_grid, augment_xy

from ..helpers import reconstruct_support as scene_support
from ..helpers.reconstruct_support import NearestPointModel, pixel_scene, read_dsm

RES = 0.5
STEP = ReconstructionOptions().fast_search.final_step
# The analytic models are exact at the border and move the surface off the points: keep their heights.
FOLLOW = dict(evidence=EvidenceOptions(margin=20.0, keep_margin=20.0, blend=False), despeckle=0.0)


def _run(tmp_path, cloud, model, name, orthos=(), **opts):
    inputs = ReconstructionInputs(points=cloud, model=model, out_path=tmp_path / name, resolution=RES, orthos=orthos)
    return reconstruct_dsm(inputs, ReconstructionOptions(device="cpu", **{**FOLLOW, **opts}))


@pytest.mark.parametrize("count", [2, 4, 8])
def test_copies_are_the_symmetries_training_augments_with(count):
    """A point keeps its image value under every copy, and the copies are those of
    training/data/dataset.py: what the networks learned to be invariant to."""
    rng = np.random.default_rng(count)
    image = rng.random((2, 16, 16)).astype(np.float32)          # rows north → south
    xy = rng.uniform(0.0, 1.0, (50, 2)).astype(np.float32)      # x east, y north in [0, 1]

    def value(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
        r = np.clip(((1.0 - pts[:, 1]) * 16).astype(int), 0, 15)
        c = np.clip((pts[:, 0] * 16).astype(int), 0, 15)
        return img[:, r, c]

    group = symmetries(count)
    assert len(set(group)) == count and group[0] == (False, 0)
    for mirror, k in group:
        moved_xy = transform_xy(torch.from_numpy(xy), mirror, k).numpy()
        moved_img = transform_images(torch.from_numpy(image), mirror, k).numpy()
        np.testing.assert_allclose(moved_xy, augment_xy(xy, mirror, k), atol=1e-6)
        np.testing.assert_array_equal(moved_img, augment_grid(image, mirror, k))
        inside = (np.abs(moved_xy * 16 - np.round(moved_xy * 16)) > 1e-3).all(axis=1)  # not on a pixel border
        np.testing.assert_array_equal(value(moved_img, moved_xy)[:, inside], value(image, xy)[:, inside])


def test_an_equivariant_model_gives_the_same_surface_from_every_copy(tmp_path):
    cloud, truth = pixel_scene(100.0, 70.0, RES)
    model = NearestPointModel()
    one = read_dsm(_run(tmp_path, cloud, model, "one.tif").dsm_path)
    windows = model.encoded
    eight = read_dsm(_run(tmp_path, cloud, model, "eight.tif", symmetries=8).dsm_path)
    assert model.encoded == 9 * windows  # 1 encoding per window, then 8
    assert np.abs(one - truth).max() <= STEP and np.abs(eight - truth).max() <= STEP


def test_averaging_cancels_what_depends_on_the_window_orientation(tmp_path):
    """A model that adds 3 m · (x − ½) across each window: every count > 1 holds the mirror or
    the half turn of each copy, whose x is 1 − x, so the tilt averages out to the true surface."""
    cloud, truth = pixel_scene(100.0, 70.0, RES)
    tilted = NearestPointModel(x_bias=3.0)
    plain = read_dsm(_run(tmp_path, cloud, tilted, "plain.tif").dsm_path)
    assert np.abs(plain - truth).max() > 1.0
    for count in (2, 4, 8):
        dsm = read_dsm(_run(tmp_path, cloud, tilted, f"s{count}.tif", symmetries=count).dsm_path)
        assert np.abs(dsm - truth).max() <= STEP, count


def test_the_reference_mode_averages_through_the_plain_decoder(tmp_path):
    """The paper's generator decodes whole queries (no column decoder): the tilt averages out
    there too, to within its final step below the surface."""
    cloud, truth = pixel_scene(40.0, 24.0, 1.0)
    tilted = NearestPointModel(x_bias=3.0)
    inputs = ReconstructionInputs(points=cloud, model=tilted, out_path=tmp_path / "ref.tif", resolution=1.0)
    dsm = read_dsm(reconstruct_dsm(inputs, ReconstructionOptions(device="cpu", mode="reference", symmetries=2)).dsm_path)
    below = truth - dsm
    assert tilted.encoded == 2  # one window, two copies
    assert below.min() >= -2e-3 and below.max() <= ReconstructionOptions().reference_search.final_step + 2e-3


def test_ortho_images_turn_with_the_points(tmp_path):
    """Mono on a checkerboard: a copy whose image turned differently from its points would put
    the squares' 3 m elsewhere and break the average."""
    cloud, truth = pixel_scene(70.0, 60.0, RES)
    ortho = scene_support.write_checker_ortho(tmp_path / "mono.tif", square=7.0, pixel=0.5)
    model = NearestPointModel(n_images=1, image_gains=(3.0,), image_size=128)
    dsm = read_dsm(_run(tmp_path, cloud, model, "d.tif", orthos=(ortho,), symmetries=8).dsm_path)
    h, w = truth.shape
    xx, yy = np.meshgrid(scene_support.X0 + (np.arange(w) + 0.5) * RES, scene_support.Y0 + h * RES - (np.arange(h) + 0.5) * RES)
    expected = truth + 3.0 * scene_support.checker(xx, yy, 7.0)
    away = scene_support.distance_to_checker_edge(xx, yy, 7.0) > 0.6
    assert np.abs(dsm - expected)[away].max() <= STEP


def test_the_shipped_network_averages_its_own_prior_and_stays_close(tmp_path):
    """The real network (decode_columns and a surface prior): the averaged surface differs from
    the plain one by centimetres, not metres, and the prior the fast search starts from is the mean."""
    from implicity.core.model import load_model
    from implicity.core.shipped_models import default_model

    path = default_model(0)
    if path is None:
        pytest.skip("no shipped ImpliCity-0 model in models/")
    net, _ = load_model(path, device="cpu")
    wrapped = SymmetryAveraged(net.eval(), 4)
    rng = np.random.default_rng(0)
    pts = torch.from_numpy(np.column_stack([rng.random((400, 2)), 0.1 * rng.standard_normal(400)]).astype(np.float32))
    xy = torch.from_numpy(rng.random((30, 2)).astype(np.float32))
    with torch.inference_mode():
        features = wrapped.encode(pts[None])
        columns = wrapped.decode_columns(xy, features)
        parts = [net.decode_columns(transform_xy(xy, m, k).contiguous(), f) for (m, k), f in zip(wrapped.group, features)]
        z = torch.zeros((30, 3)) + torch.tensor([-0.1, 0.0, 0.1])
        idx = torch.arange(30)
        np.testing.assert_allclose(columns(idx, z).numpy(), torch.stack([p(idx, z) for p in parts]).mean(0).numpy(),
                                   rtol=1e-5, atol=1e-5)
        if parts[0].prior is not None:
            np.testing.assert_allclose(columns.prior.numpy(), torch.stack([p.prior for p in parts]).mean(0).numpy(),
                                       atol=1e-6)
        query = torch.cat([xy, torch.zeros((30, 1))], dim=-1)[None]
        np.testing.assert_allclose(wrapped.decode(query, features).numpy()[0], columns(idx, z[:, 1:2]).numpy()[:, 0],
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", [0, 3, 16, True, 2.5])
def test_a_count_that_is_not_offered_is_refused(tmp_path, bad):
    cloud, _ = pixel_scene(20.0, 20.0, RES)
    with pytest.raises(InputError, match="symmetries.*1, 2, 4 or 8"):
        _run(tmp_path, cloud, NearestPointModel(), "bad.tif", symmetries=bad)
    assert not (tmp_path / "bad.tif").exists()

