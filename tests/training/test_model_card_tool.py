"""tools/model_card.py: a candidate checkpoint can be put beside the shipped models (``--extra``),
and a bad ``--extra`` is refused in one line before anything runs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def model_card():
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import model_card
        yield model_card
    finally:
        sys.path.remove(str(REPO / "tools"))


@pytest.mark.parametrize("extra, why", [
    ("no-equals-sign", "give LABEL=MODEL.pt"),
    ("=x.pt", "give LABEL=MODEL.pt"),
    ("a/b=x.pt", "without '/'"),
    ("ImpliCity-0={model}", "a label of its own"),
    ("candidate=missing.pt", "is not a file"),
])
def test_a_bad_extra_column_is_refused_before_anything_runs(model_card, tmp_path: Path, capsys, extra, why) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"")
    out = tmp_path / "out"
    code = model_card.main(["--data", str(tmp_path), "--out", str(out), "--markdown", str(tmp_path / "card.md"),
                            "--zero", str(model), "--extra", extra.format(model=model)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("model-card: --extra") and why in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "card.md").exists()
