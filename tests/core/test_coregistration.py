"""Co-registration of a DSM to its reference before differencing (``evaluate --coregister``)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from implicity.cli import main
from implicity.core.coregistration import Coregistration, estimate_shift, shift_dsm
from implicity.core.errors import InputError
from implicity.core.evaluation import evaluate_dsm
from implicity.core.raster import GridSpec, write_geotiff

from ..helpers.geodata import CRS_L93

RES = 0.5


def _city(shape=(160, 200)) -> np.ndarray:
    """Rolling terrain with box buildings: slopes and edges in every direction."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    surface = 5 + 0.02 * x + 2 * np.sin(x / 15) * np.cos(y / 11)
    for r0, c0, h in ((20, 30, 12.0), (90, 120, 8.0), (110, 20, 20.0), (50, 150, 15.0)):
        surface[r0:r0 + 25, c0:c0 + 30] += h
    return surface.astype(np.float32)


def _displaced(reference: np.ndarray, dx: float, dy: float, dz: float) -> np.ndarray:
    """A DSM that is ``reference`` moved by (−dx, −dy, −dz): (dx, dy, dz) moves it back."""
    return shift_dsm(reference, Coregistration(-dx, -dy, -dz, 0), RES)


def test_shift_dsm_moves_east_north_and_up():
    ref = np.zeros((10, 10), np.float32)
    ref[4, 4] = 1.0
    moved = shift_dsm(ref, Coregistration(dx=2 * RES, dy=RES, dz=0.5, pixels=0), RES)
    # one pixel north = one row up, two pixels east = two columns right
    assert moved[3, 6] == pytest.approx(1.5) and moved[4, 4] == pytest.approx(0.5)
    assert np.isnan(moved[:, :2]).all() and np.isnan(moved[-1]).all()  # nothing is known beyond the raster
    ref[4, 5] = np.nan  # a hole: whole-pixel moves keep its neighbours, fractional ones lose them
    assert shift_dsm(ref, Coregistration(0.0, 0.0, 0.0, 0), RES)[4, 4] == 1.0
    assert np.isnan(shift_dsm(ref, Coregistration(-RES / 2, 0.0, 0.0, 0), RES)[4, 4])


@pytest.mark.parametrize("dx,dy,dz", [(0.625, -0.25, 0.4), (-1.0, 0.75, -0.3), (0.0, 0.0, 0.2)])
def test_a_displaced_dsm_is_moved_back(dx, dy, dz):
    ref = _city()
    dsm = _displaced(ref, dx, dy, dz)
    shift = estimate_shift(dsm, ref, RES, max_shift=2.0)
    # within the search's finest step (1/8 px); the displaced DSM was itself resampled bilinearly
    assert (shift.dx, shift.dy) == pytest.approx((dx, dy), abs=RES / 8 + 1e-9)
    assert shift.dz == pytest.approx(dz, abs=0.01)
    before = np.nanmean(np.abs(dsm - ref))
    after = np.nanmean(np.abs(shift_dsm(dsm, shift, RES) - ref))
    assert after < 0.25 * before


def test_a_flat_surface_keeps_a_zero_horizontal_shift_and_the_search_stays_within_bounds():
    flat = np.full((60, 60), 3.0, np.float32)
    shift = estimate_shift(flat + 0.2, flat, RES)
    assert (shift.dx, shift.dy, shift.dz) == pytest.approx((0.0, 0.0, -0.2), abs=1e-6)
    ref = _city()
    far = estimate_shift(_displaced(ref, 3.0, 0.0, 0.0), ref, RES, max_shift=1.0)
    assert np.hypot(far.dx, far.dy) <= 1.0 + 1e-9


def test_bad_max_shift_is_refused():
    ref = _city((40, 40))
    with pytest.raises(InputError, match="max_shift"):
        estimate_shift(ref, ref, RES, max_shift=-1.0)
    with pytest.raises(InputError, match="at most 16 are searched"):  # a search that would not end
        estimate_shift(ref, ref, RES, max_shift=100.0)


def test_evaluate_reports_the_shift_and_metrics_after_it(tmp_path):
    ref = _city()
    grid = GridSpec.from_bounds(1000.0, 2000.0, 1000.0 + ref.shape[1] * RES, 2000.0 + ref.shape[0] * RES, RES, CRS_L93)
    ref_path = write_geotiff(tmp_path / "ref.tif", ref, grid)
    dsm_path = write_geotiff(tmp_path / "dsm.tif", _displaced(ref, 0.5, 0.25, -0.3), grid)
    raw = evaluate_dsm(dsm_path, ref_path)
    co = evaluate_dsm(dsm_path, ref_path, coregister=True, json_out=tmp_path / "e.json", html_out=tmp_path / "e.html")
    assert raw.coregistration is None
    assert (co.coregistration.dx, co.coregistration.dy) == pytest.approx((0.5, 0.25), abs=RES / 8 + 1e-9)
    assert co.regions["overall"].mae < 0.25 * raw.regions["overall"].mae
    assert abs(co.regions["overall"].median) < 0.01 < abs(raw.regions["overall"].median)
    assert json.loads((tmp_path / "e.json").read_text())["coregistration"]["dz"] == pytest.approx(-0.3, abs=0.01)
    assert "Co-registered" in co.as_table() and "Co-registered" in (tmp_path / "e.html").read_text()


def test_cli_coregister_prints_the_shift_and_refuses_a_bad_max_shift(tmp_path, capsys):
    ref = _city((60, 60))
    grid = GridSpec.from_bounds(0.0, 0.0, 30.0, 30.0, RES, CRS_L93)
    ref_path = write_geotiff(tmp_path / "ref.tif", ref, grid)
    dsm_path = write_geotiff(tmp_path / "dsm.tif", _displaced(ref, 0.5, 0.0, 0.0), grid)
    assert main(["evaluate", "--dsm", str(dsm_path), "--reference", str(ref_path), "--coregister"]) == 0
    assert "dx = +0.500" in capsys.readouterr().out
    assert main(["evaluate", "--dsm", str(dsm_path), "--reference", str(ref_path), "--coregister",
                 "--max-shift", "-2"]) == 2
    err = capsys.readouterr().err
    assert "--max-shift" in err and "Traceback" not in err
