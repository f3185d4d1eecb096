"""City scale (issue 14): the reconstruction cut into blocks on a local Dask cluster of 2 processes.

The same small synthetic city (200 × 150 m at 1 m, the shipped ImpliCity-0, blocks of 2 × 2
windows: 6 blocks) is reconstructed in one process and on the cluster; the DSM, the confidence and
the nodata mask must agree, also when a worker is killed mid-run; Cancel and a block that keeps
failing leave no output and no scratch folder.
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio

from implicity.core.cluster.blocks import plan_blocks, windows_per_block
from implicity.core.cluster.run import ClusterOptions, cuda_devices, gpu_worker_specs, reconstruct_on_cluster
from implicity.core.cluster.scratch import ScratchTiles, body_from_tails
from implicity.core.errors import CancelledError, ImplicityError
from implicity.core.outliers import axis_body
from implicity.core.reconstruct import ReconstructionInputs, ReconstructionOptions, reconstruct_dsm
from implicity.core.reconstruct.blending import BlendAccumulator
from implicity.core.shipped_models import default_model

from ..helpers.city import city_points, write_city_laz

distributed = pytest.importorskip("distributed")

BLOCK = 96.0  # two fast-mode windows per block side
TOL = 0.01


def _read(path: Path) -> np.ma.MaskedArray:
    with rasterio.open(path) as src:
        return src.read(1, masked=True)


def _assert_same(a: Path, b: Path) -> None:
    x, y = _read(a), _read(b)
    assert x.shape == y.shape
    assert np.array_equal(np.ma.getmaskarray(x), np.ma.getmaskarray(y)), "nodata masks differ"
    diff = np.abs(x.filled(0.0).astype(np.float64) - y.filled(0.0).astype(np.float64))
    assert diff.max() <= TOL, f"max |diff| {diff.max():.4f} m"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".part")


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """The city LAZ and its single-process DSM + confidence."""
    folder = tmp_path_factory.mktemp("city")
    laz = write_city_laz(folder / "city.laz")
    model = default_model(0)
    if model is None:
        pytest.skip("no shipped ImpliCity-0 model")
    inputs = ReconstructionInputs(points=laz, model=model, out_path=folder / "one.tif",
                                  confidence_path=folder / "one_conf.tif", resolution=1.0)
    result = reconstruct_dsm(inputs, ReconstructionOptions(device="cpu"))
    assert result.tiles > 6
    return {"laz": laz, "model": model, "dsm": folder / "one.tif", "conf": folder / "one_conf.tif"}


@pytest.fixture(scope="module")
def local_cluster():
    """Two single-threaded worker processes, shared by the tests that need to reach the workers."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    yield cluster
    cluster.close()


def _inputs(city, folder: Path, name: str) -> ReconstructionInputs:
    return ReconstructionInputs(points=city["laz"], model=city["model"], out_path=folder / f"{name}.tif",
                                confidence_path=folder / f"{name}_conf.tif", resolution=1.0)


@pytest.mark.slow
def test_cli_workers_2_same_dsm_and_confidence(city, tmp_path):
    from implicity.cli import main

    out, conf = tmp_path / "two.tif", tmp_path / "two_conf.tif"
    code = main(["reconstruct", "--points", str(city["laz"]), "--resolution", "1", "--out", str(out),
                 "--confidence-out", str(conf), "--device", "cpu", "--workers", "2", "--block-size", str(BLOCK),
                 "--quiet"])
    assert code == 0
    _assert_same(city["dsm"], out)
    _assert_same(city["conf"], conf)
    assert _read(out).mask.any(), "the empty corner must stay nodata"
    assert _leftovers(tmp_path) == []  # no scratch folder, no temporary file


