"""`implicity reconstruct`: help, a full run, the device log line, refused outputs."""
from __future__ import annotations

import numpy as np
import pytest

from implicity.cli import build_parser, main
from implicity.core.pointcloud import write_point_cloud_npz
from implicity.core.reconstruct import engine

from ..helpers.reconstruct_support import NearestPointModel, pixel_scene, read_dsm


@pytest.fixture
def points(tmp_path):
    cloud, truth = pixel_scene(40.0, 30.0, 1.0)
    path = tmp_path / "pts.npz"
    write_point_cloud_npz(path, cloud)
    return path, truth


@pytest.fixture
def analytic_model(monkeypatch, tmp_path):
    """Stand in for checkpoint loading: any --model file yields the analytic test model."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"test")
    monkeypatch.setattr(engine, "load_occupancy_model", lambda m, device: (NearestPointModel(), "analytic"))
    return path


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reconstruct", "--help"])
    text = capsys.readouterr().out
    for opt in ["--points", "--points-crs", "--ortho", "--model", "--resolution", "--out", "--extent", "--device",
                "--confidence-out", "--mode", "--stride", "--overlap", "--final-step", "--search-margin",
                "--batch-size", "--fill", "--fill-max-distance", "--precision", "--quiet"]:
        assert opt in text
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions[0].choices["reconstruct"]._actions
               if a.dest == "help")
    assert sub is not None
    for action in parser._subparsers._group_actions[0].choices["reconstruct"]._actions:
        assert action.help, f"{action.option_strings} has no help"


def test_cli_run_writes_dsm_and_logs_device(tmp_path, points, analytic_model, capsys):
    pts, truth = points
    out, conf = tmp_path / "dsm.tif", tmp_path / "conf.tif"
    rc = main(["reconstruct", "--points", str(pts), "--model", str(analytic_model), "--resolution", "1",
               "--out", str(out), "--confidence-out", str(conf), "--device", "cpu", "--quiet"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "Device: cpu (requested with --device cpu)" in captured.out
    err = np.abs(read_dsm(out) - truth)
    # Beside the box's walls on this 1 m grid's steepest slopes (0.4 m per pixel) a ground pixel can
    # agree with one neighbour only and take its 3 x 3 median: off by at most that slope step.
    assert np.mean(err > 0.0625) < 0.005 and err.max() < 0.45
    assert conf.exists()
    exact = tmp_path / "exact.tif"
    assert main(["reconstruct", "--points", str(pts), "--model", str(analytic_model), "--resolution", "1",
                 "--out", str(exact), "--device", "cpu", "--quiet", "--despeckle", "0"]) == 0
    assert np.abs(read_dsm(exact) - truth).max() <= 0.0625


@pytest.mark.parametrize("which", ["points", "model", "confidence"])
def test_cli_refuses_to_overwrite_an_input(tmp_path, points, analytic_model, capsys, which):
    pts, _ = points
    out = tmp_path / "dsm.tif"
    args = ["reconstruct", "--points", str(pts), "--model", str(analytic_model), "--resolution", "1", "--quiet"]
    if which == "points":
        args += ["--out", str(pts)]
    elif which == "model":
        args += ["--out", str(analytic_model)]
    else:
        args += ["--out", str(out), "--confidence-out", str(out)]
    before = pts.read_bytes()
    assert main(args) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert pts.read_bytes() == before and not out.exists()


def test_cli_reports_bad_device(tmp_path, points, analytic_model, capsys):
    pts, _ = points
    rc = main(["reconstruct", "--points", str(pts), "--model", str(analytic_model), "--resolution", "1",
               "--out", str(tmp_path / "d.tif"), "--device", "cuda:3", "--quiet"])
    assert rc == 2 and "--device" in capsys.readouterr().err


def test_cli_averages_symmetric_copies_when_asked(tmp_path, points, monkeypatch, capsys):
    """--symmetries 4 reaches the engine (a tilt across each window averages out) and a count
    that is not offered is an argparse error, not a traceback."""
    pts, truth = points
    model = tmp_path / "model.pt"
    model.write_bytes(b"test")
    tilted = NearestPointModel(x_bias=3.0)
    monkeypatch.setattr(engine, "load_occupancy_model", lambda m, device: (tilted, "analytic"))
    out = tmp_path / "dsm.tif"
    base = ["reconstruct", "--points", str(pts), "--model", str(model), "--resolution", "1", "--device", "cpu",
            "--quiet", "--despeckle", "0", "--search-margin", "20", "--keep-margin", "20", "--no-edge-blend"]
    assert main([*base, "--out", str(out), "--symmetries", "4"]) == 0
    assert np.abs(read_dsm(out) - truth).max() <= 0.0625
    assert tilted.encoded == 1 + 4  # the load check, then one 64 m window in 4 copies
    with pytest.raises(SystemExit) as exc:
        main([*base, "--out", str(tmp_path / "bad.tif"), "--symmetries", "3"])
    assert exc.value.code == 2 and "--symmetries" in capsys.readouterr().err
