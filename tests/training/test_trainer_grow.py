"""``init_grow``: a wider network initialised from a trained narrower one computes what it computed,
and its new channels learn; what cannot be grown is refused in one line."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from implicity.core.errors import InputError
from implicity.core.model import ModelConfig, build_model, save_checkpoint
from implicity.training.trainer.session import initialise_from

from ..helpers.tiny_trainer import tiny_config

#: The shipped lite design (robust prior, plane context, centred sampling), small enough for a test.
NARROW = ModelConfig(hidden_dim=16, feature_dim=8, unet_depth=3, unet_start_filters=8, decoder_hidden_dim=16,
                     plane_resolution=32, height_reference="prior", point_height="prior", plane_context="prior",
                     prior_refinement="bilateral", plane_sampling="centres")
WIDE = dataclasses.replace(NARROW, hidden_dim=32, feature_dim=16, unet_start_filters=16, decoder_hidden_dim=32)
#: The same with a small image encoder of one ortho.
MONO = dataclasses.replace(NARROW, n_images=1, image_size=32, image_stacks=1, image_hourglass_depth=2,
                           image_stem_channels=8, image_channels=16, image_norm_groups=4)


def _trained_narrow(path: Path, config: ModelConfig = NARROW) -> torch.nn.Module:
    """A narrow network with every weight nonzero (fresh ones have zero layers that hide mistakes)."""
    torch.manual_seed(1)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    save_checkpoint(path, model, config)
    return model.eval()


def _patch(seed: int, n_images: int = 0, image_size: int = 32) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(2, 1500, 3, generator=g)
    points[..., 2] = 0.3 * points[..., 2] + 0.2 * (points[..., 0] > 0.5)        # a step, some noise
    query = torch.rand(2, 800, 3, generator=g)
    query[..., 2] = query[..., 2] * 0.8 - 0.2
    images = torch.rand(2, n_images, image_size, image_size, generator=g) if n_images else None
    return query, points, images


def test_a_grown_network_gives_the_narrow_ones_logits_and_its_new_channels_learn(tmp_path: Path) -> None:
    narrow = _trained_narrow(tmp_path / "narrow.pt")
    torch.manual_seed(2)
    wide = build_model(WIDE)
    logs: list[str] = []
    initialise_from(wide, str(tmp_path / "narrow.pt"), log=logs.append, grow=True)
    assert "grown wider" in logs[0]
    query, points, _ = _patch(seed=5)
    with torch.no_grad():
        torch.testing.assert_close(wide.eval()(query, points), narrow(query, points), atol=1e-4, rtol=1e-4)
    # the new feature channels are read by nothing yet, but their outgoing weights get gradients
    wide.train()
    wide(query, points).sum().backward()
    old_outputs_new_inputs = (slice(0, NARROW.decoder_hidden_dim), slice(NARROW.feature_dim, None))
    assert torch.count_nonzero(wide.decoder.fc_c[0].weight[old_outputs_new_inputs]) == 0
    assert float(wide.decoder.fc_c[0].weight.grad[old_outputs_new_inputs].abs().sum()) > 0


def test_without_init_grow_narrower_weights_are_left_out(tmp_path: Path) -> None:
    _trained_narrow(tmp_path / "narrow.pt")
    wide = build_model(WIDE)
    logs: list[str] = []
    copied = initialise_from(wide, str(tmp_path / "narrow.pt"), log=logs.append)
    assert 0 < copied < len(wide.state_dict()) and "grown" not in logs[0]


def test_a_wider_group_norm_is_refused_in_one_line(tmp_path: Path) -> None:
    _trained_narrow(tmp_path / "mono.pt", MONO)
    wide = build_model(dataclasses.replace(MONO, image_channels=32))
    with pytest.raises(InputError, match=r"init_grow from .*mono\.pt: .*bn.*cannot be grown"):
        initialise_from(wide, str(tmp_path / "mono.pt"), log=lambda m: None, grow=True)


def test_a_grown_mono_network_keeps_its_image_branch(tmp_path: Path) -> None:
    """Widths of the shared feature planes grow through the image encoder's output layers too."""
    narrow = _trained_narrow(tmp_path / "mono.pt", MONO)
    wide = build_model(dataclasses.replace(MONO, feature_dim=16, unet_start_filters=16))
    initialise_from(wide, str(tmp_path / "mono.pt"), log=lambda m: None, grow=True)
    query, points, images = _patch(seed=6, n_images=1)
    with torch.no_grad():
        torch.testing.assert_close(wide.eval()(query, points, images), narrow(query, points, images),
                                   atol=1e-4, rtol=1e-4)


def test_a_mono_grown_into_a_stereo_starts_as_the_mono_on_the_first_view(tmp_path: Path) -> None:
    """The second ortho is one more input channel of the image encoder's first convolution: grown,
    the stereo gives the mono's logits whatever the second view shows, and that view's weights learn."""
    narrow = _trained_narrow(tmp_path / "mono.pt", MONO)
    stereo = build_model(dataclasses.replace(MONO, n_images=2))
    logs: list[str] = []
    initialise_from(stereo, str(tmp_path / "mono.pt"), log=logs.append, grow=True)
    assert "1 grown wider" in logs[0]
    query, points, two_views = _patch(seed=7, n_images=2)
    other_second_view = torch.cat([two_views[:, :1], torch.rand_like(two_views[:, 1:])], dim=1)
    with torch.no_grad():
        expected = narrow(query, points, two_views[:, :1])
        torch.testing.assert_close(stereo.eval()(query, points, two_views), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(stereo(query, points, other_second_view), expected, atol=1e-4, rtol=1e-4)
    stereo.train()
    stereo(query, points, two_views).sum().backward()
    second_view = stereo.image_encoder.conv1.weight[:, 1:]
    assert torch.count_nonzero(second_view) == 0
    assert float(stereo.image_encoder.conv1.weight.grad[:, 1:].abs().sum()) > 0


def test_a_stereo_cannot_be_grown_into_a_mono(tmp_path: Path) -> None:
    _trained_narrow(tmp_path / "stereo.pt", dataclasses.replace(MONO, n_images=2))
    with pytest.raises(InputError, match=r"init_grow from .*stereo\.pt: it reads 2 ortho-image\(s\), this network 1"):
        initialise_from(build_model(MONO), str(tmp_path / "stereo.pt"), log=lambda m: None, grow=True)


def test_init_grow_needs_exactly_one_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"tiny\.yaml.*init_grow needs exactly one init_from"):
        tiny_config(tmp_path, init_grow=True)
    with pytest.raises(InputError, match="init_grow needs exactly one"):
        tiny_config(tmp_path, init_grow=True, init_from=["a.pt", "b.pt"])
    assert tiny_config(tmp_path, init_grow=True, init_from="a.pt").init_grow


def test_a_changed_kernel_is_refused_in_one_line(tmp_path: Path) -> None:
    from implicity.core.model.growth import grow_state_dict

    wide = build_model(WIDE)
    narrow = {k: v[..., :1, :1] if v.ndim == 4 else v for k, v in build_model(NARROW).state_dict().items()}
    with pytest.raises(InputError, match=r"init_grow from n\.pt: .*conv.*cannot be grown: its kernel changed"):
        grow_state_dict(wide, narrow, "n.pt")
    with pytest.raises(InputError, match="init_grow must be true or false"):
        tiny_config(tmp_path, init_grow="yes", init_from="a.pt")