@pytest.mark.slow
def test_killed_worker_same_result(city, local_cluster, tmp_path):
    """SIGKILL one busy worker after the first block came back: Dask reschedules its block."""
    client = distributed.Client(local_cluster)
    pids = client.run(os.getpid)
    killed: list[int] = []

    def progress(fraction: float, message: str) -> None:
        if killed or not message.startswith("block "):
            return
        busy = [w for w, keys in client.processing().items() if keys]
        if busy:
            killed.append(pids[busy[0]])
            os.kill(pids[busy[0]], signal.SIGKILL)

    try:
        result = reconstruct_on_cluster(_inputs(city, tmp_path, "killed"), ReconstructionOptions(device="cpu"),
                                         ClusterOptions(scheduler=local_cluster.scheduler_address, block_size=BLOCK),
                                         progress=progress)
    finally:
        client.close()
    assert killed, "no worker was busy when the first block came back"
    assert result.stats["blocks"] == 6
    _assert_same(city["dsm"], tmp_path / "killed.tif")
    _assert_same(city["conf"], tmp_path / "killed_conf.tif")
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_cancel_leaves_no_file_and_no_scratch(city, local_cluster, tmp_path):
    stop = threading.Event()

    def progress(fraction: float, message: str) -> None:
        if message.startswith("block "):
            stop.set()

    with pytest.raises(CancelledError):
        reconstruct_on_cluster(_inputs(city, tmp_path, "cancelled"), ReconstructionOptions(device="cpu"),
                               ClusterOptions(scheduler=local_cluster.scheduler_address, block_size=BLOCK),
                               progress=progress, is_cancelled=stop.is_set)
    assert stop.is_set()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_block_that_keeps_failing_is_named(city, local_cluster, tmp_path):
    with pytest.raises(ImplicityError) as info:
        reconstruct_on_cluster(_inputs(city, tmp_path, "failed"), ReconstructionOptions(device="cpu"),
                               ClusterOptions(scheduler=local_cluster.scheduler_address, block_size=BLOCK, retries=1,
                                              fail_blocks=((0, 1),)), progress=None)
    text = str(info.value)
    assert "block 0,1 (rows" in text and "failed after 2 attempt(s)" in text and "injected failure" in text
    assert "\n" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_tails_give_the_far_point_rules_of_one_process():
    """body_from_tails on the k + 1 extremes equals axis_body on all values, strays or not."""
    rng = np.random.default_rng(3)
    for strays in ([], [1e9], [-5000.0, -4990.0], [1e6] * 3):
        v = np.concatenate([rng.normal(50, 10, 20_000), np.array(strays, float)])
        rng.shuffle(v)
        k = int(0.01 * v.size) + 1
        part = np.partition(v, (k, v.size - 1 - k))
        expected = axis_body(v, max_gap=500.0)
        got = body_from_tails(part[:k + 1], part[v.size - 1 - k:], v.size, 500.0)
        assert got == expected


def test_scratch_pass_reproduces_grid_rules_and_file_order(tmp_path):
    """Streamed in chunks: the z and x/y bodies equal one process's; reads come back in file order."""
    xyz = city_points(1000.0, 2000.0, 300.0, 200.0, 0.5, seed=1)
    xyz = np.vstack([xyz, [[1000.0 + 150, 2000.0 + 100, 1e9], [0.0, 0.0, 60.0]]])
    chunks = (xyz[a:a + 7000] for a in range(0, xyz.shape[0], 7000))
    scratch = ScratchTiles.create(tmp_path)
    try:
        st = scratch.write(chunks, xyz.shape[0])
        z_expected = axis_body(xyz[:, 2], 500.0)
        assert st.z_body == z_expected and st.z_body.n_cut == 1
        kept = xyz[(xyz[:, 2] >= z_expected.lo) & (xyz[:, 2] <= z_expected.hi)]
        assert st.xy_body == (axis_body(kept[:, 0], 128.0), axis_body(kept[:, 1], 128.0))
        assert st.xy_body[0].n_below == 1  # the point at (0, 0)
        box = (1100.0, 2050.0, 1230.0, 2140.0)
        got = scratch.read(box)
        inside = kept[(kept[:, 0] >= box[0]) & (kept[:, 0] < box[2]) & (kept[:, 1] >= box[1]) & (kept[:, 1] < box[3])]
        assert np.array_equal(got, inside)  # the same points in the same (file) order
    finally:
        scratch.remove()
    assert not scratch.folder.exists()


