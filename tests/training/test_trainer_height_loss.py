"""``loss.height_weight``: the L1 error of whole columns' heights, the quantity a DSM is made of."""
from __future__ import annotations

import math

import pytest
import torch

from implicity.core.errors import InputError
from implicity.training.trainer.loss import column_height_loss, column_queries

from ..helpers.tiny_trainer import Z_STD, TinyNet, TinyPatches, final_weights, make_trainer, mean_over_fresh_samples


def _terraced_dsm(rows: int = 8) -> torch.Tensor:
    """(1, R, R) normalised heights: each column of pixels one level higher than the one west of it."""
    dsm = torch.arange(rows, dtype=torch.float32).repeat(rows, 1)[None] * 0.1
    dsm[0, 0, 0] = float("nan")
    return dsm


def _step_logits(query: torch.Tensor, dsm: torch.Tensor, lowered: float = 0.0) -> torch.Tensor:
    """Logits of a sharp occupancy step at the DSM's height of each query's pixel, minus ``lowered``."""
    rows = dsm.shape[-1]
    col = (query[..., 0] * rows).floor().long().clamp(0, rows - 1)
    row = ((1.0 - query[..., 1]) * rows).floor().long().clamp(0, rows - 1)
    surface = dsm[0][row, col] - lowered
    return 200.0 * (surface - query[..., 2])


def test_columns_stand_inside_their_pixel_and_span_twice_the_range_around_its_height() -> None:
    torch.manual_seed(0)
    dsm = _terraced_dsm()
    query, height, lower, counted, step = column_queries(dsm, n_columns=300, n_samples=12, half_range=0.3)
    assert query.shape == (1, 300 * 12, 3) and height.shape == lower.shape == counted.shape == (1, 300)
    assert math.isclose(step, 0.05) and bool((counted == 1).all())
    columns = query.reshape(1, 300, 12, 3)
    assert torch.equal(columns[..., 0], columns[..., :1, 0].expand_as(columns[..., 0]))  # vertical
    col = (columns[..., 0, 0] * 8).floor().long()
    row = ((1.0 - columns[..., 0, 1]) * 8).floor().long()
    assert torch.allclose(dsm[0][row, col], height)              # the height of the pixel the column stands in
    assert bool(torch.isfinite(height).all())                     # the NaN pixel is never drawn
    z = columns[..., 2]
    assert bool((z[..., 0] >= lower).all()) and bool((z[..., -1] <= lower + 0.6 + 1e-6).all())
    assert bool(((height - lower) >= 0.15 - 1e-6).all()) and bool(((height - lower) <= 0.45 + 1e-6).all())


def test_centred_columns_have_the_true_height_in_their_middle_and_cost_a_soft_centred_profile_nothing() -> None:
    torch.manual_seed(3)
    dsm = _terraced_dsm()
    query, height, lower, counted, step = column_queries(dsm, n_columns=500, n_samples=16, half_range=0.3, jitter=0.0)
    assert torch.allclose(height - lower, torch.full_like(height, 0.3))
    soft = _step_logits(query, dsm) / 100.0                      # logit 2 per normalised unit: 1 m per 0.2
    centred = column_height_loss(soft, height, lower, counted, step, Z_STD)
    query, *off_centre = column_queries(dsm, n_columns=500, n_samples=16, half_range=0.3, jitter=0.5)
    assert float(centred) < 0.5 * float(column_height_loss(_step_logits(query, dsm) / 100.0, *off_centre, Z_STD))


def test_a_sharp_step_at_the_true_height_costs_nothing_and_a_lowered_one_costs_its_drop() -> None:
    torch.manual_seed(1)
    dsm = _terraced_dsm()
    query, *columns = column_queries(dsm, n_columns=4000, n_samples=16, half_range=0.3)
    exact = column_height_loss(_step_logits(query, dsm), *columns, z_std=Z_STD)
    lowered = column_height_loss(_step_logits(query, dsm, lowered=0.05), *columns, z_std=Z_STD)
    spacing_m = 0.6 / 16 * Z_STD
    assert float(exact) < 0.5 * spacing_m                         # only the stratified sampling's rounding
    assert abs(float(lowered) - 0.05 * Z_STD) < 0.5 * spacing_m   # 0.5 m too low costs ~0.5 m


