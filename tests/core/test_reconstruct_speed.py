"""The fast mode's machinery: column decoding equals full decoding, the guided search finds the
crossing in few queries, and the CPU threads follow the machine's load."""
from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pytest
import torch

from implicity.core.model import build_model, load_model_config
from implicity.core.reconstruct import ReconstructionInputs, ReconstructionOptions, reconstruct_dsm
from implicity.core.reconstruct.search import ABOVE, BELOW, guided_search
from implicity.core.reconstruct.threads import ThreadGovernor, available_cores

from ..helpers.reconstruct_support import NearestPointModel, pixel_scene, read_dsm


@pytest.mark.parametrize("config", ["implicity_0_residual_lite.yaml", "implicity_mono_lite.yaml"])
def test_column_decoder_equals_the_full_decoder(config):
    torch.manual_seed(0)
    model = build_model(load_model_config(config)).eval()
    for p in model.parameters():  # random, non-zero residual branches
        torch.nn.init.normal_(p, std=0.2)
    pts = torch.rand(1, 500, 3) - torch.tensor([0.0, 0.0, 0.5])
    images = torch.rand(1, model.n_images, model.config.image_size, model.config.image_size) \
        if model.n_images else None
    with torch.no_grad():
        features = model.encode(pts, images)
        xy = torch.rand(40, 2)
        z = torch.rand(40, 7) - 0.5
        full = model.decode(torch.cat([xy[:, None, :].expand(40, 7, 2), z[..., None]], -1).reshape(1, -1, 3),
                            features).reshape(40, 7)
        cols = model.decode_columns(xy, features)
        part = cols(torch.tensor([3, 5, 39]), z[[3, 5, 39]])
    assert torch.allclose(cols(torch.arange(40), z), full, atol=1e-5)
    assert torch.allclose(part, full[[3, 5, 39]], atol=1e-5)


def test_guided_search_finds_the_highest_crossing_in_few_queries():
    rng = np.random.default_rng(0)
    n = 2000
    surface = rng.uniform(10, 30, n)
    guess = surface + rng.normal(0, 0.4, n)  # the points' surface, off by decimetres
    guess[:100] += 6.0  # and badly wrong on a few pixels (a wall, a tree)
    calls = []

    def evaluate(pixels, z):  # a smooth, non-linear logit across the surface
        calls.append(z.size)
        return (8.0 * np.tanh((surface[pixels, None] - z) / 1.5)).astype(np.float32)

    lo, hi = surface - 8.0, surface + 8.0
    res = guided_search(evaluate, np.arange(n), lo, hi, guess, final_step=0.0625)
    assert (res.status == 0).all()
    assert np.abs(res.height - surface).max() < 0.01
    assert res.queries / n < 7.0  # bisection from the envelope needs ~12
    hi_low = surface - 1.0  # the surface is above the envelope: "above"; below it: "below"
    above = guided_search(evaluate, np.arange(n), lo, hi_low, guess, final_step=0.0625)
    assert (above.status == ABOVE).all()
    below = guided_search(evaluate, np.arange(n), surface + 1.0, surface + 9.0, guess, final_step=0.0625)
    assert (below.status == BELOW).all()


def test_guided_and_bisection_fast_modes_agree(tmp_path):
    cloud, truth = pixel_scene(70.0, 60.0, 0.5)
    dsms = {}
    for strategy in ("guided", "bisection"):
        from implicity.core.reconstruct import FastSearchOptions

        opts = ReconstructionOptions(device="cpu", fast_search=FastSearchOptions(strategy=strategy))
        out = tmp_path / f"{strategy}.tif"
        reconstruct_dsm(ReconstructionInputs(points=cloud, model=NearestPointModel(), out_path=out, resolution=0.5),
                        opts)
        dsms[strategy] = read_dsm(out)
    assert np.abs(dsms["guided"] - dsms["bisection"]).max() < 0.02
    assert np.abs(dsms["guided"] - truth).max() < 0.0625


def _spin(stop, started) -> None:
    started.set()
    while not stop.is_set():
        pass


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 or more cores to leave one to a competitor")
def test_threads_leave_the_busy_core_to_a_competitor():
    before = torch.get_num_threads()
    governor = ThreadGovernor("auto", min_interval=0.0)
    ctx = mp.get_context("spawn")
    stop, started = ctx.Event(), ctx.Event()
    spinner = ctx.Process(target=_spin, args=(stop, started), daemon=True)
    spinner.start()
    try:
        assert started.wait(60), "the competing process did not start"
        time.sleep(0.2)
        governor.update()  # starts the measurement window once the spinner runs
        time.sleep(1.0)
        threads = governor.update()
    finally:
        stop.set()
        spinner.join(5)
        governor.restore()
    assert 1 <= threads <= available_cores() - 1
    assert torch.get_num_threads() == before
    assert ThreadGovernor(1).update() == 1 and ThreadGovernor("all").update() == available_cores()
    torch.set_num_threads(before)


def test_a_run_gives_torch_its_thread_count_back(tmp_path):
    cloud, _ = pixel_scene(30.0, 30.0, 1.0)
    before = torch.get_num_threads()
    reconstruct_dsm(ReconstructionInputs(points=cloud, model=NearestPointModel(), out_path=tmp_path / "d.tif",
                                         resolution=1.0), ReconstructionOptions(device="cpu", threads=1))
    assert torch.get_num_threads() == before