def test_blend_sums_do_not_depend_on_order_or_split():
    """Windows added in any order, or as two blocks' sums, give bit-identical rows."""
    rng = np.random.default_rng(0)
    wins = [(r, c, rng.normal(100, 30, (12, 12)), rng.uniform(1e-3, 1, (12, 12)).astype(np.float32))
            for r in (0, 8) for c in (0, 8)]
    one = BlendAccumulator(20, False)
    for r, c, h, w in wins:
        one.add(r, c, h, w)
    rev = BlendAccumulator(20, False)
    for r, c, h, w in reversed(wins):
        rev.add(r, c, h, w)
    left, right = BlendAccumulator(12, False, base=0, col0=0), BlendAccumulator(12, False, base=0, col0=8)
    for r, c, h, w in wins:
        (left if c == 0 else right).add(r, c, h, w)
    split = BlendAccumulator(20, False)
    for part in (right, left):
        first, num, den, conf, elig = part.take(20)
        split.add_sums(first, part.col0, num, den, conf, elig)
    a, b, c = one.pop(20)[1], rev.pop(20)[1], split.pop(20)[1]
    assert np.array_equal(a, b, equal_nan=True) and np.array_equal(a, c, equal_nan=True)


def test_blocks_cover_every_window_once():
    from implicity.core.raster import GridSpec
    from implicity.core.reconstruct.tiling import plan_windows

    grid = GridSpec.from_bounds(0.0, 0.0, 1000.0, 700.0, 0.5, None)
    rows = plan_windows(grid, 64.0, 48.0, "fast", 8.0)
    n = windows_per_block(512.0, 48.0)
    assert n == 11
    blocks = plan_blocks(rows, n, 25.0)
    flat = [w for row in rows for w in row]
    assert sorted((w.row, w.col) for b in blocks for w in b.windows) == sorted((w.row, w.col) for w in flat)
    assert len(blocks) == 2 * 2
    b = blocks[0]
    assert b.read_bounds[0] <= min(w.x0 for w in b.windows) - 25.0
    assert (b.r0, b.c0) == (0, 0) and b.c1 > 11 * 48 * 2  # the decode ramp reaches into the next block


def test_one_worker_per_gpu_specs(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert cuda_devices() == ["2", "5"]
    specs = gpu_worker_specs(cuda_devices(), 4)
    assert [s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in specs.values()] == ["2", "5"]
    assert all(s["options"]["nthreads"] == 1 for s in specs.values())


@pytest.mark.cuda
def test_local_cluster_one_worker_per_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from implicity.core.cluster.run import start_local_cluster

    cluster, where = start_local_cluster(64, 1, "auto")
    try:
        client = distributed.Client(cluster)
        seen = client.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"), __import__("torch").cuda.device_count()))
        client.close()
    finally:
        cluster.close()
    assert len(seen) == len(cuda_devices())
    assert all(count == 1 for _, count in seen.values()), seen


@pytest.mark.slow
def test_workers_average_the_same_symmetric_copies(city, local_cluster, tmp_path):
    """``symmetries`` reaches the workers, which load their own network: the cluster's DSM with 2
    averaged copies is the single process's with 2 copies (and differs from one copy)."""
    options = ReconstructionOptions(device="cpu", symmetries=2)
    one = reconstruct_dsm(_inputs(city, tmp_path, "one2"), options)
    reconstruct_on_cluster(_inputs(city, tmp_path, "two2"), options,
                           ClusterOptions(scheduler=local_cluster.scheduler_address, block_size=BLOCK))
    _assert_same(one.dsm_path, tmp_path / "two2.tif")
    plain = _read(city["dsm"]).filled(0.0)
    assert np.abs(_read(tmp_path / "two2.tif").filled(0.0) - plain).max() > 0.05
