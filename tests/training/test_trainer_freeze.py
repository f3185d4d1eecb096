"""``optim.freeze`` and ``zero_init``: a new branch trained on top of a network that stays fixed."""
from __future__ import annotations

import pytest
import torch

from implicity.core.errors import InputError
from implicity.training.trainer.loop import RESUME_FILE
from implicity.training.trainer.parameters import zero_parameters

from ..helpers.tiny_trainer import final_weights, make_trainer


def test_frozen_parameters_do_not_move_and_the_others_train(tmp_path):
    trainer = make_trainer(tmp_path, optim={"freeze": ["point_mlp."]})
    before = {k: v.clone() for k, v in trainer.module.state_dict().items()}
    trainer.fit()
    after = final_weights(tmp_path)
    frozen = [k for k in before if k.startswith("point_mlp.")]
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith("head."))
    assert not any(p.requires_grad for n, p in trainer.module.named_parameters() if n.startswith("point_mlp."))


def test_a_prefix_that_names_nothing_is_refused_with_the_models_parts(tmp_path):
    with pytest.raises(InputError, match=r"optim.freeze 'pointmlp\.' names no parameter.*point_mlp\."):
        make_trainer(tmp_path, optim={"freeze": ["pointmlp."]})
    with pytest.raises(InputError, match="optim.freeze must be a list"):
        make_trainer(tmp_path, optim={"freeze": "point_mlp."})


def test_a_zeroed_image_branch_starts_as_the_network_it_extends(tmp_path):
    """Mono initialised from ImpliCity-0 with its image encoder's output layer at zero gives
    ImpliCity-0's logits exactly, whatever the ortho: training starts where ImpliCity-0 is."""
    from implicity.core.model import build_model, load_model_config, save_checkpoint
    from implicity.training.trainer.session import initialise_from

    torch.manual_seed(0)
    zero = build_model(load_model_config("implicity_0_bilateral_lite.yaml")).eval()
    path = tmp_path / "zero.pt"
    save_checkpoint(path, zero, zero.config)
    mono = build_model(load_model_config("implicity_mono_bilateral_lite.yaml")).eval()
    initialise_from(mono, str(path), log=lambda m: None)
    assert zero_parameters(mono, ["image_encoder.l1."]) == 2          # weight and bias
    g = torch.Generator().manual_seed(1)
    points = torch.rand(1, 3000, 3, generator=g) * torch.tensor([1.0, 1.0, 0.1])
    query = torch.rand(1, 500, 3, generator=g) * torch.tensor([1.0, 1.0, 0.2]) - torch.tensor([0.0, 0.0, 0.1])
    image = torch.randn(1, 1, 128, 128, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(mono(query, points, image), zero(query, points), atol=1e-6, rtol=0)
    with pytest.raises(InputError, match="zero_init 'image_encoder.l9.' names no parameter"):
        zero_parameters(mono, ["image_encoder.l9."])


def _interrupted_run(out):
    """A run stopped after 4 samples: its resume checkpoint's optimizer holds every parameter."""
    from implicity.core.errors import CancelledError

    with pytest.raises(CancelledError):
        make_trainer(out).fit(stop_after_samples=4)
    return out / RESUME_FILE


def test_a_checkpoint_whose_optimizer_holds_every_parameter_resumes_with_some_frozen(tmp_path, capsys):
    """Runs written before optim.freeze listed frozen parameters (the image encoder's unused batch
    norms) in the optimizer; they resume, and the frozen ones stay where they were."""
    path = _interrupted_run(tmp_path)
    state = torch.load(path, weights_only=True)
    assert len(state["optimizer"]["param_groups"][0]["params"]) == len(state["model"])
    del state["config"]["zero_init"]                   # written before the option existed
    torch.save(state, path)
    trainer = make_trainer(tmp_path, optim={"freeze": ["point_mlp."]})
    trainer.fit(resume=True)
    after = final_weights(tmp_path)
    assert all(torch.equal(after[k], state["model"][k]) for k in after if k.startswith("point_mlp."))
    assert any(not torch.equal(after[k], state["model"][k]) for k in after if k.startswith("head."))
    warning = capsys.readouterr().err
    assert "optim.freeze" in warning and "zero_init" not in warning  # absent = its default, not a change


def test_an_optimizer_state_that_fits_no_parameter_list_is_refused(tmp_path):
    path = _interrupted_run(tmp_path)
    state = torch.load(path, weights_only=True)
    state["optimizer"]["param_groups"][0]["params"].pop()
    torch.save(state, path)
    with pytest.raises(InputError, match=r"last.ckpt: its optimizer holds \d+ parameter tensors, this run trains \d+"):
        make_trainer(tmp_path).fit(resume=True)
