"""Checkpoints: our format round trip, the authors' files loaded as they are, and clear errors.

The reference-implementation files are synthesised from the published state-dict layouts
(tests/data/reference_state_dicts.json, vendored): random tensors of every listed shape under
``model``, plus the scalars the authors' trainer stores. No download is needed.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS

from implicity.cli import main
from implicity.core.errors import InputError
from implicity.core.model import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    ImpliCityNet,
    build_model,
    load_model,
    load_model_config,
    reference_config,
    save_checkpoint,
)
from implicity.core.model.checkpoint import describe_checkpoint
from implicity.core.pointcloud import PointCloud, write_point_cloud_npz
from implicity.core.vocabulary import VARIANT_NAMES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference_state(reference: dict[str, Any], n_images: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the authors' layout; small values so that a forward pass stays finite.

    In the authors' image encoder a width-changing block lists its ``bn4`` norm twice (``bn4.*`` and
    ``downsample.0.*`` are one module), so a real file stores one tensor under both keys; the
    synthetic file shares them the same way.
    """
    gen = torch.Generator().manual_seed(seed)
    shapes = reference[VARIANT_NAMES[n_images]]["state_dict_shapes"]
    state = {k: torch.randn(s, generator=gen) * 0.05 for k, s in shapes.items()}
    for key in state:
        if ".downsample.0." in key:
            state[key] = state[key.replace(".downsample.0.", ".bn4.")]
    return state


def save_reference_file(path: Path, state: dict[str, torch.Tensor], **extra: Any) -> Path:
    """A file as the authors' trainer writes it: state dict under 'model' and plain scalars."""
    torch.save({"model": state, "n_iter": 123_000, "epoch_it": 7, "loss_val_best": 0.1234, **extra}, path)
    return path


def _inputs(n_images: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(1, 1200, 3, generator=gen) - torch.tensor([0.0, 0.0, 0.5])
    query = torch.rand(1, 300, 3, generator=gen) - torch.tensor([0.0, 0.0, 0.5])
    images = torch.randn(1, n_images, 32, 32, generator=gen) if n_images else None
    return query, points, images


def _lite(n_images: int, seed: int = 0) -> ImpliCityNet:
    torch.manual_seed(seed)
    name = ("implicity_0_lite.yaml", "implicity_mono_lite.yaml", "implicity_stereo_lite.yaml")[n_images]
    model = build_model(load_model_config(name))
    with torch.no_grad():               # make the zero-initialised paths carry signal
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    return model.eval()


def _run(model: ImpliCityNet, n_images: int) -> torch.Tensor:
    with torch.inference_mode():
        return model(*_inputs(n_images))


# --------------------------------------------------------------------------- our format

def test_round_trip_same_outputs_and_config(tmp_path: Path) -> None:
    model = _lite(1)
    path = save_checkpoint(tmp_path / "mono.pt", model, training={"iteration": 42, "val_iou": 0.81})
    loaded, config = load_model(path)
    assert config == model.config and loaded.config == model.config
    assert not loaded.training
    torch.testing.assert_close(_run(loaded, 1), _run(model, 1), atol=0.0, rtol=0.0)
    described, meta = describe_checkpoint(path)
    assert described == model.config and meta == {"iteration": 42, "val_iou": 0.81}


def test_our_file_is_a_plain_dict_readable_with_weights_only(tmp_path: Path) -> None:
    """No pickled objects: torch.load(weights_only=True) reads everything, so loading is safe."""
    model = _lite(0)
    path = save_checkpoint(tmp_path / "m.pt", model)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert type(raw) is dict
    assert raw["format"] == CHECKPOINT_FORMAT and raw["version"] == CHECKPOINT_VERSION
    assert raw["model_config"] == dataclasses.asdict(model.config)
    assert raw["normalization"]["z_std"] == model.config.z_std
    assert set(raw["model"]) == set(model.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in raw["model"].values())
    assert not list(tmp_path.glob("*.tmp*")) and [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_half_storage_loads_as_float32_within_fp16_tolerance(tmp_path: Path) -> None:
    model = _lite(2)
    full = save_checkpoint(tmp_path / "full.pt", model)
    half = save_checkpoint(tmp_path / "half.pt", model, half=True)
    raw = torch.load(half, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw["model"].values() if v.is_floating_point())
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for name, p in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], p, rtol=1e-3, atol=1e-4, msg=name)
    expected = _run(model, 2)
    got = _run(loaded, 2)
    assert (got - expected).abs().max() <= 1e-2 * max(1.0, float(expected.abs().max()))


