"""The `implicity` CLI for baseline/reference/evaluate: outputs, help, and clear errors."""
from __future__ import annotations

import subprocess
import sys

import pytest

from implicity.cli import main

from ..helpers.geodata import block_scene, write_las


@pytest.fixture
def lidar(tmp_path):
    xyz, cls, _ = block_scene(density=4.0)
    return write_las(tmp_path / "lidar.laz", xyz, cls)


def test_reference_baseline_evaluate_chain(tmp_path, lidar, capsys):
    d = tmp_path
    assert main(["reference", "--points", str(lidar), "--points-crs", "EPSG:2154", "--resolution", "1",
                 "--out", str(d / "ref.tif"), "--building-mask-out", str(d / "bld.tif"), "--quiet"]) == 0
    assert main(["baseline", "--points", str(lidar), "--points-crs", "EPSG:2154", "--resolution", "1",
                 "--statistic", "median", "--out", str(d / "base.tif"), "--quiet"]) == 0
    assert main(["evaluate", "--dsm", str(d / "base.tif"), "--reference", str(d / "ref.tif"),
                 "--building-mask", str(d / "bld.tif"), "--json", str(d / "e.json"),
                 "--residual-out", str(d / "res.tif")]) == 0
    out = capsys.readouterr().out
    assert "building" in out and "terrain" in out and "MEDAE" in out
    assert (d / "e.json").exists() and (d / "res.tif").exists()


@pytest.mark.parametrize("args,message", [
    (["baseline", "--points", "{d}/missing.laz", "--resolution", "1", "--out", "{d}/o.tif"], "not found"),
    (["baseline", "--points", "{lidar}", "--resolution", "1", "--out", "{d}/o.tif"], "--points-crs"),
    (["baseline", "--points", "{lidar}", "--points-crs", "EPSG:2154", "--resolution", "0",
      "--out", "{d}/o.tif"], "positive"),
    (["baseline", "--points", "{lidar}", "--points-crs", "EPSG:2154", "--resolution", "1",
      "--out", "{lidar}"], "refusing to overwrite an input"),
    (["baseline", "--points", "{lidar}", "--points-crs", "EPSG:2154", "--resolution", "1",
      "--out", "{d}/nofolder/o.tif"], "does not exist"),
])
def test_errors_are_one_line_exit_2_no_output(tmp_path, lidar, capsys, args, message):
    argv = [a.format(d=tmp_path, lidar=lidar) for a in args] + ["--quiet"]
    before = lidar.read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o.tif").exists()
    assert lidar.read_bytes() == before


def test_console_script_help_lists_every_option():
    exe = [sys.executable, "-m", "implicity.cli"]
    for cmd, options in {
        "baseline": ["--points", "--points-crs", "--resolution", "--out", "--statistic", "--fill"],
        "reference": ["--building-mask-out"],
        "evaluate": ["--dsm", "--reference", "--building-mask", "--residual-out", "--json"],
    }.items():
        out = subprocess.run([*exe, cmd, "--help"], capture_output=True, text=True, check=True).stdout
        for opt in options:
            assert opt in out, (cmd, opt)
