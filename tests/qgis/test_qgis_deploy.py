"""`make deploy` installs *and enables* the plugin, so qgis_process runs it with no manual step (item 9)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qgis]
REPO = Path(__file__).resolve().parents[2]
NIMES = REPO / "data" / "nimes_lidarhd" / "subsampled_nimes.laz"
PROFILE = Path(".local/share/QGIS/QGIS3/profiles/default")
sys.path.insert(0, str(REPO / "tools"))


def test_enable_plugin_sets_only_its_own_line(tmp_path):
    from package_plugin import enable_plugin

    ini = tmp_path / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir()
    before = ("[General]\nfoo=@ByteArray(\\x1\\0)\n\n[PythonPlugins]\nprocessing=true\nimplicity=false\n"
              "implicity=false\n\n[qgis]\nstripped=a = b\n")
    ini.write_text(before)
    enable_plugin(tmp_path)
    assert ini.read_text() == before.replace("implicity=false\nimplicity=false\n", "implicity=true\n")
    fresh = tmp_path / "fresh"
    enable_plugin(fresh)  # a profile QGIS has never opened
    assert (fresh / "QGIS" / "QGIS3.ini").read_text() == "[PythonPlugins]\nimplicity=true\n"


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QGIS_")}  # pytest-qgis points QGIS elsewhere
    venv_site = REPO / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(home), PYTHONPATH=str(venv_site))
    return env


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qgis_process.bin") is None or shutil.which("make") is None,
                    reason="needs Debian's qgis_process.bin and make (make setup)")
def test_make_deploy_then_qgis_process_runs_reconstruct_on_a_laz(tmp_path):
    import laspy
    import numpy as np
    import rasterio

    home = tmp_path / "home"
    home.mkdir()
    env = _env(home)
    deploy = subprocess.run(["make", "-C", str(REPO), "deploy"], env=env, capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert (home / PROFILE / "python" / "plugins" / "implicity" / "metadata.txt").is_file()
    listed = subprocess.run(["qgis_process.bin", "plugins"], env=env, capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert "* implicity" in listed.stdout, listed.stdout + listed.stderr  # loaded, provides algorithms
    las = laspy.read(str(NIMES))  # a 100 x 100 m corner of the bundled LiDAR HD sample
    x, y = np.asarray(las.x), np.asarray(las.y)
    crop = laspy.LasData(las.header)
    crop.points = las.points[np.flatnonzero((x < x.min() + 100) & (y < y.min() + 100))]
    crop.write(str(tmp_path / "corner.laz"))
    run = subprocess.run(["qgis_process.bin", "run", "implicity:reconstructdsm", "--",
                          f"POINTS_FILE={tmp_path / 'corner.laz'}", "POINTS_CRS=EPSG:2154", "RESOLUTION=2",
                          f"OUTPUT={tmp_path / 'dsm.tif'}"], env=env, capture_output=True, text=True, timeout=600,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Model:" in run.stdout and "ImpliCity-0" in run.stdout
    with rasterio.open(tmp_path / "dsm.tif") as ds:
        assert ds.crs.to_epsg() == 2154 and ds.res == (2.0, 2.0)
        dsm = ds.read(1, masked=True)
    assert dsm.count() > 0.9 * dsm.size and 30 < float(dsm.mean()) < 110  # Nîmes heights (IGN69 metres)
