"""Checkpoint selection by the DSM a checkpoint makes on the validation split (training/selection.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from implicity.core.model import load_model, save_checkpoint
from implicity.core.shipped_models import default_model
from implicity.training.selection import export_resume_state, non_overlapping

from ..helpers.prepared import prepare_tiny

SHIPPED = default_model(0)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("prep"), stride=16.0)


def test_validation_patches_do_not_overlap(prepared):
    from implicity.training.data.store import read_manifest

    _, manifest = read_manifest(prepared)
    val = [e for e in manifest["patches"] if e["split"] == "val"]
    kept = non_overlapping(val, float(manifest["patch_size"]))
    assert 0 < len(kept) < len(val)
    for i, a in enumerate(kept):
        for b in kept[i + 1:]:
            assert abs(a["x0"] - b["x0"]) >= 32.0 or abs(a["y0"] - b["y0"]) >= 32.0


@pytest.mark.skipif(SHIPPED is None, reason="no shipped ImpliCity-0 model in models/")
def test_a_broken_checkpoint_ranks_below_the_shipped_one(prepared, tmp_path, capsys):
    """Scores come from whole reconstructions of validation patches: a network whose every logit is
    pushed towards 'occupied' raises the surface and must score worse than the shipped one; the
    tool ships the winner in float16 with every candidate's score recorded, and the prior-only
    ablation is scored beside them but can never be shipped."""
    import json
    import sys

    from implicity.core.model.checkpoint import read_checkpoint

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import select_checkpoint

    model, config = load_model(SHIPPED)
    with torch.no_grad():
        model.decoder.fc_out.bias += 6.0
    broken = save_checkpoint(tmp_path / "broken.pt", model, config)
    assert select_checkpoint.main([str(broken), str(SHIPPED), "--data", str(prepared), "--json",
                                   str(tmp_path / "scores.json"), "--copy-best", str(tmp_path / "best.pt"), "--prior-of", str(SHIPPED)]) == 0
    results = json.loads((tmp_path / "scores.json").read_text())
    base, good, bad = results["baseline 3×3 median"], results[str(SHIPPED)], results[str(broken)]
    prior = results[f"prior of {SHIPPED.name}"]
    for m in (base, good, bad, prior):
        assert np.isfinite(m["medae"]) and m["medae"] < m["mae"] + 1e-9 and 0.0 <= m["missing"] < 0.05
    assert good["medae"] < 1.0
    assert bad["score"] > good["score"] + 0.1
    assert set(good["groups"]) == {"synthetic"} and good["balanced"] == good["score"]  # no real scene here
    table = capsys.readouterr().out.split("| checkpoint |")[1]
    assert table.index(SHIPPED.name) < table.index("broken.pt")
    shipped = read_checkpoint(tmp_path / "best.pt")
    assert shipped["training"]["shipped"]["from"] == SHIPPED.name
    assert set(shipped["training"]["selection"]["scores"]) == {"baseline 3×3 median", SHIPPED.name, "broken.pt",
                                                               f"prior of {SHIPPED.name}"}
    assert all(v.dtype == torch.float16 for v in shipped["model"].values() if v.is_floating_point())
    for key, value in load_model(tmp_path / "best.pt")[0].state_dict().items():
        torch.testing.assert_close(value, load_model(SHIPPED)[0].state_dict()[key])


@pytest.mark.skipif(SHIPPED is None, reason="no shipped ImpliCity-0 model in models/")
def test_the_tool_scores_points_between_two_networks_and_options_other_than_the_default(prepared, tmp_path, capsys):
    """``--between A B T`` adds (1 − T) · A + T · B as a candidate; ``--option NAME=VALUE`` reconstructs
    every candidate with that setting (here: heights no longer kept near the points, which lets the
    broken network's raised surface through); a name that does not exist is one line, exit 2."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import select_checkpoint

    model, config = load_model(SHIPPED)
    with torch.no_grad():
        model.decoder.fc_out.bias += 6.0
    broken = save_checkpoint(tmp_path / "broken.pt", model, config)
    common = [str(broken), "--data", str(prepared), "--between", str(SHIPPED), str(broken), "0.5"]
    assert select_checkpoint.main([*common, "--json", str(tmp_path / "kept.json")]) == 0
    assert select_checkpoint.main([*common, "--json", str(tmp_path / "loose.json"), "--option",
                                   "evidence.margin=1000", "--option", "evidence.keep_margin=1000"]) == 0
    out = capsys.readouterr().out
    assert "reconstructed with evidence.margin = 1000, evidence.keep_margin = 1000" in out
    kept, loose = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("kept", "loose"))
    between = next(k for k in kept if k.endswith(f"{SHIPPED.stem}-broken-t0.5.pt"))
    assert np.isfinite(kept[between]["score"]) and kept[between]["step"] is None
    assert loose[str(broken)]["mae"] > kept[str(broken)]["mae"] + 0.5
    assert loose["baseline 3×3 median"] == kept["baseline 3×3 median"]  # the options are the model's only
    assert select_checkpoint.main([str(SHIPPED), "--data", str(prepared), "--option", "evidence.far_gap=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evidence.far_gap" in err[0] and "far_blunder_gap" in err[0]


@pytest.mark.skipif(SHIPPED is None, reason="no shipped ImpliCity-0 model in models/")
def test_a_resume_state_exports_as_a_network_checkpoint(tmp_path):
    from implicity.training.trainer.checkpointing import save_train_state

    model, _ = load_model(SHIPPED)
    state = {k: v.clone() + 0.01 for k, v in model.state_dict().items()}
    resume = save_train_state(tmp_path / "last.ckpt", {"model": state, "progress": {"step": 123, "samples": 984}})
    out = export_resume_state(resume, SHIPPED, tmp_path / "step123.pt")
    exported, config = load_model(out)
    for key, value in exported.state_dict().items():
        torch.testing.assert_close(value, state[key])
    from implicity.core.model.checkpoint import read_checkpoint

    training = read_checkpoint(out)["training"]
    assert training["step"] == 123 and training["exported_from"] == "last.ckpt"
    assert config.plane_context == load_model(SHIPPED)[1].plane_context


@pytest.mark.skipif(SHIPPED is None, reason="no shipped ImpliCity-0 model in models/")
def test_a_resume_state_with_averaged_weights_exports_the_average(tmp_path):
    """Like the run's own best.pt and final.pt (optim.ema_decay), not the weights as trained."""
    from implicity.training.trainer.checkpointing import save_train_state

    model, _ = load_model(SHIPPED)
    trained = {k: v.clone() + 0.01 for k, v in model.state_dict().items()}
    averaged = {k: v.clone() - 0.01 for k, v in model.state_dict().items()}
    resume = save_train_state(tmp_path / "last.ckpt", {"model": trained, "ema": averaged, "progress": {"step": 7}})
    exported, _ = load_model(export_resume_state(resume, SHIPPED, tmp_path / "step7.pt"))
    for key, value in exported.state_dict().items():
        torch.testing.assert_close(value, averaged[key])


@pytest.mark.skipif(SHIPPED is None or default_model(1) is None, reason="no shipped models in models/")
def test_a_resume_state_of_another_network_is_refused_in_one_line(tmp_path):
    from implicity.core.errors import InputError
    from implicity.training.trainer.checkpointing import save_train_state

    mono, _ = load_model(default_model(1))
    resume = save_train_state(tmp_path / "last.ckpt", {"model": mono.state_dict(), "progress": {"step": 5}})
    with pytest.raises(InputError, match="do not fit the network of"):
        export_resume_state(resume, SHIPPED, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_prior_only_network_outputs_the_priors_surface(tmp_path):
    """The ablation's decoder is −gain × (height above the prior), so the search's crossing is the
    prior itself; a network without a prior is refused in one line."""
    from implicity.core.errors import InputError
    from implicity.core.model import build_model, load_model_config
    from implicity.training.selection import PRIOR_ONLY_GAIN, prior_only

    cfg = load_model_config("implicity_0_bilateral_lite.yaml")
    torch.manual_seed(0)
    source = save_checkpoint(tmp_path / "net.pt", build_model(cfg))
    net, _ = load_model(prior_only(source, tmp_path / "prior.pt"))
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(1, 3000, 3, generator=g) * torch.tensor([1.0, 1.0, 0.05])
    query = torch.rand(1, 400, 3, generator=g) * torch.tensor([1.0, 1.0, 0.1])
    with torch.no_grad():
        features = net.encode(pts)
        logits = net.decode(query, features)
        from implicity.core.model.decoder import sample_plane

        rel = (query[..., 2] - sample_plane(features.prior, query[..., :2])[..., 0]) * cfg.z_std / cfg.prior_z_scale
    torch.testing.assert_close(logits, -PRIOR_ONLY_GAIN * rel, atol=1e-4, rtol=1e-4)
    window = save_checkpoint(tmp_path / "window.pt", build_model(load_model_config("implicity_0_lite.yaml")))
    with pytest.raises(InputError, match="no surface prior"):
        prior_only(window, tmp_path / "x.pt")


def test_validation_orthos_can_be_written_misregistered(tmp_path):
    """``ortho_shift_m`` moves only the orthos: same pixels, bounds moved by (east, north); the
    clouds and the reference stay where they were."""
    import rasterio

    from implicity.training.selection import validation_sets

    (tmp_path / "prep").mkdir()
    root = prepare_tiny(tmp_path / "prep", n_images=1)
    (tmp_path / "plain").mkdir()
    (tmp_path / "moved").mkdir()
    plain = validation_sets(root, tmp_path / "plain")
    moved = validation_sets(root, tmp_path / "moved", ortho_shift_m=(1.5, -2.0))
    assert len(plain) == len(moved) > 0
    for a, b in zip(plain, moved):
        assert a.extent == b.extent and np.array_equal(a.reference, b.reference, equal_nan=True)
        assert np.array_equal(np.load(a.cloud)["xyz"], np.load(b.cloud)["xyz"])
        with rasterio.open(a.orthos[0]) as src_a, rasterio.open(b.orthos[0]) as src_b:
            assert np.array_equal(src_a.read(), src_b.read())
            (l0, b0, r0, t0), (l1, b1, r1, t1) = src_a.bounds, src_b.bounds
            assert (l1 - l0, r1 - r0, b1 - b0, t1 - t0) == pytest.approx((1.5, 1.5, -2.0, -2.0))


def test_validation_orthos_can_be_written_leaning(tmp_path):
    """``ortho_lean_deg`` writes every ortho as a standard ortho of that view shows the patch (the
    prepared ortho warped by ``leaning_view`` with the patch's surface), in place; the clouds and the
    reference stay as they were, and something standing above its ground moves."""
    import rasterio

    from implicity.training.data.stereo_view import leaning_view
    from implicity.training.selection import validation_sets

    (tmp_path / "prep").mkdir()
    root = prepare_tiny(tmp_path / "prep", n_images=1)
    (tmp_path / "plain").mkdir()
    (tmp_path / "lean").mkdir()
    plain = validation_sets(root, tmp_path / "plain")
    lean = validation_sets(root, tmp_path / "lean", ortho_lean_deg=(45.0, 15.0))
    assert len(plain) == len(lean) > 0
    moved = 0
    for a, b in zip(plain, lean):
        assert a.extent == b.extent and np.array_equal(a.reference, b.reference, equal_nan=True)
        assert np.array_equal(np.load(a.cloud)["xyz"], np.load(b.cloud)["xyz"])
        assert np.isfinite(a.reference).all()  # the fixture's surface is the reference everywhere
        with rasterio.open(a.orthos[0]) as src_a, rasterio.open(b.orthos[0]) as src_b:
            assert src_a.bounds == src_b.bounds
            original, leaned = src_a.read(1), src_b.read(1)
            expected = leaning_view(original, a.reference, src_a.res[0], 45.0, 15.0)
        np.testing.assert_allclose(leaned, expected, equal_nan=True)
        moved += int(not np.array_equal(leaned, original, equal_nan=True))
    assert moved > 0


def test_validation_clouds_can_all_take_one_fattening_variant_but_never_the_held_out_one(tmp_path):
    """``fattening`` redraws only the clouds (orthos and reference as they were); the held-out variant
    and unknown names are refused before anything is written."""
    from implicity.core.errors import InputError
    from implicity.training.selection import validation_sets

    (tmp_path / "prep").mkdir()
    root = prepare_tiny(tmp_path / "prep", n_images=1)
    for name in ("plain", "directional", "held", "unknown"):
        (tmp_path / name).mkdir()
    plain = validation_sets(root, tmp_path / "plain")
    directional = validation_sets(root, tmp_path / "directional", fattening="directional")
    assert len(plain) == len(directional) > 0
    assert [s.name for s in plain] == [s.name for s in directional]
    for a, b in zip(plain, directional):
        assert np.array_equal(a.reference, b.reference, equal_nan=True)
    assert any(not np.array_equal(np.load(a.cloud)["xyz"], np.load(b.cloud)["xyz"])
               for a, b in zip(plain, directional))
    with pytest.raises(InputError, match="held out"):
        validation_sets(root, tmp_path / "held", fattening="max_mean")
    with pytest.raises(InputError, match="unknown"):
        validation_sets(root, tmp_path / "unknown", fattening="blur")
    assert not any((tmp_path / "held").iterdir()) and not any((tmp_path / "unknown").iterdir())


def test_select_checkpoint_refuses_a_view_too_steep_for_an_ortho(capsys):
    """``--ortho-lean`` with an off-nadir angle of 60° or more stops before anything is read, saying
    which option, what it got and what it takes."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import select_checkpoint

    with pytest.raises(SystemExit) as stop:
        select_checkpoint.main(["missing.pt", "--ortho-lean", "45", "75"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--ortho-lean" in err and "75" in err and "[0, 60)" in err


def test_select_checkpoint_refuses_the_held_out_fattening_before_reading_anything(capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import select_checkpoint

    for variant, why in (("max_mean", "held out"), ("blur", "not a fattening variant")):
        with pytest.raises(SystemExit) as stop:
            select_checkpoint.main(["missing.pt", "--fattening", variant])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "--fattening" in err and why in err and "directional" in err


def test_the_balanced_score_gives_the_real_sets_half_the_say():
    """Four synthetic sets with no error and one real set with 1 m everywhere: pooled, the real set is
    a fifth of the pixels (MedAE 0); balanced, it is half of the score."""
    from implicity.training.selection import grouped_metrics

    residuals = [np.zeros(100)] * 4 + [np.full(100, -1.0)]
    m = grouped_metrics(residuals, ["synthetic"] * 4 + ["real"])
    assert m["medae"] == 0.0 and m["mae"] == pytest.approx(0.2) and m["score"] == pytest.approx(0.2)
    assert m["groups"]["real"]["score"] == pytest.approx(2.0) and m["groups"]["synthetic"]["score"] == 0.0
    assert m["balanced"] == pytest.approx(1.0)


def test_interpolated_weights_lie_between_the_two_networks(tmp_path):
    """``interpolate_weights`` is the weight-wise line between two networks of one architecture: its
    ends are the networks themselves, its middle their mean; it says what it is made of; another
    architecture or a weight outside [0, 1] is refused in one line."""
    from implicity.core.errors import InputError
    from implicity.core.model import build_model, load_model_config
    from implicity.core.model.checkpoint import read_checkpoint
    from implicity.training.selection import interpolate_weights

    cfg = load_model_config("implicity_0_lite.yaml")
    torch.manual_seed(0)
    a = save_checkpoint(tmp_path / "a.pt", build_model(cfg), training={"step": 250})
    b = save_checkpoint(tmp_path / "b.pt", build_model(cfg), training={"step": 600})
    sa, sb = load_model(a)[0].state_dict(), load_model(b)[0].state_dict()
    for t in (0.0, 0.25, 1.0):
        mixed = load_model(interpolate_weights(a, b, t, tmp_path / f"m{t}.pt"))[0].state_dict()
        for k, v in sa.items():
            expected = (1 - t) * v + t * sb[k] if v.is_floating_point() else v
            torch.testing.assert_close(mixed[k], expected, atol=1e-6, rtol=0)
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)  # two different networks, not one twice
    record = read_checkpoint(tmp_path / "m0.25.pt")["training"]
    assert record["interpolated"] == {"a": "a.pt", "b": "b.pt", "t": 0.25, "steps": [250, 600]}
    assert record["step"] is None  # no training step made this network
    other = save_checkpoint(tmp_path / "o.pt", build_model(load_model_config("implicity_0_bilateral_lite.yaml")))
    with pytest.raises(InputError, match="not the same network"):
        interpolate_weights(a, other, 0.5, tmp_path / "x.pt")
    import dataclasses

    renormed = save_checkpoint(tmp_path / "n.pt", build_model(cfg), dataclasses.replace(cfg, z_std=cfg.z_std * 2))
    with pytest.raises(InputError, match=r"differ in their model config \(z_std\)"):
        interpolate_weights(a, renormed, 0.5, tmp_path / "z.pt")
    with pytest.raises(InputError, match="from 0"):
        interpolate_weights(a, b, 1.5, tmp_path / "y.pt")


def test_each_part_of_the_network_can_take_its_own_point_on_the_line(tmp_path):
    """``{"encoder": 1, "decoder": 0}`` takes the encoder from b and the decoder from a; the record says
    so; every part must be named; ``parse_interpolation`` reads the tool's text for both forms."""
    from implicity.core.errors import InputError
    from implicity.core.model import build_model, load_model_config
    from implicity.core.model.checkpoint import read_checkpoint
    from implicity.training.selection import interpolate_weights, parse_interpolation

    cfg = load_model_config("implicity_0_lite.yaml")
    torch.manual_seed(0)
    a = save_checkpoint(tmp_path / "a.pt", build_model(cfg))
    b = save_checkpoint(tmp_path / "b.pt", build_model(cfg))
    sa, sb = load_model(a)[0].state_dict(), load_model(b)[0].state_dict()
    weights = parse_interpolation("encoder=1, decoder=0")
    assert weights == {"encoder": 1.0, "decoder": 0.0} and parse_interpolation("0.5") == 0.5
    mixed = load_model(interpolate_weights(a, b, weights, tmp_path / "m.pt"))[0].state_dict()
    for k, v in mixed.items():
        torch.testing.assert_close(v, (sb if k.startswith("encoder.") else sa)[k], atol=1e-6, rtol=0)
    assert read_checkpoint(tmp_path / "m.pt")["training"]["interpolated"]["t"] == {"encoder": 1.0, "decoder": 0.0}
    with pytest.raises(InputError, match="each part"):
        interpolate_weights(a, b, {"encoder": 1.0}, tmp_path / "x.pt")
    with pytest.raises(InputError, match="PART=T"):
        parse_interpolation("encoder=one")
