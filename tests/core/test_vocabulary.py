"""core/vocabulary.py: one torch-free source for the choices the CLI, core and the plugin accept."""
from __future__ import annotations

import argparse
import subprocess
import sys
import typing

import pytest

from implicity.cli import build_parser
from implicity.core import gridding, vocabulary
from implicity.core.baseline import check_gridding_options
from implicity.core.errors import InputError


def test_vocabulary_imports_without_torch() -> None:
    code = "import sys, implicity.core.vocabulary, implicity.core.normalization; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_choices_come_from_the_literal_types_and_defaults_are_choices() -> None:
    assert vocabulary.FILL_METHODS == typing.get_args(vocabulary.FillMethod) == ("idw", "nearest", "none")
    assert vocabulary.STATISTICS == ("max", "median", "mean", "min")
    assert vocabulary.MODES == ("fast", "reference")
    for default, choices in ((vocabulary.DEFAULT_FILL, vocabulary.FILL_METHODS),
                             (vocabulary.DEFAULT_STATISTIC, vocabulary.STATISTICS),
                             (vocabulary.DEFAULT_MODE, vocabulary.MODES),
                             (vocabulary.DEFAULT_PRECISION, vocabulary.PRECISIONS),
                             (vocabulary.DEFAULT_DEVICE, vocabulary.DEVICE_CHOICES)):
        assert default in choices
    assert gridding.FillMethod is vocabulary.FillMethod and gridding.Statistic is vocabulary.Statistic
    assert [vocabulary.variant_name(n) for n in vocabulary.IMAGE_COUNTS] == [
        "ImpliCity-0", "ImpliCity-mono", "ImpliCity-stereo"]
    assert vocabulary.choice_list(("a", "b", "c")) == "a, b or c"


def _choices(command: str) -> dict[str, tuple]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {a.dest: (tuple(a.choices), a.default) for a in sub._actions if a.choices is not None}


def test_argparse_choices_and_defaults_are_the_vocabulary() -> None:
    assert _choices("baseline") == {"statistic": (vocabulary.STATISTICS, vocabulary.DEFAULT_STATISTIC),
                                    "fill": (vocabulary.FILL_METHODS, vocabulary.DEFAULT_FILL)}
    rec = _choices("reconstruct")
    assert rec["mode"] == (vocabulary.MODES, vocabulary.DEFAULT_MODE)
    assert rec["fill"] == (vocabulary.FILL_METHODS, vocabulary.DEFAULT_FILL)
    assert rec["precision"] == (vocabulary.PRECISIONS, vocabulary.DEFAULT_PRECISION)


@pytest.mark.parametrize("statistic, fill", [("mode", "idw"), ("max", "spline")])
def test_core_validation_accepts_exactly_the_vocabulary(statistic: str, fill: str) -> None:
    for s in vocabulary.STATISTICS:
        for f in vocabulary.FILL_METHODS:
            check_gridding_options(s, f, 1.0, None)
    with pytest.raises(InputError) as info:
        check_gridding_options(statistic, fill, 1.0, None)
    assert info.value.parameter == ("statistic" if statistic == "mode" else "fill")
