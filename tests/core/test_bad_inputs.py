"""Hostile and broken inputs (issue 10): each case gives the right result, or a one-line error with
exit code 2 — never a traceback, never a leftover file.

The reconstruction cases run the CLI with the analytic test network (its surface is the height of
the nearest input point, see ``tests.helpers.reconstruct_support``), so the right result is known exactly;
the checkpoint cases use the shipped model file, altered.
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from implicity.cli import main
from implicity.core.outputs import temporary_sibling
from implicity.core.pointcloud import PointCloud, write_point_cloud_npz
from implicity.core.reconstruct import engine
from implicity.core.shipped_models import default_model

from ..helpers.geodata import CRS_L93, REPO, write_las
from ..helpers.reconstruct_support import X0, Y0, NearestPointModel, pixel_scene, read_dsm

PYTHON = sys.executable


# ---------------------------------------------------------------------------------------------- helpers


def one_line_error(rc: int, err: str, command: str, *needles: str) -> str:
    """Assert exit 2 and a single-line error naming ``needles``; returns the error line."""
    assert rc == 2, f"exit code {rc}, stderr: {err[-500:]}"
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"implicity {command}: error: "), err
    for needle in needles:
        assert needle.lower() in last.lower(), f"{needle!r} not in: {last}"
    return last


def only(folder: Path, *names: str) -> None:
    """The folder holds exactly ``names``: no output, no hidden temporary file."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def npz(path: Path, xyz: np.ndarray) -> Path:
    write_point_cloud_npz(path, PointCloud(xyz=xyz, crs=CRS_L93, source=str(path)))
    return path


@pytest.fixture
def scene(tmp_path):
    """A 40 x 30 m scene, one point per 1 m pixel centre, as NPZ (EPSG:2154); the exact DSM."""
    cloud, truth = pixel_scene(40.0, 30.0, 1.0)
    return cloud.xyz, truth


