"""Errors name core parameters; the CLI renders them as its flags, the plugin as its labels."""
from __future__ import annotations

import pickle

import pytest

from implicity.cli import build_parser, flag_namer, main
from implicity.core.errors import InputError, param
from implicity.core.gridding import check_resolution, parse_extent
from implicity.core.outputs import check_output_path


def test_an_error_carries_its_parameter_and_renders_it_per_front_end() -> None:
    error = InputError(f"{param('resolution')} must be positive; or raise {param('max_pixels')}.")
    assert error.parameter == "resolution" and error.parameters == ["resolution", "max_pixels"]
    assert str(error) == "resolution must be positive; or raise max_pixels."
    labels = {"resolution": "'Resolution'", "max_pixels": "the size limit"}
    assert error.render(labels.get) == "'Resolution' must be positive; or raise the size limit."
    assert InputError("plain", parameter="extent").parameter == "extent"
    assert InputError("a file is broken").parameter is None
    again = pickle.loads(pickle.dumps(error))  # crosses process boundaries (DDP, Dask) intact
    assert again.parameter == "resolution" and str(again) == str(error)


def test_core_checks_name_the_parameter_not_a_flag(tmp_path) -> None:
    with pytest.raises(InputError) as info:
        check_resolution(float("nan"))
    assert info.value.parameter == "resolution" and "--" not in str(info.value)
    with pytest.raises(InputError) as info:
        parse_extent("1,2,3")
    assert info.value.parameter == "extent"
    with pytest.raises(InputError) as info:
        check_output_path(tmp_path / "missing" / "x.tif", parameter="residual_out")
    assert info.value.parameter == "residual_out" and str(info.value).startswith("residual_out ")


def test_the_cli_renders_parameters_as_the_sub_command_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(["reconstruct", "--points", "p.laz", "--resolution", "1", "--out", "o.tif"])
    name = flag_namer(parser, args)
    assert [name(p) for p in ("resolution", "points_crs", "orthos", "window_stride", "evidence.margin",
                              "out_path", "confidence_path", "max_pixels", "fast_search.final_step")] == [
        "--resolution", "--points-crs", "--ortho", "--stride", "--search-margin", "--out", "--confidence-out",
        "--max-pixels", "--final-step"]
    assert name("reference_search.coarse_step") == "reference_search.coarse_step"  # no flag: its own name
    args = parser.parse_args(["evaluate", "--dsm", "a.tif", "--reference", "b.tif"])
    assert flag_namer(parser, args)("json_out") == "--json"


def test_cli_error_lines_name_flags(tmp_path, capsys) -> None:
    rc = main(["baseline", "--points", str(tmp_path / "p.laz"), "--resolution", "nan", "--out",
               str(tmp_path / "o.tif")])
    err = capsys.readouterr().err
    assert rc == 2 and "--resolution must be a positive number" in err and "\u27e6" not in err
    rc = main(["evaluate", "--dsm", "a.tif", "--reference", "b.tif", "--mask", "nothing"])
    assert rc == 2 and "--mask 'nothing': use NAME=MASK.tif" in capsys.readouterr().err
