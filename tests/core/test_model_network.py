"""The ImpliCity network through its public API: shapes, sizes, invariances, gradients, configs.

Reference-size models are built (to compare parameter counts and state-dict layouts with the
authors' implementation) but forward passes run on the "lite" configs or on small inputs, so the
file stays fast on a 2-core CPU.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from implicity.core.errors import InputError
from implicity.core.model import (
    EncodedPatch,
    ImpliCityNet,
    ModelConfig,
    build_model,
    load_model_config,
    reference_config,
)
from implicity.core.model import scatter as sc
from implicity.core.normalization import PatchFrame
from implicity.core.vocabulary import VARIANT_NAMES

LITE_CONFIGS = {0: "implicity_0_lite.yaml", 1: "implicity_mono_lite.yaml", 2: "implicity_stereo_lite.yaml"}
#: Published parameter counts of the reference models (IMPLICITY_FACTS.md); kept here as well so that
#: the headline numbers are checked even if the JSON changes.
REFERENCE_PARAMS = {0: 7_812_705, 1: 21_824_993, 2: 21_828_129}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _perturb(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Add noise to every trainable tensor.

    A fresh network has zero ``fc_1`` weights in every residual block (identity at init) and zero
    U-Net biases, so some paths carry no signal or gradient yet; noise makes every path live,
    which is what the gradient and equivariance checks need to mean something.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * std)
    return model


def _lite(n_images: int, seed: int = 0, **overrides: Any) -> ImpliCityNet:
    torch.manual_seed(seed)
    cfg = load_model_config({"inherit_from": LITE_CONFIGS[n_images], **overrides})
    return _perturb(build_model(cfg), seed).eval()


def _inputs(n_images: int, batch: int = 1, n_points: int = 1500, n_query: int = 300, image_size: int = 32,
            seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(batch, n_points, 3, generator=gen)
    points[..., 2] = points[..., 2] * 0.6 - 0.3
    query = torch.rand(batch, n_query, 3, generator=gen)
    query[..., 2] = query[..., 2] * 2.0 - 1.0
    images = torch.randn(batch, n_images, image_size, image_size, generator=gen) if n_images else None
    return query, points, images


# --------------------------------------------------------------------------- reference sizes

@pytest.mark.parametrize("n_images", [0, 1, 2])
def test_reference_sizes_and_state_dict_layout(reference: dict[str, Any], n_images: int) -> None:
    """Same parameter count and the same key → shape map as the authors' models, so their
    checkpoints load strictly."""
    ref = reference[VARIANT_NAMES[n_images]]
    model = build_model(reference_config(n_images))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{VARIANT_NAMES[n_images]}: {n_params:,} parameters (reference {ref['n_parameters']:,})")
    assert n_params == ref["n_parameters"] == REFERENCE_PARAMS[n_images]
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert len(shapes) == ref["n_state_dict_entries"]
    missing = sorted(set(ref["state_dict_shapes"]) - set(shapes))
    extra = sorted(set(shapes) - set(ref["state_dict_shapes"]))
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    wrong = {k: (shapes[k], s) for k, s in ref["state_dict_shapes"].items() if shapes[k] != s}
    assert not wrong, f"shape differences (ours, reference): {dict(list(wrong.items())[:5])}"
    assert model.config.variant == VARIANT_NAMES[n_images]


@pytest.mark.parametrize("n_images", [0, 1, 2])
def test_reference_forward_shapes(reference: dict[str, Any], n_images: int) -> None:
    """A reference-size forward pass on small inputs: one logit per query (squeezed to (B, M))."""
    example = reference[VARIANT_NAMES[n_images]]["forward_example"]
    torch.manual_seed(0)
    model = build_model(reference_config(n_images)).eval()
    b, m = example["query"][:2]
    query, points, images = _inputs(n_images, batch=b, n_points=800, n_query=m)
    with torch.inference_mode():
        out = model(query, points, images)
    assert tuple(out.shape) == tuple(example["output"][:2])   # reference (B, M, 1) → ours (B, M)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("n_images", [0, 1, 2])
def test_lite_forward_shapes_and_batch_independence(n_images: int) -> None:
    """Shapes on the lite configs, and each patch of a batch is encoded on its own: per-cell pooling
    must not mix the point clouds of different batch items."""
    model = _lite(n_images)
    query, points, images = _inputs(n_images, batch=2)
    with torch.inference_mode():
        both = model(query, points, images)
        first = model(query[:1], points[:1], None if images is None else images[:1])
        second = model(query[1:], points[1:], None if images is None else images[1:])
        enc = model.encode(points, images)
    assert both.shape == (2, query.shape[1])
    assert enc.plane.shape == (2, model.config.feature_dim, model.config.plane_resolution,
                               model.config.plane_resolution)
    if n_images:
        assert enc.image is not None and enc.image.shape == (2, model.config.feature_dim, 8, 8)
    else:
        assert enc.image is None
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=1e-5)


def test_decode_in_chunks_equals_one_call() -> None:
    """DSM extraction decodes one encoding in many chunks; results must not depend on chunking."""
    model = _lite(1)
    query, points, images = _inputs(1, n_query=1000)
    with torch.inference_mode():
        enc = model.encode(points, images)
        whole = model.decode(query, enc)
        parts = torch.cat([model.decode(query[:, i:i + 137], enc) for i in range(0, 1000, 137)], dim=1)
        direct = model(query, points, images)
    torch.testing.assert_close(parts, whole, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(direct, whole, atol=0.0, rtol=0.0)


def test_three_class_variant_shape() -> None:
    """The free/building/terrain variant returns 3 logits per query; only fc_out grows."""
    model = _lite(0, n_classes=3)
    query, points, _ = _inputs(0, batch=2)
    with torch.inference_mode():
        out = model(query, points)
    assert out.shape == (2, query.shape[1], 3)
    ref3 = build_model(reference_config(0, n_classes=3))
    assert ref3.state_dict()["decoder.fc_out.weight"].shape == (3, 32)
    assert sum(p.numel() for p in ref3.parameters()) == REFERENCE_PARAMS[0] + 2 * 32 + 2


def test_points_on_the_patch_edges_are_accepted() -> None:
    """X or y exactly 1.0 (far edge, kept by the crop) must not index past the plane."""
    model = _lite(0)
    corners = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 0.1], [1.0, 0.0, -0.1], [0.0, 1.0, 0.2],
                             [0.5, 1.0, 0.0]]])
    query, points, _ = _inputs(0, n_points=200)
    with torch.inference_mode():
        out = model(query, torch.cat([points, corners], dim=1))
    assert torch.isfinite(out).all()


# --------------------------------------------------------------------------- invariances, orientation

@pytest.mark.parametrize("n_images", [0, 1])
def test_z_shift_equivariance(n_images: int) -> None:
    """Raising the whole scene by Δ (points and queries) must not change the occupancy: the median
    shift of the patch frame (core/normalization.py) removes absolute height. Large projected coordinates on purpose."""
    model = _lite(n_images, seed=3)
    rng = np.random.default_rng(5)
    x0, y0 = 2_600_000.0, 1_200_000.0
    xy = rng.uniform(0, 64, (3000, 2)) + [x0, y0]
    z = 420.0 + 3.0 * np.sin((xy[:, 0] - x0) / 9.0) + np.where((xy[:, 1] - y0) > 40, 12.0, 0.0)
    cloud = np.column_stack([xy, z])
    queries = np.column_stack([rng.uniform(0, 64, (500, 2)) + [x0, y0], rng.uniform(405, 445, 500)])
    images = torch.randn(1, n_images, 32, 32, generator=torch.Generator().manual_seed(2)) if n_images else None

    def occupancy(pts: np.ndarray, q: np.ndarray) -> torch.Tensor:
        frame = PatchFrame.of_points(pts, x0, y0, 64.0)
        with torch.inference_mode():
            return torch.sigmoid(model(torch.from_numpy(frame.normalize_points(q))[None],
                                       torch.from_numpy(frame.normalize_points(pts))[None], images))

    delta = np.array([0.0, 0.0, 137.3])
    base = occupancy(cloud, queries)
    shifted = occupancy(cloud + delta, queries + delta)
    torch.testing.assert_close(shifted, base, atol=1e-5, rtol=0.0)
    # the check is not vacuous: the network does respond to height
    assert (occupancy(cloud, queries + delta) - base).abs().max() > 1e-3
    assert PatchFrame.of_points(cloud + delta, x0, y0, 64.0).z_shift == pytest.approx(
        PatchFrame.of_points(cloud, x0, y0, 64.0).z_shift + delta[2], abs=1e-9)


def test_encode_flips_image_features_to_plane_orientation() -> None:
    """Raster rows run north→south, plane rows south→north: encode flips the image features."""
    model = _lite(1)
    _, points, images = _inputs(1)
    with torch.inference_mode():
        enc = model.encode(points, images)
        raw = model.image_encoder(images)
    torch.testing.assert_close(enc.image, torch.flip(raw, dims=[2]), atol=0.0, rtol=0.0)


def test_decode_reads_both_maps_at_the_query_position() -> None:
    """Plane and image features are summed at (x, y): y = 1 reads the last plane row, which after
    the flip is raster row 0 (north)."""
    model = _lite(1)
    c, r, s = model.config.feature_dim, model.config.plane_resolution, 8
    raster = torch.zeros(1, c, s, s)
    raster[:, :, 0, :] = 1.0                       # only the northern raster row is lit
    zeros, ones = torch.zeros(1, c, r, r), torch.ones(1, c, r, r)
    enc = EncodedPatch(plane=zeros, image=torch.flip(raster, dims=[2]))
    north = torch.tensor([[[0.3, 1.0, 0.1]]])
    south = torch.tensor([[[0.3, 0.0, 0.1]]])
    with torch.inference_mode():
        torch.testing.assert_close(model.decode(north, enc), model.decode(north, EncodedPatch(ones)))
        torch.testing.assert_close(model.decode(south, enc), model.decode(south, EncodedPatch(zeros)))
        assert not torch.allclose(model.decode(north, enc), model.decode(south, enc))


# --------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("n_images", [0, 1, 2])
def test_gradient_reaches_every_trainable_parameter(n_images: int) -> None:
    """One BCE step must give every trainable tensor a finite, non-zero gradient; the only frozen
    tensors are the unused ``bn4`` norms of equal-width image-encoder blocks (by design)."""
    model = _lite(n_images, seed=11).train()
    query, points, images = _inputs(n_images, n_points=3000, n_query=400, seed=4)
    labels = (query[..., 2] < 0).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(query, points, images), labels)
    loss.backward()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    bad = [n for n, p in model.named_parameters()
           if p.requires_grad and p.grad is not None and not torch.isfinite(p.grad).all()]
    zero = [n for n, p in model.named_parameters()
            if p.requires_grad and p.grad is not None and p.grad.abs().max() == 0]
    assert not no_grad, f"no gradient: {no_grad[:8]}"
    assert not bad, f"non-finite gradient: {bad[:8]}"
    assert not zero, f"all-zero gradient: {zero[:8]}"
    assert all(re.fullmatch(r"image_encoder\..*\.bn4\.(weight|bias)", n) for n in frozen), frozen
    assert all(model.get_parameter(n).grad is None for n in frozen)
    if n_images:
        assert frozen, "equal-width ConvBlocks exist, so some bn4 norms must be frozen"
        # a width-changing block uses its bn4 in the shortcut: trainable and trained
        assert model.get_parameter("image_encoder.conv2.bn4.weight").requires_grad
        assert "image_encoder.conv2.bn4.weight" not in frozen
    else:
        assert not frozen


# --------------------------------------------------------------------------- input errors

def test_stereo_model_refuses_one_image() -> None:
    model = _lite(2)
    query, points, _ = _inputs(2)
    with pytest.raises(InputError, match=r"expects 2 ortho-images \(stereo\), got 1"):
        model(query, points, torch.randn(1, 1, 32, 32))
    with pytest.raises(InputError, match=r"expects 2 ortho-images .*got none"):
        model(query, points, None)


def test_bad_point_and_image_shapes_are_input_errors() -> None:
    model = _lite(1)
    query, points, images = _inputs(1)
    with pytest.raises(InputError, match="points must be"):
        model(query, points[..., :2])
    with pytest.raises(InputError, match="points must be"):
        model(query, points[:, :0])
    with pytest.raises(InputError, match="divisible by 16"):
        model(query, points, torch.randn(1, 1, 40, 40))
    with pytest.raises(InputError, match="image stacks"):
        model(query, points, torch.randn(2, 1, 32, 32))


# --------------------------------------------------------------------------- configs

def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_config_inheritance_chain_and_lists(tmp_path: Path) -> None:
    """Child fields win over parents, later list entries over earlier ones, paths are relative to
    the file that names them."""
    _write(tmp_path / "base.yaml", "name: base\nhidden_dim: 16\nfeature_dim: 8\nunet_depth: 3\n")
    _write(tmp_path / "mid.yaml", "inherit_from: base.yaml\nfeature_dim: 12\n")
    _write(tmp_path / "extra.yaml", "unet_depth: 2\ndecoder_blocks: 3\n")
    child = _write(tmp_path / "sub" / "child.yaml",
                   "inherit_from: [../mid.yaml, ../extra.yaml]\nname: child\ndecoder_blocks: 4\n")
    cfg = load_model_config(child)
    assert (cfg.name, cfg.hidden_dim, cfg.feature_dim, cfg.unet_depth, cfg.decoder_blocks) == (
        "child", 16, 12, 2, 4)
    assert cfg.plane_resolution == ModelConfig().plane_resolution     # untouched fields keep defaults
    # shipped files: a mapping resolves against configs/, lite = reference + lite widths
    assert load_model_config({"inherit_from": "ImpliCity-stereo.yaml"}) == reference_config(2)
    mono_lite = load_model_config("implicity_mono_lite.yaml")
    assert (mono_lite.name, mono_lite.n_images, mono_lite.feature_dim, mono_lite.unet_depth) == (
        "ImpliCity-mono-lite", 1, 16, 4)
    assert reference_config(0) == ModelConfig()                      # defaults are the reference's
    # a user's file may inherit a shipped config by its bare name (a file beside it wins)
    users = load_model_config(_write(tmp_path / "mine" / "wide.yaml",
                                     "inherit_from: ImpliCity-mono.yaml\nhidden_dim: 64\n"))
    assert (users.n_images, users.hidden_dim, users.name) == (1, 64, "ImpliCity-mono")


def test_config_errors_name_the_problem(tmp_path: Path) -> None:
    _write(tmp_path / "parent.yaml", "n_images: 1\n")
    typo = _write(tmp_path / "typo.yaml", "inherit_from: parent.yaml\nhiden_dim: 8\n")
    typo_message = r"unknown model config field\(s\) 'hiden_dim' \(did you mean 'hidden_dim'\?\)"
    with pytest.raises(InputError, match=typo_message) as info:
        load_model_config(typo)
    assert str(typo) in str(info.value)
    with pytest.raises(InputError, match="unknown model config field"):
        load_model_config({"feature_dims": 8})
    _write(tmp_path / "a.yaml", "inherit_from: b.yaml\n")
    _write(tmp_path / "b.yaml", "inherit_from: a.yaml\n")
    with pytest.raises(InputError, match="cycle"):
        load_model_config(tmp_path / "a.yaml")
    orphan = _write(tmp_path / "orphan.yaml", "inherit_from: nowhere.yaml\n")
    with pytest.raises(InputError, match=r"nowhere\.yaml: model config file not found \(inherited by"):
        load_model_config(orphan)
    with pytest.raises(InputError, match="field 'hidden_dim' must be int"):
        load_model_config({"hidden_dim": "wide"})
    with pytest.raises(InputError, match="n_images must be 0, 1 or 2"):
        load_model_config({"n_images": 3})
    with pytest.raises(InputError, match="image_size 100 must be a multiple of 16"):
        load_model_config({"inherit_from": "ImpliCity-mono.yaml", "image_size": 100})
    with pytest.raises(InputError, match="no reference ImpliCity configuration"):
        reference_config(3)


# --------------------------------------------------------------------------- scatter

def _scatter_example(seed: int = 0, b: int = 2, c: int = 32, n: int = 5000, cells: int = 4096
                     ) -> tuple[torch.Tensor, torch.Tensor, int]:
    gen = torch.Generator().manual_seed(seed)
    src = torch.randn(b, c, n, generator=gen)
    index = torch.randint(0, cells // 2, (b, n), generator=gen) * 2   # odd cells stay empty
    return src, index, cells


def test_torch_scatter_matches_native() -> None:
    """With torch-scatter installed, both back ends must agree (max exactly, mean to rounding)."""
    pytest.importorskip("torch_scatter")
    src, index, cells = _scatter_example()
    torch.testing.assert_close(sc.scatter_max(src, index, cells, use_torch_scatter=True),
                               sc.scatter_max(src, index, cells, use_torch_scatter=False), atol=0.0, rtol=0.0)
    torch.testing.assert_close(sc.scatter_mean(src, index, cells, use_torch_scatter=True),
                               sc.scatter_mean(src, index, cells, use_torch_scatter=False),
                               atol=1e-6, rtol=1e-6)   # float summation order only
    torch.testing.assert_close(sc.pool_and_gather(src, index, cells, use_torch_scatter=True),
                               sc.pool_and_gather(src, index, cells, use_torch_scatter=False),
                               atol=0.0, rtol=0.0)


def test_native_scatter_matches_naive_loops() -> None:
    """Per-cell max and mean against plain loops; all values negative so a max that wrongly includes
    the zero initial value would show, and empty cells must stay exactly 0."""
    src = -np.array([[[1.0, 5.0, 2.0, 7.0, 3.0, 0.5, 4.0],
                      [2.0, 1.0, 9.0, 3.0, 8.0, 6.0, 1.5]],
                     [[3.0, 2.0, 1.0, 4.0, 6.0, 5.0, 7.0],
                      [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]]], dtype=np.float32)
    index = np.array([[0, 2, 2, 5, 0, 2, 5],
                      [1, 1, 1, 1, 3, 3, 4]])
    b, c, n = src.shape
    cells = 6
    want_max = np.zeros((b, c, cells), np.float32)
    want_mean = np.zeros((b, c, cells), np.float32)
    for bi in range(b):
        for cell in range(cells):
            members = [i for i in range(n) if index[bi, i] == cell]
            for ci in range(c):
                if members:
                    want_max[bi, ci, cell] = max(src[bi, ci, i] for i in members)
                    want_mean[bi, ci, cell] = sum(src[bi, ci, i] for i in members) / len(members)
    t_src, t_index = torch.from_numpy(src), torch.from_numpy(index)
    got_max = sc.scatter_max(t_src, t_index, cells, use_torch_scatter=False)
    got_mean = sc.scatter_mean(t_src, t_index, cells, use_torch_scatter=False)
    np.testing.assert_array_equal(got_max.numpy(), want_max)
    np.testing.assert_allclose(got_mean.numpy(), want_mean, rtol=1e-6, atol=1e-7)
    assert (got_max[0, :, [1, 3, 4]] == 0).all() and (got_mean[1, :, [0, 2, 5]] == 0).all()
    gathered = sc.pool_and_gather(t_src, t_index, cells, use_torch_scatter=False).numpy()
    for bi in range(b):
        for i in range(n):
            np.testing.assert_array_equal(gathered[bi, :, i], want_max[bi, :, index[bi, i]])
