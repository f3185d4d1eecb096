"""``loss.monotone_weight``: the 2.5D prior (occupancy never rises with height) as a training penalty."""
from __future__ import annotations

import math

import pytest
import torch

from implicity.core.errors import InputError
from implicity.training.trainer.loss import monotone_penalty, raised_queries

from ..helpers.tiny_trainer import TinyNet, final_weights, make_trainer, mean_over_fresh_samples


def test_penalty_is_the_mean_rise_of_occupancy_over_counted_pairs() -> None:
    low = torch.tensor([[0.0, 2.0, -1.0, 1.0]])
    high = torch.tensor([[1.0, -2.0, 1.0, 3.0]])
    weight = torch.tensor([[1.0, 1.0, 0.5, 0.0]])          # the last pair has no valid reference
    rise = (torch.sigmoid(high) - torch.sigmoid(low)).clamp_min(0)[0]
    assert math.isclose(float(monotone_penalty(low, high, weight)), float(rise[:3].sum() / 3), rel_tol=1e-6)
    assert math.isclose(float(monotone_penalty(low, high)), float(rise.mean()), rel_tol=1e-6)
    # a column that is occupied below and empty above costs nothing
    assert float(monotone_penalty(torch.tensor([[3.0, 0.5]]), torch.tensor([[-3.0, 0.4]]))) == 0.0


def test_penalty_gradient_lowers_the_upper_point_and_raises_the_lower_one() -> None:
    low = torch.tensor([[-1.0]], requires_grad=True)
    high = torch.tensor([[1.0]], requires_grad=True)
    monotone_penalty(low, high).backward()
    assert high.grad[0, 0] > 0 > low.grad[0, 0]        # descent moves high down, low up


def test_raised_queries_move_only_z_within_the_range() -> None:
    torch.manual_seed(0)
    q = torch.rand(2, 500, 3)
    up = raised_queries(q, 0.1, 0.3)
    assert torch.equal(up[..., :2], q[..., :2])
    dz = up[..., 2] - q[..., 2]
    assert float(dz.min()) >= 0.1 - 1e-6 and float(dz.max()) <= 0.3 + 1e-6 and float(dz.std()) > 0.03


def _mean_rise(weights: dict[str, torch.Tensor]) -> float:
    """The penalty of a trained TinyNet on fresh samples and pairs 0.5-3 m apart (Z_STD 10 m)."""
    def rise(net: TinyNet, sample: dict) -> float:
        q, feats = torch.from_numpy(sample["query"])[None], net.encode(torch.from_numpy(sample["points"])[None], None)
        return float(monotone_penalty(net.decode(q, feats), net.decode(raised_queries(q, 0.05, 0.3), feats)))
    return mean_over_fresh_samples(weights, rise, n_query=2000)


def test_training_with_the_penalty_leaves_columns_closer_to_monotone(tmp_path) -> None:
    make_trainer(tmp_path / "plain").fit()
    make_trainer(tmp_path / "monotone", loss={"monotone_weight": 20.0, "monotone_dz_m": [0.5, 3.0]}).fit()
    plain, monotone = _mean_rise(final_weights(tmp_path / "plain")), _mean_rise(final_weights(tmp_path / "monotone"))
    assert monotone < 0.5 * plain


@pytest.mark.parametrize("loss", [{"monotone_weight": -1.0}, {"monotone_weight": "yes"},
                                  {"monotone_dz_m": [2.0, 1.0]}, {"monotone_dz_m": [0.0, 1.0]},
                                  {"monotone_dz_m": [0.5]}])
def test_bad_penalty_settings_are_refused_before_training(tmp_path, loss) -> None:
    with pytest.raises(InputError, match=r"loss\.monotone"):
        make_trainer(tmp_path, loss=loss)
