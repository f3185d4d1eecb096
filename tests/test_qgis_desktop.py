"""The real QGIS desktop under Xvfb with the plugin installed from the packaged zip (slow, ~10-20 s)."""
from __future__ import annotations

import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qgis, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

missing_tools = [t for t in ("xvfb-run", "qgis", "import") if shutil.which(t) is None]


def test_package_zip_has_one_top_folder_and_no_dev_files(tmp_path):
    from package_plugin import build_zip

    names = build_zip(tmp_path / "implicity.zip")
    assert {n.split("/")[0] for n in names} == {"implicity"}
    for required in ("implicity/__init__.py", "implicity/metadata.txt", "implicity/icon.png",
                     "implicity/implicity_qgis/plugin.py", "implicity/core/errors.py", "implicity/cli.py"):
        assert required in names
    assert not [n for n in names if "/tests/" in n or "__pycache__" in n or n.endswith(".pyc")
                or "/bench/" in n or "/.venv/" in n or "/docs/" in n]
    with zipfile.ZipFile(tmp_path / "implicity.zip") as zf:
        assert "hasProcessingProvider=yes" in zf.read("implicity/metadata.txt").decode()


@pytest.mark.skipif(bool(missing_tools), reason=f"needs {', '.join(missing_tools)} (make setup)")
def test_desktop_runs_the_algorithm_and_screenshots_it(tmp_path):
    from PIL import Image, ImageStat

    from qgis_desktop_screenshot import run

    result = run(tmp_path, timeout=90)
    assert result["plugin_loaded"] and not result["errors"], result
    assert result["plugin_file"].startswith("/tmp") and "/profiles/default/python/plugins/implicity/" in result["plugin_file"]
    assert result["output_bytes"] > 10_000  # the algorithm wrote its GeoTIFF
    assert result["layers"] == ["DSM (hillshade)", "DSM"]  # the ImpliCity DSM, loaded and styled
    for name in ("algorithm_dialog.png", "dsm_on_map.png"):
        image = Image.open(tmp_path / name).convert("RGB")
        assert image.size == (1600, 1000)
        stats = ImageStat.Stat(image)
        assert max(stats.stddev) > 20, f"{name} looks blank"  # a black/uniform screen has ~0 spread
        assert len(image.getcolors(maxcolors=1 << 20) or []) > 200
    if os.environ.get("IMPLICITY_UPDATE_SCREENSHOTS"):
        target = REPO / "docs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("algorithm_dialog.png", "dsm_on_map.png"):
            shutil.copy(tmp_path / name, target / name)