def test_a_dsm_with_no_valid_pixel_counts_no_column() -> None:
    dsm = torch.cat([_terraced_dsm(), torch.full((1, 8, 8), float("nan"))])
    query, height, lower, counted, step = column_queries(dsm, n_columns=10, n_samples=4, half_range=0.3)
    assert bool((counted[0] == 1).all()) and bool((counted[1] == 0).all()) and bool(torch.isfinite(query).all())
    logits = torch.zeros(2, 40)
    alone = column_height_loss(logits[:1], height[:1], lower[:1], counted[:1], step, Z_STD)
    assert math.isclose(float(column_height_loss(logits, height, lower, counted, step, Z_STD)), float(alone),
                        rel_tol=1e-6)


def test_the_gradient_raises_a_surface_that_is_too_low() -> None:
    torch.manual_seed(2)
    dsm = _terraced_dsm()
    query, *columns = column_queries(dsm, n_columns=50, n_samples=16, half_range=0.3)
    logits = (_step_logits(query, dsm, lowered=0.1) / 40.0).requires_grad_(True)   # a soft step 1 m too low
    column_height_loss(logits, *columns, z_std=Z_STD).backward()
    assert float(logits.grad.sum()) < 0                          # descent makes the column more occupied


def _column_error_m(weights: dict[str, torch.Tensor]) -> float:
    """The height loss of a trained TinyNet on fresh samples (metres)."""
    def error(net: TinyNet, sample: dict) -> float:
        query, *columns = column_queries(torch.from_numpy(sample["dsm"])[None], n_columns=400, n_samples=16,
                                         half_range=0.3)
        return float(column_height_loss(net(query, torch.from_numpy(sample["points"])[None]), *columns, z_std=Z_STD))
    return mean_over_fresh_samples(weights, error)


def test_training_with_the_height_loss_leaves_the_columns_heights_closer(tmp_path) -> None:
    schedule = {"max_steps": 30}
    make_trainer(tmp_path / "plain", schedule=schedule).fit()
    make_trainer(tmp_path / "height", schedule=schedule,
                 loss={"height_weight": 5.0, "height_range_m": 3.0, "height_columns": 64}).fit()
    plain = _column_error_m(final_weights(tmp_path / "plain"))
    height = _column_error_m(final_weights(tmp_path / "height"))
    assert height < 0.85 * plain, (height, plain)   # 0.70-0.80 for seeds 1, 3, 5, 11


def test_height_sources_limit_the_columns_to_the_samples_of_those_sources(tmp_path) -> None:
    """A sample whose source is not listed trains as without the loss; a listed one as with it."""
    height = {"height_weight": 5.0, "height_columns": 64}
    lidar = ("nimes", "nimes", "lidar")

    def run(name: str, loss: dict, keys: tuple[str, ...] | None) -> dict[str, torch.Tensor]:
        make_trainer(tmp_path / name, dataset=TinyPatches(seed=3, source_keys=keys), loss=loss).fit()
        return final_weights(tmp_path / name)

    plain = run("plain", {}, lidar)
    everywhere = run("everywhere", height, lidar)
    listed = run("listed", {**height, "height_sources": ["lidar"]}, lidar)
    unlisted = run("unlisted", {**height, "height_sources": ["lidar"]}, ("synth_seed0", "synth", "synthetic"))
    unnamed = run("unnamed", {**height, "height_sources": ["nimes"]}, None)
    assert all(torch.equal(listed[k], everywhere[k]) for k in plain)
    assert all(torch.equal(unlisted[k], plain[k]) and torch.equal(unnamed[k], plain[k]) for k in plain)
    assert not all(torch.equal(everywhere[k], plain[k]) for k in plain)


@pytest.mark.parametrize("loss", [{"height_weight": -1.0}, {"height_weight": True}, {"height_columns": 0},
                                  {"height_samples": 2.5}, {"height_range_m": 0.0}, {"height_range_m": "3"},
                                  {"height_jitter": 1.5}, {"height_jitter": -0.1}, {"height_sources": []},
                                  {"height_sources": "lidar"}, {"height_sources": [""]}])
def test_bad_height_loss_settings_are_refused_before_training(tmp_path, loss) -> None:
    with pytest.raises(InputError, match=r"loss\.height"):
        make_trainer(tmp_path, loss=loss)