@pytest.fixture
def analytic(monkeypatch, tmp_path):
    """Any --model file loads as the analytic network (or the one put in ``holder``)."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"analytic")
    holder = {"model": NearestPointModel()}
    monkeypatch.setattr(engine, "load_occupancy_model", lambda m, device: (holder["model"], "analytic"))
    return path, holder


def reconstruct(points: Path, model: Path, out: Path, *extra: str) -> int:
    return main(["reconstruct", "--points", str(points), "--model", str(model), "--resolution", "1",
                 "--out", str(out), "--device", "cpu", "--quiet", *extra])


# ------------------------------------------------------------------------------- stray points, sizes


@pytest.mark.parametrize("stray", [(0.0, 0.0, 0.0), (X0 + 20.0, Y0 + 15.0, 1e9)], ids=["origin", "z=1e9"])
def test_stray_point_gives_the_same_dsm(tmp_path, scene, analytic, caplog, stray):
    xyz, truth = scene
    model, _ = analytic
    clean, dirty = npz(tmp_path / "clean.npz", xyz), npz(tmp_path / "dirty.npz", np.vstack([xyz, [stray]]))
    assert reconstruct(clean, model, tmp_path / "a.tif") == 0
    assert reconstruct(dirty, model, tmp_path / "b.tif") == 0
    assert "ignored 1 of 1,201 points" in caplog.text  # a warning says how many and why
    assert np.abs(read_dsm(tmp_path / "b.tif") - read_dsm(tmp_path / "a.tif")).max() <= 0.01
    for name, cloud in (("c.tif", clean), ("d.tif", dirty)):
        assert main(["baseline", "--points", str(cloud), "--resolution", "1", "--out", str(tmp_path / name),
                     "--quiet"]) == 0
    assert np.array_equal(read_dsm(tmp_path / "c.tif"), read_dsm(tmp_path / "d.tif"), equal_nan=True)


@pytest.mark.parametrize("command", ["reconstruct", "baseline", "reference"])
def test_output_above_the_size_limit_is_refused(tmp_path, scene, analytic, capsys, command):
    xyz, _ = scene
    pts = npz(tmp_path / "p.npz", xyz)
    extra = ["--model", str(analytic[0]), "--device", "cpu"] if command == "reconstruct" else []
    base = [command, "--points", str(pts), "--out", str(tmp_path / "o.tif"), "--quiet", *extra]
    rc = main([*base, "--resolution", "1e-6"])
    one_line_error(rc, capsys.readouterr().err, command, "pixels", "--max-pixels")
    rc = main([*base, "--resolution", "1", "--extent", f"{X0},{Y0},{X0 + 1e7},{Y0 + 30}"])
    one_line_error(rc, capsys.readouterr().err, command, "10,000,000 x 30", "--max-pixels")
    rc = main([*base, "--resolution", "1", "--max-pixels", "1000"])  # 40 x 30 = 1200 px
    one_line_error(rc, capsys.readouterr().err, command, "1,200 pixels", "limit of 1,000")
    only(tmp_path, "p.npz", "model.pt")
    assert main([*base, "--resolution", "1", "--max-pixels", "1200"]) == 0


# ------------------------------------------------------------------------------- disks and files


def test_full_disk_is_a_one_line_error(tmp_path, scene, capsys):
    small = tmp_path / "small"
    small.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("mounting a tiny tmpfs needs root (the file-size-limit test covers the late failure)")
    try:
        cloud, _ = pixel_scene(200.0, 200.0, 1.0)
        pts = npz(tmp_path / "p.npz", cloud.xyz)
        rc = main(["baseline", "--points", str(pts), "--resolution", "0.5", "--out", str(small / "o.tif"),
                   "--quiet"])
        one_line_error(rc, capsys.readouterr().err, "baseline", "disk is full", "MiB")
        only(small)
    finally:
        subprocess.run(["umount", str(small)], check=False)


def _file_size_limit() -> None:  # runs in the child before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_failing_write_leaves_nothing(tmp_path):
    """A write that fails half-way (here a file-size limit, EFBIG; a full disk fails the same way)."""
    rng = np.random.default_rng(0)
    xyz = np.column_stack([X0 + rng.uniform(0, 300, 200_000), Y0 + rng.uniform(0, 300, 200_000),
                           rng.uniform(0, 50, 200_000)])
    pts = npz(tmp_path / "p.npz", xyz)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([PYTHON, "-m", "implicity.cli", "baseline", "--points", str(pts), "--resolution", "0.5",
                           "--fill", "none", "--out", str(out / "o.tif"), "--quiet"],
                          preexec_fn=_file_size_limit, capture_output=True, text=True, cwd=REPO)
    one_line_error(proc.returncode, proc.stderr, "baseline", "writing failed", "nothing was written")
    only(out)


def test_truncated_geotiffs_are_one_line_errors(tmp_path, scene, capsys):
    xyz, _ = scene
    pts = npz(tmp_path / "p.npz", xyz)
    assert main(["baseline", "--points", str(pts), "--resolution", "0.25", "--out", str(tmp_path / "d.tif"),
                 "--quiet"]) == 0
    data = (tmp_path / "d.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    rc = main(["evaluate", "--dsm", str(tmp_path / "cut.tif"), "--reference", str(tmp_path / "d.tif"),
               "--json", str(tmp_path / "e.json")])
    one_line_error(rc, capsys.readouterr().err, "evaluate", "cut.tif", "truncated or corrupt")
    (tmp_path / "head.tif").write_bytes(data[:300])
    rc = main(["evaluate", "--dsm", str(tmp_path / "d.tif"), "--reference", str(tmp_path / "head.tif")])
    one_line_error(rc, capsys.readouterr().err, "evaluate", "head.tif")
    only(tmp_path, "p.npz", "d.tif", "cut.tif", "head.tif")


def test_truncated_ortho_is_a_one_line_error(tmp_path, scene, analytic, capsys):
    xyz, _ = scene
    model, holder = analytic
    holder["model"] = NearestPointModel(n_images=1, image_size=64)
    ortho = _ortho(tmp_path / "full.tif", X0 - 10, Y0 + 40, 120, 0.5, np.random.default_rng(0).random((120, 120)))
    data = ortho.read_bytes()
    (tmp_path / "o.tif").write_bytes(data[: len(data) // 2])
    rc = reconstruct(npz(tmp_path / "p.npz", xyz), model, tmp_path / "d.tif", "--ortho", str(tmp_path / "o.tif"))
    one_line_error(rc, capsys.readouterr().err, "reconstruct", "o.tif", "truncated or corrupt")
    only(tmp_path, "p.npz", "model.pt", "full.tif", "o.tif")


def test_truncated_and_corrupt_point_clouds_are_one_line_errors(tmp_path, scene, capsys):
    xyz, _ = scene
    rng = np.random.default_rng(1)
    big = np.column_stack([X0 + rng.uniform(0, 100, 20_000), Y0 + rng.uniform(0, 100, 20_000), rng.uniform(0, 9, 20_000)])
    for name in ("c.laz", "c.las"):
        data = write_las(tmp_path / name, big).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
    data = npz(tmp_path / "c.npz", big).read_bytes()
    (tmp_path / "c.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "c.ply").write_text("ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nproperty float y\n"
                                    "property float z\nend_header\n1 2 3\n4 5 6\n")
    for name in ("c.laz", "c.las", "c.npz", "c.ply"):
        rc = main(["baseline", "--points", str(tmp_path / name), "--points-crs", "EPSG:2154", "--resolution", "1",
                   "--out", str(tmp_path / "o.tif"), "--quiet"])
        one_line_error(rc, capsys.readouterr().err, "baseline", name)
    assert not (tmp_path / "o.tif").exists()


def _big_cloud(path: Path, side: float = 192.0) -> Path:
    rng = np.random.default_rng(2)
    n = int(side * side * 4)
    xy = rng.uniform(0, side, (n, 2))
    z = 40.0 + np.where((xy[:, 0] % 40 < 20) & (xy[:, 1] % 40 < 20), 10.0, 0.0) + rng.normal(0, 0.2, n)
    return npz(path, np.column_stack([X0 + xy[:, 0], Y0 + xy[:, 1], z]))


def _start_reconstruct(pts: Path, out: Path) -> subprocess.Popen:
    model = default_model(0)
    if model is None:
        pytest.skip("no shipped model in models/")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([PYTHON, "-m", "implicity.cli", "reconstruct", "--points", str(pts), "--model",
                             str(model), "--resolution", "0.5", "--out", str(out), "--device", "cpu", "--quiet"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_part(folder: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if any(p.name.endswith(".part") for p in folder.iterdir()):
            time.sleep(0.5)  # well inside the window loop
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before writing: {proc.stderr.read()[-500:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no temporary file appeared")


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    pts = _big_cloud(tmp_path / "p.npz")
    out = tmp_path / "out"
    out.mkdir()
    proc = _start_reconstruct(pts, out / "d.tif")
    _wait_for_part(out, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "terminated (SIGTERM); no partial output was kept" in err
    only(out)


def test_leftovers_of_killed_runs_are_removed_safely(tmp_path):
    pts = _big_cloud(tmp_path / "p.npz", side=128.0)
    out = tmp_path / "out"
    out.mkdir()
    proc = _start_reconstruct(pts, out / "d.tif")
    _wait_for_part(out, proc)
    proc.send_signal(signal.SIGKILL)  # nothing can clean up after SIGKILL ...
    proc.communicate(timeout=60)
    dead = [p.name for p in out.iterdir()]
    assert dead and all(name.endswith(".part") for name in dead)
    live = temporary_sibling(out / "d.tif")  # ... a run in progress (this process) owns this one
    live.write_bytes(b"in progress")
    old = out / ".other.k3j9x0ab.tif.part"  # named by an older version, untouched for two days
    old.write_bytes(b"old")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    recent = out / ".other.q7w8e9rt.tif.part"  # the same naming, but fresh: it may be a live run
    recent.write_bytes(b"recent")
    assert main(["baseline", "--points", str(pts), "--resolution", "2", "--out", str(out / "b.tif"),
                 "--quiet"]) == 0
    only(out, "b.tif", live.name, recent.name)


# ------------------------------------------------------------------------------------------ orthos


def _ortho(path: Path, x0: float, y1: float, n: int, pixel: float, values: np.ndarray,
           nodata: float | None = None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0], count=1,
                       dtype="float32", crs=CRS_L93, transform=Affine(pixel, 0, x0, 0, -pixel, y1),
                       nodata=nodata) as dst:
        dst.write(values[None].astype(np.float32))
    return path


@pytest.mark.parametrize("case,needles", [
    ("far", ("cover", "footprint", "CRS")),
    ("nodata", ("cover", "nodata")),
    ("one_pixel", ("1 x 1 px",)),
    ("coarse", ("too coarse",)),
])
def test_useless_orthos_are_refused(tmp_path, scene, analytic, capsys, case, needles):
    xyz, _ = scene
    model, holder = analytic
    holder["model"] = NearestPointModel(n_images=1, image_size=64)
    grey = np.random.default_rng(0).uniform(10, 200, (120, 120))
    if case == "far":  # right size and pixel, 10 km east of the points
        path = _ortho(tmp_path / "o.tif", X0 + 10_000, Y0 + 40, 120, 0.5, grey)
    elif case == "nodata":
        path = _ortho(tmp_path / "o.tif", X0 - 10, Y0 + 40, 120, 0.5, np.full((120, 120), -1.0), nodata=-1.0)
    elif case == "one_pixel":
        path = _ortho(tmp_path / "o.tif", X0 - 10, Y0 + 40, 1, 60.0, np.ones((1, 1)))
    else:  # 30 m pixels for a model that sees 1 m pixels
        path = _ortho(tmp_path / "o.tif", X0 - 10, Y0 + 40, 3, 30.0, np.ones((3, 3)))
    rc = reconstruct(npz(tmp_path / "p.npz", xyz), model, tmp_path / "d.tif", "--ortho", str(path))
    one_line_error(rc, capsys.readouterr().err, "reconstruct", *needles)
    only(tmp_path, "p.npz", "model.pt", "o.tif")


def test_partial_ortho_is_accepted_with_a_warning(tmp_path, scene, analytic, capsys, caplog):
    xyz, _ = scene
    model, holder = analytic
    holder["model"] = NearestPointModel(n_images=1, image_size=64)
    grey = np.random.default_rng(0).uniform(10, 200, (60, 56))  # 28 of the 40 m: 70 %
    path = _ortho(tmp_path / "o.tif", X0, Y0 + 30, 56, 0.5, grey)
    assert reconstruct(npz(tmp_path / "p.npz", xyz), model, tmp_path / "d.tif", "--ortho", str(path)) == 0
    assert "covers only 70% of the output extent" in caplog.text
    rc = reconstruct(tmp_path / "p.npz", model, tmp_path / "e.tif", "--ortho", str(path),
                     "--min-ortho-coverage", "0.8")
    one_line_error(rc, capsys.readouterr().err, "reconstruct", "70.0%", "--min-ortho-coverage")


# ------------------------------------------------------------------------------- CRS, NaN points


@pytest.mark.parametrize("command", ["baseline", "reference"])
def test_geographic_crs_on_metric_coordinates_is_refused(tmp_path, scene, capsys, command):
    xyz, _ = scene
    pts = write_las(tmp_path / "p.laz", xyz)
    rc = main([command, "--points", str(pts), "--points-crs", "EPSG:4326", "--resolution", "1",
               "--out", str(tmp_path / "o.tif"), "--quiet"])
    one_line_error(rc, capsys.readouterr().err, command, "EPSG:4326", "degrees", "--points-crs")
    only(tmp_path, "p.laz")


def test_nan_and_infinite_points_are_dropped_with_a_word(tmp_path, scene, analytic, caplog):
    xyz, _ = scene
    bad = np.vstack([xyz, [[np.nan, Y0, 40.0], [X0, np.inf, 40.0], [X0 + 5, Y0 + 5, -np.inf]]])
    clean, dirty = npz(tmp_path / "clean.npz", xyz), npz(tmp_path / "dirty.npz", bad)
    assert reconstruct(clean, analytic[0], tmp_path / "a.tif") == 0
    assert reconstruct(dirty, analytic[0], tmp_path / "b.tif") == 0
    assert "ignored 3 of 1,203 points with NaN or infinite coordinates" in caplog.text
    assert np.array_equal(read_dsm(tmp_path / "a.tif"), read_dsm(tmp_path / "b.tif"))


# ------------------------------------------------------------------------------------- checkpoints


def _altered_checkpoint(path: Path, alter) -> Path:
    shipped = default_model(0)
    if shipped is None:
        pytest.skip("no shipped model in models/")
    raw = torch.load(shipped, map_location="cpu", weights_only=True)
    alter(raw)
    torch.save(raw, path)
    return path


def _nan_weight(raw: dict) -> None:
    key = next(k for k, v in raw["model"].items() if v.is_floating_point())
    raw["model"][key] = torch.full_like(raw["model"][key], float("nan"))


def _huge_plane(raw: dict) -> None:
    raw["model_config"]["plane_resolution"] = 10 ** 6  # builds, but every encoding wants terabytes


@pytest.mark.parametrize("alter,needles", [(_nan_weight, ("NaN", "corrupt")), (_huge_plane, ("malformed",))],
                         ids=["nan-weights", "malformed-config"])
def test_broken_checkpoints_are_one_line_errors(tmp_path, scene, capsys, alter, needles):
    xyz, _ = scene
    model = _altered_checkpoint(tmp_path / "m.pt", alter)
    rc = reconstruct(npz(tmp_path / "p.npz", xyz), model, tmp_path / "d.tif")
    one_line_error(rc, capsys.readouterr().err, "reconstruct", "m.pt", *needles)
    only(tmp_path, "p.npz", "m.pt")


# ---------------------------------------------------------------------------------------- options


@pytest.mark.parametrize("args,needles", [
    (["--search-margin", "nan"], ("--search-margin", "nan")),
    (["--keep-margin", "-1"], ("--keep-margin", "-1")),
    (["--keep-margin", "5"], ("--keep-margin 5 is wider than --search-margin 3", "at most 3")),
    (["--blunder-gap", "inf"], ("--blunder-gap",)),
    (["--far-blunder-gap", "-5"], ("--far-blunder-gap", "-5")),
    (["--despeckle", "nan"], ("--despeckle", "nan")),
    (["--final-step", "nan"], ("--final-step",)),
    (["--final-step", "0"], ("--final-step",)),
    (["--search-radius", "-1"], ("--search-radius",)),
    (["--fill-max-distance", "inf"], ("--fill-max-distance",)),
    (["--stride", "nan"], ("--stride",)),
    (["--overlap", "-2"], ("--overlap",)),
    (["--min-ortho-coverage", "1.5"], ("--min-ortho-coverage",)),
    (["--extent", "nan,0,1,1"], ("--extent",)),
    (["--threads", "two"], ("--threads", "auto, all")),
    (["--threads", "0"], ("--threads",)),
])
def test_bad_reconstruct_options_are_refused(tmp_path, scene, analytic, capsys, args, needles):
    xyz, _ = scene
    rc = reconstruct(npz(tmp_path / "p.npz", xyz), analytic[0], tmp_path / "d.tif", *args)
    one_line_error(rc, capsys.readouterr().err, "reconstruct", *needles)
    only(tmp_path, "p.npz", "model.pt")


@pytest.mark.parametrize("argv,command,needles", [
    (["baseline", "--resolution", "nan"], "baseline", ("--resolution",)),
    (["baseline", "--resolution", "1", "--outlier-threshold", "nan"], "baseline", ("--outlier-threshold",)),
    (["baseline", "--resolution", "1", "--fill-max-distance", "-1"], "baseline", ("--fill-max-distance",)),
    (["reference", "--resolution", "1", "--fill-max-distance", "nan"], "reference", ("--fill-max-distance",)),
    (["reference", "--resolution", "-0.5"], "reference", ("--resolution",)),
])
def test_bad_gridding_options_are_refused(tmp_path, scene, capsys, argv, command, needles):
    xyz, _ = scene
    pts = npz(tmp_path / "p.npz", xyz)
    rc = main([*argv, "--points", str(pts), "--out", str(tmp_path / "o.tif"), "--quiet"])
    one_line_error(rc, capsys.readouterr().err, command, *needles)
    only(tmp_path, "p.npz")


def test_bad_training_and_evaluation_options_are_refused(tmp_path, scene, capsys):
    rc = main(["train", str(REPO / "training" / "configs" / "implicity_0_lite.yaml"), "--max-steps", "-5",
               "--out-dir", str(tmp_path / "run")])
    one_line_error(rc, capsys.readouterr().err, "train", "--max-steps", "-5")
    assert not (tmp_path / "run").exists()
    xyz, _ = scene
    pts = npz(tmp_path / "p.npz", xyz)
    assert main(["baseline", "--points", str(pts), "--resolution", "1", "--out", str(tmp_path / "d.tif"),
                 "--quiet"]) == 0
    rc = main(["evaluate", "--dsm", str(tmp_path / "d.tif"), "--reference", str(tmp_path / "d.tif"),
               "--building-mask", str(tmp_path / "d.tif"), "--building-dilation", "-3"])
    one_line_error(rc, capsys.readouterr().err, "evaluate", "--building-dilation", "-3")
    rc = main(["synth-city", "--seed", "1", "--out", str(tmp_path / "city"), "--density", "nan"])
    one_line_error(rc, capsys.readouterr().err, "synth-city", "--density")
    assert not (tmp_path / "city").exists()


# ------------------------------------------------------------------------ a surface on the evidence


class PitModel(NearestPointModel):
    """The analytic network, but with a 40 m deep pit dug into a 6 m disc at the window's centre:
    a network gone wrong, like the real one at some building edges of the Pléiades cloud."""

    def decode(self, query, features):
        logits = super().decode(query, features)
        q = query[0].cpu().numpy().astype(np.float64) * 64.0
        pit = np.hypot(q[:, 0] - 32.0, q[:, 1] - 32.0) < 3.0
        return logits - torch.from_numpy(np.where(pit, self.slope * 40.0, 0.0).astype(np.float32))[None]


class EdgeSinkModel(NearestPointModel):
    """Sinks by 6 m × (1 − share of the usual points within 3 m): like the real network along the
    outer edge of a cloud, where it sees points on one side only."""

    def decode(self, query, features):
        pts, tree, _ = features
        logits = super().decode(query, features).numpy()[0].astype(np.float64)
        q = query[0].cpu().numpy().astype(np.float64)
        count = tree.query_ball_point(q[:, :2], r=3.0 / 64.0, return_length=True)
        full = np.pi * 9.0  # one point per m² in the scenes below
        sink = 6.0 * (1.0 - np.clip(count / full, 0.0, 1.0))
        return torch.from_numpy((logits - self.slope * sink).astype(np.float32))[None]


def test_a_pit_dug_by_the_network_does_not_reach_the_dsm(tmp_path, scene, analytic, capsys):
    xyz, truth = scene
    model, holder = analytic
    holder["model"] = PitModel()
    # --despeckle 0: the despeckle filter would move pixels of the pit's rim; this test counts them.
    assert reconstruct(npz(tmp_path / "p.npz", xyz), model, tmp_path / "d.tif",
                       "--confidence-out", str(tmp_path / "c.tif"), "--despeckle", "0") == 0
    dsm, conf = read_dsm(tmp_path / "d.tif"), read_dsm(tmp_path / "c.tif")
    from scipy import ndimage

    lowest_near = ndimage.minimum_filter(truth, size=7, mode="nearest")  # points within ±3 px (2.5 m)
    assert (dsm >= lowest_near - 3.0 - 1e-3).all()  # the network dug 40 m; the points allow 3
    pit = dsm < truth - 1e-3
    assert 20 <= pit.sum() <= 40  # the 6 m disc, and nothing else moved
    assert (conf[pit] == 0).all()  # the clamped pixels are flagged


def test_border_does_not_sink_where_points_are_on_one_side(tmp_path, analytic, capsys):
    cloud, truth = pixel_scene(100.0, 80.0, 1.0)
    model, holder = analytic
    holder["model"] = EdgeSinkModel()
    pts = npz(tmp_path / "p.npz", cloud.xyz)
    assert reconstruct(pts, model, tmp_path / "d.tif") == 0
    # The kept range alone already holds most of the sink: keep 3 m around the points to see it.
    assert reconstruct(pts, model, tmp_path / "raw.tif", "--no-edge-blend", "--keep-margin", "3") == 0
    band = np.zeros(truth.shape, bool)
    band[:4], band[-4:], band[:, :4], band[:, -4:] = True, True, True, True
    steered = read_dsm(tmp_path / "d.tif") - truth
    raw = read_dsm(tmp_path / "raw.tif") - truth
    assert np.median(np.abs(raw[band])) > 1.0, "the test network must sink along the border"
    assert np.median(np.abs(steered[band])) < 0.5 and np.abs(steered[band]).max() < 1.5
    assert np.abs(steered[~band]).max() < 0.5


def test_empty_corner_is_not_filled(tmp_path, analytic, capsys):
    cloud, _ = pixel_scene(80.0, 80.0, 1.0)
    lx, ly = cloud.xyz[:, 0] - X0, cloud.xyz[:, 1] - Y0
    pts = npz(tmp_path / "p.npz", cloud.xyz[lx + ly < 80.0])  # the south-west triangle only
    assert reconstruct(pts, analytic[0], tmp_path / "d.tif", "--fill", "idw", "--extent",
                       f"{X0},{Y0},{X0 + 80},{Y0 + 80}") == 0
    dsm = read_dsm(tmp_path / "d.tif")
    rows, cols = np.mgrid[0:80, 0:80]
    distance = ((cols + 0.5) + (79.5 - rows) - 80.0) / np.sqrt(2)  # to the triangle's hypotenuse
    # Beyond the cloud's outer edge, heights reach only the 2.5 m search radius (+ a pixel's diagonal).
    assert np.isnan(dsm[distance > 4.0]).all() and np.isfinite(dsm[distance < 1.0]).all()
