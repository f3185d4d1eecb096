"""Run the real QGIS desktop under Xvfb with the packaged plugin, run ImpliCity, take screenshots.

The plugin is installed from the ``make package`` zip into a throw-away HOME/profile and enabled in
``QGIS3.ini``. A startup script (``qgis --code``) then: opens the algorithm dialog pre-filled and
screenshots it; runs the algorithm through Processing (``runAndLoadResults``, so the styled output
is loaded as in real use), zooms to it and screenshots the map; writes ``result.json``; exits.
Screenshots are taken with ImageMagick's ``import -window root`` from inside the QGIS process.

    .venv/bin/python tools/qgis_desktop_screenshot.py --out docs/screenshots
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The bundled Nimes LiDAR HD sample (Etalab 2.0; header without CRS).
NIMES = REPO / "data" / "nimes_lidarhd" / "subsampled_nimes.laz"
NIMES_CRS = "EPSG:2154"
SCREEN = "1600x1000x24"
PROFILE = Path(".local/share/QGIS/QGIS3/profiles/default")

# Runs inside QGIS (its Python, main thread). Values are filled from a JSON file given in the env.
STARTUP = r'''
import json, os, subprocess, sys, traceback
from pathlib import Path
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins
from qgis.core import QgsApplication, QgsProject

cfg = json.loads(Path(os.environ["IMPLICITY_DESKTOP_JOB"]).read_text())
out = Path(cfg["out"])
result = {"plugin_loaded": "implicity" in plugins, "errors": []}

def shot(name):
    QgsApplication.processEvents()
    subprocess.run(["import", "-window", "root", str(out / name)], check=True, timeout=30)
    result.setdefault("screenshots", []).append(name)

def finish():
    try:
        import implicity
        result["plugin_file"] = implicity.__file__
    except Exception as exc:
        result["errors"].append(repr(exc))
    (out / "result.json").write_text(json.dumps(result, indent=2))
    QgsProject.instance().setDirty(False)
    os._exit(0)

def step_dialog():
    try:
        import processing
        iface.mainWindow().setGeometry(0, 0, 1600, 1000)  # no window manager under Xvfb: no maximise
        dlg = processing.createAlgorithmDialog(cfg["dialog_algorithm"], cfg["dialog_params"])
        dlg.show()
        dlg.setGeometry(300, 60, 1000, 880)
        step_dialog.dlg = dlg
        QTimer.singleShot(1500, lambda: (shot("algorithm_dialog.png"), dlg.close(), step_run()))
    except Exception:
        result["errors"].append(traceback.format_exc()); finish()

def step_run():
    try:
        import processing
        res = processing.runAndLoadResults(cfg["algorithm"], cfg["params"])
        result["outputs"] = {k: v for k, v in res.items() if isinstance(v, (str, int, float)) or v is None}
        result["layers"] = [l.name() for l in QgsProject.instance().mapLayers().values()]
        lyr = [l for l in QgsProject.instance().mapLayers().values() if "hillshade" not in l.name()]
        if lyr:
            iface.setActiveLayer(lyr[0])
            iface.mapCanvas().setExtent(lyr[0].extent())
            iface.mapCanvas().refresh()
        QTimer.singleShot(3000, lambda: (shot("dsm_on_map.png"), finish()))
    except Exception:
        result["errors"].append(traceback.format_exc()); finish()

QTimer.singleShot(int(cfg.get("start_delay_ms", 1500)), step_dialog)
'''


def install_plugin(home: Path, zip_path: Path) -> Path:
    plugins = home / PROFILE / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(plugins)
    ini = home / ".config" / "QGIS" / "QGIS3.ini"  # Linux QSettings location for org "QGIS"
    ini.parent.mkdir(parents=True)
    settings = "[PythonPlugins]\nimplicity=true\n\n[qgis]\ncheckVersion=false\nshowTips=false\n"
    ini.write_text(settings)
    (home / PROFILE / "QGIS").mkdir(parents=True)
    (home / PROFILE / "QGIS" / "QGIS3.ini").write_text(settings)
    return plugins / "implicity"


def default_job(out: Path, work: Path, points: Path, crs: str = NIMES_CRS) -> dict:
    """Open the Reconstruct dialog on the cloud, then run it with the shipped ImpliCity-0 model."""
    params = {"POINTS_FILE": str(points), "POINTS_CRS": crs, "RESOLUTION": 0.5,
              "OUTPUT": str(work / "implicity_dsm.tif")}
    return {
        "out": str(out),
        "dialog_algorithm": "implicity:reconstructdsm",
        "dialog_params": {"POINTS_FILE": str(points), "POINTS_CRS": crs, "RESOLUTION": 0.5},
        "algorithm": "implicity:reconstructdsm",
        "params": params,
    }


def run(out: Path, timeout: float = 90.0, points: Path = NIMES, keep_home: bool = False) -> dict:
    """Package, install, run QGIS under Xvfb; returns result.json's content (plus 'seconds')."""
    for tool in ("xvfb-run", "qgis", "import"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: install xvfb, xauth, qgis and imagemagick (make setup).")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="implicity_desktop_"))
    try:
        zip_path = work / "implicity.zip"
        subprocess.run(["/usr/bin/python3", str(REPO / "tools" / "package_plugin.py"), "--out", str(zip_path)],
                       check=True, stdout=subprocess.DEVNULL)
        home = work / "home"
        install_plugin(home, zip_path)
        job = default_job(out, work, points)
        (work / "job.json").write_text(json.dumps(job))
        (work / "startup.py").write_text(STARTUP)
        for name in ("algorithm_dialog.png", "dsm_on_map.png", "result.json"):
            (out / name).unlink(missing_ok=True)
        venv_site = REPO / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
        env = {**os.environ, "HOME": str(home), "IMPLICITY_DESKTOP_JOB": str(work / "job.json"),
               "PYTHONPATH": str(venv_site), "XDG_RUNTIME_DIR": str(work), "LC_ALL": "C.UTF-8"}
        env.pop("QT_QPA_PLATFORM", None)  # the real desktop needs the X11 platform
        for key in [k for k in env if k.startswith("QGIS_")]:
            env.pop(key)  # e.g. QGIS_CUSTOM_CONFIG_PATH set by a test runner would hide our profile
        cmd = ["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN}", "qgis", "--noversioncheck", "--nologo",
               "--code", str(work / "startup.py")]
        start = time.monotonic()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, start_new_session=True)
        result_file = out / "result.json"
        if not result_file.is_file():
            raise RuntimeError(f"QGIS exited ({proc.returncode}) without a result; its output:\n{proc.stdout[-3000:]}")
        result = json.loads(result_file.read_text())
        result["seconds"] = round(time.monotonic() - start, 1)
        output = result.get("outputs", {}).get("OUTPUT")
        if output and Path(output).is_file():
            result["output_bytes"] = Path(output).stat().st_size
        return result
    finally:
        if not keep_home:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"), help="folder for the PNGs and result.json")
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument("--points", default=str(NIMES), help="point cloud (EPSG:2154) to run on")
    args = parser.parse_args()
    result = run(Path(args.out), args.timeout, Path(args.points))
    print(json.dumps(result, indent=2))
    return 0 if result.get("plugin_loaded") and not result.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
