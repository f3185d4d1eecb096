"""Robust network inputs: the surface prior, prior-relative decoding, outlier clamping and the
per-image ortho normalisation (core/model/prior.py, network.py, core/normalization.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from implicity.core.errors import InputError
from implicity.core.model import build_model, load_model_config, normalize_image
from implicity.core.model.prior import bilateral_refinement, cell_lower_median, plane_context, surface_prior
from implicity.core.normalization import DEFAULT_Z_STD

Z_STD = DEFAULT_Z_STD


def _plane_points(n: int = 4000, seed: int = 0, height: float = 0.2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(1, n, 3, generator=g)
    pts[..., 2] = height
    return pts


def test_cell_lower_median_matches_numpy():
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(1, 3000, 3, generator=g)
    grid = cell_lower_median(pts, 8)[0, 0].numpy()
    cells = np.minimum((pts[0, :, :2].numpy() * 8).astype(int), 7)
    for row in range(8):
        for col in range(8):
            z = pts[0, (cells[:, 0] == col) & (cells[:, 1] == row), 2].numpy()
            expected = np.sort(z)[(len(z) - 1) // 2] if len(z) else np.nan
            assert grid[row, col] == pytest.approx(expected, nan_ok=True)


def test_prior_ignores_blunders_and_fills_holes():
    pts = _plane_points()
    pts[0, :40, 2] = 10.0                    # 300 m blunders
    pts[0, :, 0] = pts[0, :, 0] * 0.5        # the eastern half of the patch is empty
    prior = surface_prior(pts, 32, outlier_threshold=5.0 / Z_STD)
    assert prior.shape == (1, 1, 32, 32)
    assert torch.isfinite(prior).all()
    assert torch.allclose(prior, torch.full_like(prior, 0.2), atol=1e-6)


def test_reference_configs_are_unchanged_and_robust_configs_keep_the_weights():
    ref = load_model_config("implicity_0_lite.yaml")
    robust = load_model_config("implicity_0_robust_lite.yaml")
    assert ref.height_reference == "window" and ref.image_normalization == "dataset"
    assert robust.height_reference == "prior" and robust.image_normalization == "per_image"
    a, b = build_model(ref).state_dict(), build_model(robust).state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_decoder_sees_height_above_the_prior():
    """The decoder's third input is (z − prior(x, y)) in units of prior_z_scale metres."""
    cfg = load_model_config("implicity_0_robust_lite.yaml")
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    seen = {}
    net.decoder.register_forward_hook(lambda module, args, out: seen.setdefault("query", args[0].clone()))
    pts = _plane_points(height=0.1)
    query = torch.rand(1, 200, 3) * 0.2
    with torch.no_grad():
        net.decode(query, net.encode(pts))
    expected = (query[..., 2] - 0.1) * cfg.z_std / cfg.prior_z_scale
    torch.testing.assert_close(seen["query"][..., 2], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(seen["query"][..., :2], query[..., :2])


def test_far_outliers_are_clamped_before_encoding():
    cfg = load_model_config("implicity_0_robust_lite.yaml")
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    clean = _plane_points(seed=3)
    dirty = clean.clone()
    dirty[0, :5, 2] = 30.0                   # 900 m above the surface
    near = clean.clone()
    near[0, :5, 2] = clean[0, :5, 2] + cfg.point_clip_m / cfg.z_std
    query = torch.rand(1, 300, 3) * torch.tensor([1.0, 1.0, 0.02])
    with torch.no_grad():
        a = net.decode(query, net.encode(dirty))
        b = net.decode(query, net.encode(near))
    assert torch.allclose(a, b, atol=1e-5)


def test_bad_robust_settings_are_refused():
    with pytest.raises(InputError, match="height_reference"):
        load_model_config({"inherit_from": "implicity_0_lite.yaml", "height_reference": "median"})
    with pytest.raises(InputError, match="plane_context 'prior' needs height_reference"):
        load_model_config({"inherit_from": "implicity_0_lite.yaml", "plane_context": "prior"})
    with pytest.raises(InputError, match="plane_context must be one of"):
        load_model_config({"inherit_from": "implicity_0_residual_lite.yaml", "plane_context": "images"})
    with pytest.raises(InputError, match="image_normalization"):
        load_model_config({"inherit_from": "implicity_0_lite.yaml", "image_normalization": "global"})
    with pytest.raises(InputError, match="prior_refinement 'bilateral' needs height_reference"):
        load_model_config({"inherit_from": "implicity_0_lite.yaml", "prior_refinement": "bilateral"})
    with pytest.raises(InputError, match="prior_refinement must be one of"):
        load_model_config({"inherit_from": "implicity_0_context_lite.yaml", "prior_refinement": "gaussian"})
    with pytest.raises(InputError, match="plane_sampling must be one of"):
        load_model_config({"inherit_from": "implicity_0_bilateral_lite.yaml", "plane_sampling": "nearest"})
    with pytest.raises(InputError, match="prior_refine_radius_m"):
        load_model_config({"inherit_from": "implicity_0_bilateral_lite.yaml", "prior_refine_radius_m": 0})


def test_per_image_normalisation_is_bit_depth_invariant():
    cfg = load_model_config("implicity_mono_robust_lite.yaml")
    rng = np.random.default_rng(0)
    img8 = rng.integers(0, 256, (1, 32, 32)).astype(np.float32)
    img8[0, :4, :4] = np.nan                  # no data
    img16 = img8 * 257.0
    a, b = normalize_image(img8, cfg), normalize_image(img16, cfg)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.all(a[0, :4, :4] == 0) and abs(float(np.median(a[0, 4:, 4:]))) < 0.1
    t = normalize_image(torch.from_numpy(img16), cfg)
    np.testing.assert_allclose(t.numpy(), a, atol=1e-5)
    flat = normalize_image(np.full((1, 8, 8), 7.0, np.float32), cfg)
    assert np.all(flat == 0)


def test_dataset_statistics_mode_is_unchanged():
    cfg = load_model_config("implicity_mono_lite.yaml")
    img = np.array([[[cfg.image_mean, cfg.image_mean + cfg.image_std, np.nan]]], np.float32)
    np.testing.assert_allclose(normalize_image(img, cfg), [[[0.0, 1.0, 0.0]]], atol=1e-6)


def test_plane_context_shows_the_priors_edges_and_the_point_density():
    """Channel 0: the prior's relief against its 9 × 9 mean (zero on a plane, + on a roof edge's
    upper side, − on its lower side); channel 1: log(1 + points) per cell."""
    pts = _plane_points(n=6000, seed=4, height=0.0)
    roof = (pts[0, :, 0] >= 0.5)
    pts[0, roof, 2] = 6.0 / Z_STD                              # a 6 m step at x = 0.5
    pts[0, :, 0] = torch.where(pts[0, :, 1] < 0.25, pts[0, :, 0] * 0.5, pts[0, :, 0])  # fewer points south-east
    prior = surface_prior(pts, 32, outlier_threshold=50.0 / Z_STD)
    ctx = plane_context(pts, prior, Z_STD / 4.0)
    assert ctx.shape == (1, 2, 32, 32)
    relief, density = ctx[0, 0], ctx[0, 1]
    assert relief[16:, 2:8].abs().max() < 1e-5                 # flat ground far from the step
    assert (relief[16:, 16:19] > 0.3).all() and (relief[16:, 13:16] < -0.3).all()
    assert relief.abs().max() <= 4.0
    counts = torch.zeros(32 * 32).index_add_(0, (pts[0, :, 0] * 32).long().clamp(0, 31) +
                                             32 * (pts[0, :, 1] * 32).long().clamp(0, 31), torch.ones(6000))
    torch.testing.assert_close(density.flatten(), torch.log1p(counts))


def test_plane_context_starts_as_the_model_without_it():
    """The context enters through a zero-initialised conv: initialised from a model without
    context, the new network gives the same logits, and only then learns to use it."""
    base_cfg = load_model_config("implicity_0_residual_lite.yaml")
    ctx_cfg = load_model_config("implicity_0_context_lite.yaml")
    assert ctx_cfg.plane_context == "prior" and base_cfg.plane_context == "none"
    torch.manual_seed(0)
    base = build_model(base_cfg).eval()
    new = build_model(ctx_cfg).eval()
    new.load_state_dict(base.state_dict(), strict=False)
    extra = set(new.state_dict()) - set(base.state_dict())
    assert extra == {"encoder.context_conv.weight", "encoder.context_conv.bias"}
    pts = _plane_points(n=3000, seed=5, height=0.05)
    query = torch.rand(1, 500, 3) * torch.tensor([1.0, 1.0, 0.1])
    with torch.no_grad():
        torch.testing.assert_close(new(query, pts), base(query, pts))
        new.encoder.context_conv.weight.fill_(0.1)
        assert not torch.allclose(new(query, pts), base(query, pts))


def _noisy_step(seed: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A sloped plane with a 2-unit step at x = 0.5, sampled with Gaussian height noise, and the
    true surface at the centres of a 64 × 64 plane."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(1, 20000, 2, generator=g)

    def surface(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.3 * x + 0.1 * y + (x >= 0.5) * 2.0

    z = surface(xy[..., 0], xy[..., 1]) + noise * torch.randn(xy.shape[:2], generator=g)
    c = (torch.arange(64) + 0.5) / 64
    x, y = torch.meshgrid(c, c, indexing="xy")
    return torch.cat([xy, z.unsqueeze(-1)], -1), surface(x, y)


def test_bilateral_refinement_averages_noise_and_keeps_edges():
    """The refined prior is about 3× closer to a noisy sloped roof than the median prior, and no
    worse next to the step (the neighbouring level gets no weight)."""
    pts, truth = _noisy_step(seed=0, noise=0.05)
    median = surface_prior(pts, 64, 5.0, 3)[0, 0]
    refined = surface_prior(pts, 64, 5.0, 3, refine_radius=4.0, noise_floor=0.01)[0, 0]
    err_median, err_refined = (median - truth).abs(), (refined - truth).abs()
    inner = (slice(4, -4), slice(4, -4))
    assert err_refined[inner].median() < 0.5 * err_median[inner].median()
    step = (slice(4, -4), slice(30, 34))                     # the two columns either side of the step
    assert err_refined[step].max() < 0.1 and err_refined[step].max() <= err_median[step].max()


def test_bilateral_refinement_keeps_an_exact_surface():
    """Noise-free points of a plane stay on the plane (the Gaussian mean of a plane is the plane, up
    to where the random points fall inside their cells), and the refinement is off unless the config
    asks for it."""
    pts, truth = _noisy_step(seed=1, noise=0.0)
    refined = surface_prior(pts, 64, 5.0, 3, refine_radius=4.0, noise_floor=0.01)[0, 0]
    inner = (slice(4, -4), slice(4, 28))
    torch.testing.assert_close(refined[inner], truth[inner], atol=5e-3, rtol=0)
    empty = surface_prior(torch.zeros(1, 0, 3), 16, 5.0, 3, refine_radius=4.0, noise_floor=0.01)
    assert torch.equal(empty, torch.zeros(1, 1, 16, 16))
    assert load_model_config("implicity_0_context_lite.yaml").prior_refinement == "none"
    bilateral = load_model_config("implicity_0_bilateral_lite.yaml")
    assert bilateral.prior_refinement == "bilateral" and bilateral.plane_context == "prior"


def test_bilateral_refinement_sums_the_disc_the_same_way_on_every_device():
    """The GPU's one-tensor sum over the disc (``stacked``) gives the CPU loop's surface."""
    pts, _ = _noisy_step(seed=2, noise=0.05)
    start = surface_prior(pts, 64, 5.0, 3)
    loop = bilateral_refinement(pts, start, 4.0, 0.01, stacked=False)
    stacked = bilateral_refinement(pts, start, 4.0, 0.01, stacked=True)
    assert not torch.equal(loop, start)
    torch.testing.assert_close(stacked, loop, atol=1e-5, rtol=0)


@pytest.mark.parametrize("stacked", [False, True])
def test_the_range_kernel_floor_leaves_the_surface_unchanged(monkeypatch, stacked):
    """The floor on the range kernel's exponent (which keeps float32 out of slow subnormals) gives the
    surface of the exact kernel: a weight of exp(-40) and one of 0 are the same to float precision,
    even with a far roof next door and blunders 20 units off."""
    from implicity.core.model import prior

    pts, _ = _noisy_step(seed=3, noise=0.002)  # a tight noise level: the neighbouring level is ~1000 σ away
    pts[0, ::500, 2] += 20.0
    start = surface_prior(pts, 64, 5.0, 3)
    floored = bilateral_refinement(pts, start, 4.0, 0.001, stacked=stacked)
    monkeypatch.setattr(prior, "EXP_FLOOR", -float("inf"))
    exact = bilateral_refinement(pts, start, 4.0, 0.001, stacked=stacked)
    assert not torch.equal(exact, start)
    torch.testing.assert_close(floored, exact, atol=1e-6, rtol=0)


def test_centred_sampling_reads_the_cell_a_point_was_scattered_into():
    """plane_sampling: centres reads cell (i, j) exactly at its centre, ((j + 0.5) / R, (i + 0.5) / R);
    the reference's convention reads there a mix of that cell and its neighbours (by up to half a
    cell at the patch's sides, not at all at its centre)."""
    from implicity.core.model.decoder import sample_plane
    from implicity.core.model.point_encoder import plane_index

    r = 8
    plane = torch.arange(r * r, dtype=torch.float32).reshape(1, 1, r, r)
    rows, cols = torch.meshgrid(torch.arange(r), torch.arange(r), indexing="ij")
    xy = torch.stack([(cols.flatten() + 0.5) / r, (rows.flatten() + 0.5) / r], dim=-1)[None]
    centred = sample_plane(plane, xy, cell_centres=True)[0, :, 0]
    torch.testing.assert_close(centred, plane.flatten())
    assert torch.equal(plane_index(xy, r)[0], plane.flatten().long())  # where those points are scattered
    corners = sample_plane(plane, xy)[0, :, 0]
    off = (corners - plane.flatten()).abs().reshape(r, r)
    # At the corner cell the reference reads (R − 1) / 2R = 7/16 of a cell away in x (values + 1) and y (+ 8).
    torch.testing.assert_close(off[0, 0], torch.tensor(7 / 16 * 9))
    assert off[r // 2, r // 2] < off[0, 0]


def test_centred_sampling_is_a_switch_of_the_bilateral_network():
    """The centred config has the bilateral network's weights and changes its output; its column
    decoding agrees with decode; the reference's configs keep the reference's convention (old
    checkpoints without the key: tests/core/test_model_checkpoint.py)."""
    bilateral = load_model_config("implicity_0_bilateral_lite.yaml")
    centred = load_model_config("implicity_0_centred_lite.yaml")
    assert bilateral.plane_sampling == "corners" and centred.plane_sampling == "centres"
    assert load_model_config("implicity_0.yaml").plane_sampling == "corners"
    torch.manual_seed(0)
    a, b = build_model(bilateral).eval(), build_model(centred).eval()
    b.load_state_dict(a.state_dict())
    pts = _plane_points(n=3000, seed=5, height=0.05)
    pts[0, :1500, 2] += 0.2 * (pts[0, :1500, 0] > 0.5)  # a step, so that where a cell is read matters
    xy = torch.rand(1, 400, 2)
    z = torch.rand(400, 3) * 0.3
    query = torch.cat([xy[0, :, None, :].expand(400, 3, 2), z[..., None]], dim=-1).reshape(1, 1200, 3)
    with torch.no_grad():
        fa, fb = a.encode(pts), b.encode(pts)
        assert not torch.allclose(a.decode(query, fa), b.decode(query, fb))
        columns = b.decode_columns(xy[0], fb)(torch.arange(400), z)
        torch.testing.assert_close(columns.reshape(-1), b.decode(query, fb).reshape(-1), atol=1e-4, rtol=0)