def test_checkpoints_from_before_a_config_switch_keep_its_default(tmp_path: Path) -> None:
    """A checkpoint written before ``plane_sampling`` existed (no key in its config) loads with the
    reference's convention it was trained with, and gives the same outputs as before."""
    model = _lite(0)
    path = save_checkpoint(tmp_path / "m.pt", model)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    del raw["model_config"]["plane_sampling"]
    torch.save(raw, tmp_path / "old.pt")
    loaded, config = load_model(tmp_path / "old.pt")
    assert config.plane_sampling == "corners"
    torch.testing.assert_close(_run(loaded, 0), _run(model, 0), atol=0.0, rtol=0.0)


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", _lite(0))
    raw = torch.load(path, weights_only=True)
    raw["version"] = CHECKPOINT_VERSION + 1
    torch.save(raw, path)
    with pytest.raises(InputError, match=r"newer than this ImpliCity") as info:
        load_model(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- the authors' files

@pytest.mark.parametrize("n_images", [0, 1, 2])
def test_reference_checkpoint_loads_strictly(tmp_path: Path, reference: dict[str, Any], n_images: int) -> None:
    """The variant and all sizes come from the state dict itself; every tensor lands where the
    authors' network had it, so outputs equal a direct load_state_dict of the same tensors."""
    state = reference_state(reference, n_images, seed=n_images)
    path = save_reference_file(tmp_path / "model_best.pt", state)
    loaded, config = load_model(path, n_images=n_images)
    assert config == dataclasses.replace(reference_config(n_images), name=VARIANT_NAMES[n_images])
    assert config.variant == VARIANT_NAMES[n_images] and loaded.n_images == n_images
    ours = loaded.state_dict()
    assert set(ours) == set(state)
    for key, value in state.items():
        assert torch.equal(ours[key], value), key
    direct = build_model(reference_config(n_images))
    result = direct.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(_run(loaded, n_images), _run(direct.eval(), n_images), atol=0.0, rtol=0.0)
    described, meta = describe_checkpoint(path)
    assert described == config
    assert meta["source"] == "reference implementation" and meta["n_iter"] == 123_000


def test_bare_reference_state_dict_and_resized_model_load(tmp_path: Path) -> None:
    """A state dict saved without the 'model' wrapper, and a narrower re-sized network, both load:
    the importer reads widths from shapes and depths from key names."""
    lite = _lite(0)
    path = tmp_path / "bare.pt"
    torch.save(lite.state_dict(), path)
    loaded, config = load_model(path)
    for field in ("feature_dim", "hidden_dim", "unet_depth", "unet_start_filters", "decoder_blocks"):
        assert getattr(config, field) == getattr(lite.config, field), field
    torch.testing.assert_close(_run(loaded, 0), _run(lite, 0), atol=0.0, rtol=0.0)


def _analytic_implicity0(reference: dict[str, Any], slope_per_m: float, bias: float) -> dict[str, torch.Tensor]:
    """A full-size ImpliCity-0 state dict whose logit is slope·(shift − z) − bias below the window's
    median height and −bias above it, so the DSM it yields is known: median − bias/slope."""
    state = reference_state(reference, 0)
    for key in state:
        if key.startswith("decoder."):
            state[key] = torch.zeros_like(state[key])
    hidden = state["decoder.fc_p.weight"].shape[0]
    state["decoder.fc_p.weight"][:, 2] = -slope_per_m * reference_config(0).z_std
    state["decoder.fc_out.weight"].fill_(1.0 / hidden)
    state["decoder.fc_out.bias"].fill_(-bias)
    return state


def test_cli_reconstruct_accepts_a_reference_implicity0_file(tmp_path: Path, reference: dict[str, Any],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`implicity reconstruct --model` takes the authors' file as is (full-size ImpliCity-0)."""
    model_path = save_reference_file(tmp_path / "model_best.pt", _analytic_implicity0(reference, 4.0, 1.0))
    rng = np.random.default_rng(0)
    x0, y0 = 700_000.0, 6_600_000.0
    xy = rng.uniform(0, 64, (4000, 2)) + [x0, y0]
    z = 100.0 + rng.normal(0.0, 0.05, len(xy))
    points = tmp_path / "pts.npz"
    cloud = PointCloud(xyz=np.column_stack([xy, z]), crs=CRS.from_epsg(2154), source="test")
    write_point_cloud_npz(points, cloud)
    out = tmp_path / "dsm.tif"
    # --no-edge-blend: along the cloud's outer edge the engine would blend in the points' own surface
    # (100 m + noise); --keep-margin 3: the analytic surface lies 0.25 m below the points, outside
    # their range. This test checks the network's crossing everywhere.
    rc = main(["reconstruct", "--points", str(points), "--model", str(model_path), "--resolution", "1.0",
               "--extent", f"{x0},{y0},{x0 + 64},{y0 + 64}", "--out", str(out), "--device", "cpu", "--quiet",
               "--no-edge-blend", "--keep-margin", "3"])
    assert rc == 0, capsys.readouterr().err
    assert "DSM written" in capsys.readouterr().out
    with rasterio.open(out) as src:
        assert (src.width, src.height) == (64, 64) and src.crs == CRS.from_epsg(2154)
        dsm = src.read(1, masked=True).filled(np.nan)
    assert np.isfinite(dsm).any()
    expected = np.median(z) - 1.0 / 4.0
    assert np.nanmax(np.abs(dsm - expected)) < 0.1     # the search's final step is 0.0625 m


# --------------------------------------------------------------------------- errors

def _expect_input_error(path: Path, pattern: str, **kwargs: Any) -> str:
    with pytest.raises(InputError, match=pattern) as info:
        load_model(path, **kwargs)
    assert str(path) in str(info.value), f"message does not name the file: {info.value}"
    return str(info.value)


def test_truncated_checkpoints_are_input_errors(tmp_path: Path, reference: dict[str, Any]) -> None:
    ours = save_checkpoint(tmp_path / "ours.pt", _lite(0))
    theirs = save_reference_file(tmp_path / "theirs.pt", reference_state(reference, 0))
    for src in (ours, theirs):
        cut = tmp_path / f"cut_{src.name}"
        data = src.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        _expect_input_error(cut, "not a readable PyTorch checkpoint.*truncated")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    _expect_input_error(empty, "not a readable PyTorch checkpoint")
    _expect_input_error(tmp_path / "missing.pt", "checkpoint file not found")


def test_random_bytes_are_an_input_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    _expect_input_error(junk, ".")


def test_random_bytes_message_says_the_file_is_corrupt(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    message = _expect_input_error(junk, ".")
    assert "not a readable PyTorch checkpoint" in message and "Python objects" not in message


class _NotAWeight:
    """A pickled object the safe loader must refuse."""


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.pt"
    torch.save({"model": {"encoder.fc_pos.weight": torch.zeros(64, 3)}, "extra": _NotAWeight()}, path)
    _expect_input_error(path, "Python objects that are not loaded for safety")


def test_non_implicity_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pt"
    torch.save({"model": torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)).state_dict()}, path)
    _expect_input_error(path, "not an ImpliCity model")
    scalars = tmp_path / "scalars.pt"
    torch.save({"n_iter": 3, "loss_val_best": 0.5}, scalars)
    _expect_input_error(scalars, "no model weights found")


def test_state_dict_with_a_missing_key(tmp_path: Path, reference: dict[str, Any]) -> None:
    state = reference_state(reference, 0)
    # a key the size inference reads
    del state["decoder.fc_out.weight"]
    _expect_input_error(save_reference_file(tmp_path / "a.pt", state),
                        r"incomplete ImpliCity state dict: 'decoder\.fc_out\.weight' is missing")
    # a key only the strict load notices
    state = reference_state(reference, 0)
    del state["decoder.blocks.2.fc_0.bias"]
    message = _expect_input_error(save_reference_file(tmp_path / "b.pt", state),
                                  r"weights do not fit the ImpliCity-0 architecture \(1 missing")
    assert "decoder.blocks.2.fc_0.bias" in message


def test_state_dict_with_a_wrong_shape(tmp_path: Path, reference: dict[str, Any]) -> None:
    state = reference_state(reference, 0)
    state["decoder.fc_c.1.weight"] = torch.zeros(32, 31)
    message = _expect_input_error(save_reference_file(tmp_path / "c.pt", state),
                                  "weights do not fit the ImpliCity-0 architecture")
    assert "decoder.fc_c.1.weight" in message


def test_mono_checkpoint_with_two_images(tmp_path: Path, reference: dict[str, Any]) -> None:
    path = save_reference_file(tmp_path / "mono.pt", reference_state(reference, 1))
    _expect_input_error(path, r"model expects 1 ortho-image \(mono\), got 2", n_images=2)
    ours = save_checkpoint(tmp_path / "ours_mono.pt", _lite(1))
    _expect_input_error(ours, r"model expects 1 ortho-image \(mono\), got 2", n_images=2)
    _expect_input_error(ours, r"model expects 1 ortho-image \(mono\), got 0", n_images=0)


def test_checkpoint_files_are_left_untouched(tmp_path: Path, reference: dict[str, Any]) -> None:
    """Loading never rewrites the user's file (the loaders only read)."""
    path = save_reference_file(tmp_path / "m.pt", reference_state(reference, 0))
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    load_model(path)
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before


def test_a_checkpoint_is_loaded_and_smoke_tested_once_per_process_until_it_changes(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    """Loading and the encode-and-decode check of a checkpoint file run on its first use; later runs
    of the same unchanged file reuse the checked network, and a file rewritten on disk is loaded and
    checked again. Only the last two files are kept."""
    from implicity.core import model as model_pkg
    from implicity.core.reconstruct import ReconstructionInputs, ReconstructionOptions, engine, reconstruct_dsm

    calls: list[str] = []
    loads: list[str] = []
    real, real_load = engine._smoke_test, model_pkg.load_model
    monkeypatch.setattr(engine, "_smoke_test", lambda *a: (calls.append(a[1]), real(*a))[1])
    monkeypatch.setattr(model_pkg, "load_model", lambda p, **k: (loads.append(Path(p).name), real_load(p, **k))[1])
    path = save_checkpoint(tmp_path / "m.pt", _lite(0))
    rng = np.random.default_rng(0)
    xyz = np.column_stack([rng.uniform(0, 20, (2000, 2)) + [700_000.0, 6_600_000.0], rng.normal(50.0, 0.1, 2000)])
    cloud = PointCloud(xyz=xyz, crs=CRS.from_epsg(2154), source="test")

    def run(name: str) -> None:
        reconstruct_dsm(ReconstructionInputs(points=cloud, model=path, out_path=tmp_path / name, resolution=1.0),
                        ReconstructionOptions(device="cpu"))

    run("a.tif")
    run("b.tif")
    assert calls == ["m.pt"]
    save_checkpoint(path, _lite(0, seed=1))
    os.utime(path, ns=(1, 1))  # a changed file, whatever the clock's resolution
    run("c.tif")
    assert calls == ["m.pt", "m.pt"] and loads == ["m.pt", "m.pt"]
    for other in ("n.pt", "o.pt"):                    # two other files push m.pt out of the cache
        path = save_checkpoint(tmp_path / other, _lite(0))
        run(f"{other}.tif")
    path = tmp_path / "m.pt"
    run("d.tif")
    assert loads == ["m.pt", "m.pt", "n.pt", "o.pt", "m.pt"] and calls == loads
