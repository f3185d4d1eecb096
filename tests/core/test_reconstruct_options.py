"""with_overrides: one reconstruction setting other than the default, by its dotted name."""
from __future__ import annotations

import pytest

from implicity.core.errors import InputError
from implicity.core.reconstruct import EvidenceOptions, ReconstructionOptions, with_overrides


def test_dotted_names_replace_nested_fields_and_take_the_fields_types():
    base = ReconstructionOptions(device="cpu")
    out = with_overrides(base, {"evidence.far_blunder_gap": "0", "evidence.blend": "false", "symmetries": "4",
                                "fast_search.strategy": "bisection", "window_stride": 32.0})
    assert out.evidence.far_blunder_gap == 0.0 and isinstance(out.evidence.far_blunder_gap, float)
    assert out.evidence.blend is False and out.symmetries == 4 and out.fast_search.strategy == "bisection"
    assert out.window_stride == 32.0 and out.device == "cpu"
    # optional numbers left to the mode's default take their annotated type from text
    text = with_overrides(base, {"window_stride": "24", "batch_size": "4096", "overlap": "none"})
    assert text.window_stride == 24.0 and text.batch_size == 4096 and isinstance(text.batch_size, int)
    assert text.overlap is None
    # everything else, and the input, unchanged
    assert out.evidence.radius == EvidenceOptions().radius and base.evidence.far_blunder_gap > 0
    assert with_overrides(base, {}) == base


@pytest.mark.parametrize("overrides,needles", [
    ({"evidence.far_gap": 1}, ("evidence.far_gap", "EvidenceOptions", "far_blunder_gap")),
    ({"mode.x": 1}, ("mode.x", "has no fields")),
    ({"symmetries": "four"}, ("symmetries", "'four'", "int")),
    ({"evidence.blend": "maybe"}, ("evidence.blend", "bool")),
    ({"window_stride": "wide"}, ("window_stride", "float")),
])
def test_unknown_names_and_wrong_values_are_refused_with_what_exists(overrides, needles):
    with pytest.raises(InputError) as err:
        with_overrides(ReconstructionOptions(), overrides)
    assert all(n in str(err.value) for n in needles)
