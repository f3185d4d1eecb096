"""Drive the real QGIS desktop under Xvfb with the packaged plugin, as a user would; take screenshots.

The plugin is installed from the ``make package`` zip into a throw-away HOME/profile and enabled in
``QGIS3.ini``. A startup script (``qgis --code``) then walks through what a new user does:

1. opens the *Reconstruct DSM* dialog from the Toolbox at its default size (is anything cut off?);
2. adds the Nîmes cloud as an EPT point-cloud layer (the only kind Debian's QGIS opens), opens the
   layer's right-click menu, picks *ImpliCity → Reconstruct DSM*, and clicks *Run* in the dialog
   that opens pre-filled with the layer; waits for the run, reads the log and the layers it added
   (names, legend, hillshade resampling), screenshots the map;
3. opens the batch dialog on two files, fills the output column with the batch panel's own
   "Fill with parameter values" code (file dialogs answered by the script), runs it with
   "Load layers on completion", then runs a batch whose rows fail, and checks that no task is left
   in the task manager.

Everything it sees goes to ``result.json``. The runner waits on progress, not on a fixed time: the
script writes a heartbeat (step and progress) every second, and QGIS is only stopped when nothing
has advanced for ``--stall`` seconds (or after ``--limit`` seconds in all).

    .venv/bin/python tools/qgis_desktop_screenshot.py --out docs/screenshots
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
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
SCREENSHOTS = ("default_dialog.png", "right_click_menu.png", "algorithm_dialog.png", "dsm_on_map.png",
               "batch_dialog.png", "batch_done.png")

# Runs inside QGIS (its Python, main thread). Values come from a JSON file named in the environment.
STARTUP = r'''
import json, os, subprocess, time, traceback
from pathlib import Path
from qgis.PyQt.QtCore import QTimer, QPoint, Qt
from qgis.PyQt.QtWidgets import QApplication, QDockWidget, QLabel, QProgressBar, QScrollArea, QTextEdit
from qgis.utils import iface, plugins
from qgis.core import QgsApplication, QgsPointCloudLayer, QgsProject, QgsRasterLayer

cfg = json.loads(Path(os.environ["IMPLICITY_DESKTOP_JOB"]).read_text())
out = Path(cfg["out"])
result = {"plugin_loaded": "implicity" in plugins, "errors": [], "screenshots": []}
state = {"step": "start", "progress": 0.0}
keep = []  # Python references to dialogs and timers while they are in use


def heartbeat():
    tasks = [(t.description(), round(t.progress(), 1)) for t in QgsApplication.taskManager().activeTasks()]
    Path(cfg["heartbeat"]).write_text(json.dumps({"step": state["step"], "progress": state["progress"],
                                                  "tasks": tasks, "time": time.time()}))


beat = QTimer()
beat.timeout.connect(heartbeat)
beat.start(1000)


def step(name):
    state["step"], state["progress"] = name, 0.0
    heartbeat()


def after(ms, fn):
    def run():
        try:
            fn()
        except Exception:
            result["errors"].append(f"{state['step']}: {traceback.format_exc()}")
            finish()
    QTimer.singleShot(ms, run)


def wait_until(condition, then, poll_ms=500, on_poll=None):
    """Poll ``condition`` (no fixed timeout: the runner watches the heartbeat for progress)."""
    def poll():
        if on_poll is not None:
            on_poll()
        if condition():
            then()
        else:
            after(poll_ms, poll)
    after(poll_ms, poll)


def shot(name):
    QgsApplication.processEvents()
    subprocess.run(["import", "-window", "root", str(out / name)], check=True, timeout=60)
    result["screenshots"].append(name)


def finish():
    try:
        import implicity
        result["plugin_file"] = implicity.__file__
    except Exception as exc:
        result["errors"].append(repr(exc))
    result["active_tasks_at_exit"] = [t.description() for t in QgsApplication.taskManager().activeTasks()]
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    QgsProject.instance().setDirty(False)
    os._exit(0)


def dialog_log(dlg):
    logs = [w for w in dlg.findChildren(QTextEdit) if w.objectName() == "txtLog"] or dlg.findChildren(QTextEdit)
    return "\n".join(w.toPlainText() for w in logs)


def progress_of(dlg):
    bars = dlg.findChildren(QProgressBar)
    return float(bars[0].value()) if bars else 0.0


# -- 1. the dialog at its default size ----------------------------------------------------------------
def step_default_dialog():
    step("default dialog")
    import processing
    iface.mainWindow().setGeometry(0, 0, 1600, 1000)  # no window manager under Xvfb: no maximise
    dlg = processing.createAlgorithmDialog("implicity:reconstructdsm", {})
    keep.append(dlg)
    dlg.show()
    def measure():
        panel = dlg.mainWidget()
        scroll = panel.findChildren(QScrollArea)
        cut = [l.text() for l in panel.findChildren(QLabel)
               if l.isVisible() and l.text() and not l.wordWrap() and l.width() < l.sizeHint().width()]
        result["default_dialog"] = {
            "size": [dlg.width(), dlg.height()],
            "horizontal_scrollbar": any(s.horizontalScrollBar().isVisible() for s in scroll),
            "cut_labels": cut,
        }
        dlg.move(300, 60)
        shot("default_dialog.png")
        dlg.close()
        after(200, step_right_click)
    after(1500, measure)


# -- 2. right-click on an EPT layer, run from the dialog it opens ---------------------------------------
def layout_panels():
    """A wide Layers panel (full height, the Browser hidden) so names and legends can be read."""
    window = iface.mainWindow()
    docks = {d.objectName(): d for d in window.findChildren(QDockWidget)}
    if "Browser" in docks:
        docks["Browser"].hide()
    if "Layers" in docks:
        window.resizeDocks([docks["Layers"]], [480], Qt.Horizontal)


def step_right_click():
    step("right-click menu")
    layout_panels()
    layer = QgsPointCloudLayer(cfg["ept"], cfg["layer_name"], "ept")
    result["ept_layer_valid"] = layer.isValid()
    if not layer.isValid():
        raise RuntimeError(f"QGIS did not open {cfg['ept']} as a point-cloud layer")
    QgsProject.instance().addMapLayer(layer)
    view = iface.layerTreeView()
    view.setCurrentLayer(layer)
    iface.mapCanvas().setDestinationCrs(layer.crs())
    iface.mapCanvas().setExtent(layer.extent())
    iface.mapCanvas().refresh()
    def open_menu():
        menu = view.menuProvider().createContextMenu()
        keep.append(menu)
        sub = [a.menu() for a in menu.actions() if a.menu() is not None and a.text().replace("&", "") == "ImpliCity"]
        result["context_menu"] = [a.text() for a in sub[0].actions()] if sub else []
        if not sub:
            raise RuntimeError("no ImpliCity submenu on the point-cloud layer: " + str([a.text() for a in menu.actions()]))
        index = view.layerTreeModel().node2index(view.layerTreeModel().rootGroup().findLayer(layer.id()))
        rect = view.visualRect(view.proxyModel().mapFromSource(index)) if hasattr(view, "proxyModel") else view.visualRect(index)
        pos = view.viewport().mapToGlobal(rect.center())
        menu.popup(pos)
        menu.setActiveAction(sub[0].menuAction())
        QgsApplication.processEvents()
        action_rect = menu.actionGeometry(sub[0].menuAction())
        sub[0].popup(menu.mapToGlobal(QPoint(action_rect.right(), action_rect.top())))
        reconstruct = [a for a in sub[0].actions() if a.text().startswith("Reconstruct")][0]
        sub[0].setActiveAction(reconstruct)
        def take_and_click():
            shot("right_click_menu.png")
            sub[0].hide()
            menu.hide()
            after(300, lambda: in_dialog(layer))  # runs inside the dialog's modal loop
            reconstruct.trigger()  # opens the dialog modally (processing.execAlgorithmDialog)
            after(100, step_map)  # after the dialog closed
        after(1500, take_and_click)
    after(4000, open_menu)


def in_dialog(layer):
    step("reconstruct dialog")
    dialogs = [w for w in QApplication.topLevelWidgets() if w.isVisible() and type(w).__name__ == "AlgorithmDialog"]
    dlg = dialogs[0] if dialogs else None
    if dlg is None:
        after(300, lambda: in_dialog(layer))
        return
    keep.append(dlg)
    params = dlg.createProcessingParameters()
    result["prefilled"] = {k: str(v) for k, v in params.items() if k in ("POINTS", "POINTS_FILE", "RESOLUTION")}
    result["prefilled_is_layer"] = params.get("POINTS") == layer.id()
    from processing.tools.dataobjects import createContext
    dlg.mainWidget().wrappers["RESOLUTION"].setParameterValue(cfg["resolution"], createContext())  # typed by the user
    dlg.setGeometry(300, 60, 1000, 880)
    def run():
        shot("algorithm_dialog.png")
        state["started"] = time.time()
        dlg.runButton().click()
        def done():
            log = dialog_log(dlg)
            return "Execution completed" in log or "Execution failed" in log
        def report():
            state["progress"] = progress_of(dlg)
        def finished():
            log = dialog_log(dlg)
            result["reconstruct_seconds"] = round(time.time() - state["started"], 1)
            result["reconstruct_log"] = log[-4000:]
            result["reconstruct_ok"] = "Execution completed" in log
            dlg.close()  # ends the modal loop: the trigger() call above returns
        wait_until(done, finished, on_poll=report)
    after(1000, run)


def step_map():
    step("map")
    project = QgsProject.instance()
    rasters = [l for l in project.mapLayers().values() if isinstance(l, QgsRasterLayer)]
    result["layers"] = [n.name() for n in project.layerTreeRoot().findLayers()]
    model = iface.layerTreeView().layerTreeModel()
    legends = {}
    for layer in rasters:
        node = project.layerTreeRoot().findLayer(layer.id())
        legends[layer.name()] = [str(n.data(0)) for n in model.layerLegendNodes(node)]
        if "hillshade" in layer.name():
            res = layer.resampleFilter().zoomedInResampler()
            result["hillshade_zoomed_in_resampler"] = type(res).__name__ if res else None
    result["legends"] = legends
    dsm = [l for l in rasters if "hillshade" not in l.name()]
    iface.layerTreeView().expandAll()  # the DSM's legend: "Height (m)" and its colour ramp
    if dsm:
        iface.setActiveLayer(dsm[0])
        iface.mapCanvas().setExtent(dsm[0].extent())
        iface.mapCanvas().refresh()
    wait_until(lambda: not iface.mapCanvas().isDrawing(),
               lambda: after(1500, lambda: (shot("dsm_on_map.png"), step_batch())))


# -- 3. the batch dialog --------------------------------------------------------------------------------
def open_batch(files):
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    alg = QgsApplication.processingRegistry().algorithmById("implicity:reconstructdsm")
    dlg = BatchAlgorithmDialog(alg.create(), parent=iface.mainWindow())
    keep.append(dlg)
    dlg.show()
    panel = dlg.mainWidget()
    panel.addRow(len(files) - 1)
    from processing.tools.dataobjects import createContext
    context = createContext()
    col = panel.parameter_to_column
    for row, path in enumerate(files):
        panel.wrappers[row][col["POINTS_FILE"]].setParameterValue(path, context)
        panel.wrappers[row][col["POINTS_CRS"]].setParameterValue(cfg["crs"], context)
        panel.wrappers[row][col["RESOLUTION"]].setParameterValue(cfg["batch_resolution"], context)
    panel.checkLoadLayersOnCompletion.setChecked(True)
    dlg.setGeometry(20, 80, 1560, 520)
    return dlg, panel


def autofill_outputs(panel, folder):
    """What a user does: '…' in the DSM column, a file name in the folder, 'Fill with parameter values'
    → 'Point cloud file'. The file and autofill dialogs are answered here; the naming is QGIS's code."""
    from processing.gui import BatchOutputSelectionPanel as bosp
    from processing.gui.AutofillDialog import AutofillDialog
    original_save, original_exec = bosp.QFileDialog.getSaveFileName, AutofillDialog.exec_
    def answer(self):
        self.mode, self.param_name = AutofillDialog.FILL_WITH_PARAMETER, "POINTS_FILE"
    bosp.QFileDialog.getSaveFileName = staticmethod(lambda *a, **k: (str(Path(folder) / "dsm.tif"), "TIF files (*.tif)"))
    AutofillDialog.exec_ = answer
    try:
        panel.tblParameters.cellWidget(1, panel.parameter_to_column["OUTPUT"]).showSelectionDialog()
    finally:
        bosp.QFileDialog.getSaveFileName, AutofillDialog.exec_ = original_save, original_exec
    col = panel.parameter_to_column["OUTPUT"]
    return [panel.tblParameters.cellWidget(r + 1, col).getValue() for r in range(panel.batchRowCount())]


def step_batch():
    step("batch dialog")
    dlg, panel = open_batch(cfg["batch_files"])
    result["batch_filled_outputs"] = autofill_outputs(panel, cfg["batch_out"])
    table = panel.tblParameters
    widths = {"POINTS": 80, "POINTS_FILE": 200, "POINTS_CRS": 160, "ORTHOS": 70, "MODEL": 80, "RESOLUTION": 90,
              "EXTENT": 80, "DEVICE": 60, "CONFIDENCE": 80, "OUTPUT": 460}
    for name, width in widths.items():  # narrower columns, as a user would drag them, so the DSM column shows
        table.setColumnWidth(panel.parameter_to_column[name], width)
    table.horizontalScrollBar().setValue(table.horizontalScrollBar().maximum())
    def run():
        shot("batch_dialog.png")
        step("batch run")
        before = set(QgsProject.instance().mapLayers())
        state["started"] = time.time()
        dlg.runButton().click()  # QGIS 3.22 runs batches synchronously, in the main thread
        log = dialog_log(dlg)
        result["batch_seconds"] = round(time.time() - state["started"], 1)
        result["batch_log"] = log[-6000:]
        result["batch_new_layers"] = [QgsProject.instance().mapLayer(i).name()
                                      for i in set(QgsProject.instance().mapLayers()) - before]
        result["batch_outputs_written"] = sorted(p.name for p in Path(cfg["batch_out"]).glob("*.tif"))
        def done():
            result["tasks_after_batch"] = [(t.description(), t.progress())
                                           for t in QgsApplication.taskManager().activeTasks()]
            dlg.setGeometry(500, 80, 1080, 560)  # the Layers panel shows the rows' named outputs
            iface.layerTreeView().expandAll()
            QgsApplication.processEvents()
            shot("batch_done.png")
            dlg.close()
            after(200, step_failing_batch)
        after(1500, done)
    after(1000, run)


def step_failing_batch():
    step("failing batch")
    dlg, panel = open_batch(cfg["failing_files"])
    col = panel.parameter_to_column["OUTPUT"]
    for r, name in enumerate(cfg["failing_outputs"]):
        panel.tblParameters.cellWidget(r + 1, col).setValue(name)
    def run():
        dlg.runButton().click()
        result["failing_batch_log"] = dialog_log(dlg)[-4000:]
        def check():
            result["tasks_after_failing_batch"] = [(t.description(), t.progress())
                                                   for t in QgsApplication.taskManager().activeTasks()]
            dlg.close()
            finish()
        after(1500, check)
    after(1000, run)


after(int(cfg.get("start_delay_ms", 2000)), step_default_dialog)
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


def prepare_inputs(work: Path, points: Path, crs: str) -> dict:
    """The EPT dataset of ``points`` (for the layer route) and inputs for the two batches."""
    import laspy
    import numpy as np

    from implicity.core.pointsources import write_ept

    ept = write_ept(points, work / points.stem.replace(".copc", ""), crs=crs)
    batch_in = work / "batch_in"
    batch_in.mkdir()
    las = laspy.read(str(points))
    x, y = np.asarray(las.x), np.asarray(las.y)
    x0, y0 = float(x.min()), float(y.min())
    files = []
    for name, dx in (("nimes_west", 0.0), ("nimes_east", 120.0)):  # two 100 x 100 m crops
        sel = (x >= x0 + dx) & (x < x0 + dx + 100) & (y >= y0) & (y < y0 + 100)
        crop = laspy.LasData(las.header)
        crop.points = las.points[np.flatnonzero(sel)]
        crop.write(str(batch_in / f"{name}.laz"))
        files.append(str(batch_in / f"{name}.laz"))
    broken = batch_in / "broken.laz"
    broken.write_bytes(b"not a point cloud")
    (work / "batch_out").mkdir()
    return {"ept": str(ept), "layer_name": points.stem, "batch_files": files,
            "failing_files": [str(broken), files[0]],
            "failing_outputs": [str(work / "batch_out" / "broken_dsm.tif"), str(work / "no_such_folder" / "b.tif")],
            "batch_out": str(work / "batch_out")}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run(out: Path, points: Path = NIMES, crs: str = NIMES_CRS, stall: float = 300.0, limit: float = 3600.0,
        keep_home: bool = False, plugin_root: Path = REPO, resolution: float = 1.0,
        batch_resolution: float = 2.0) -> dict:
    """Package, install, drive QGIS under Xvfb; returns result.json's content (plus 'seconds').

    QGIS is stopped only when its heartbeat shows no progress for ``stall`` seconds, or after ``limit``.
    """
    for tool in ("xvfb-run", "qgis", "import"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: install xvfb, xauth, qgis and imagemagick (make setup).")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="implicity_desktop_"))
    try:
        zip_path = work / "implicity.zip"
        subprocess.run(["/usr/bin/python3", str(REPO / "tools" / "package_plugin.py"), "--out", str(zip_path),
                        "--root", str(plugin_root)], check=True, stdout=subprocess.DEVNULL)
        home = work / "home"
        install_plugin(home, zip_path)
        job = {"out": str(out), "heartbeat": str(work / "heartbeat.json"), "crs": crs, "resolution": resolution,
               "batch_resolution": batch_resolution, **prepare_inputs(work, points, crs)}
        (work / "job.json").write_text(json.dumps(job))
        (work / "startup.py").write_text(STARTUP)
        for name in (*SCREENSHOTS, "result.json"):
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
        log_path = work / "qgis.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            last, last_change, why = None, time.monotonic(), None
            while proc.poll() is None:
                time.sleep(2)
                beat = _read_json(work / "heartbeat.json")
                marker = None if beat is None else (beat.get("step"), beat.get("progress"))
                if marker != last:
                    last, last_change = marker, time.monotonic()
                elif time.monotonic() - last_change > stall:
                    why = f"no progress for {stall:.0f} s (last heartbeat: {beat})"
                if time.monotonic() - start > limit:
                    why = f"still running after {limit:.0f} s (last heartbeat: {beat})"
                if why:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                    break
        result_file = out / "result.json"
        if not result_file.is_file():
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"QGIS stopped ({why or f'exit code {proc.returncode}'}) without a result; "
                               f"its output:\n{tail}")
        result = json.loads(result_file.read_text())
        result["seconds"] = round(time.monotonic() - start, 1)
        result["batch_out"] = job["batch_out"]
        return result
    finally:
        if not keep_home:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"), help="folder for the PNGs and result.json")
    parser.add_argument("--points", default=str(NIMES), help="LAS/LAZ point cloud to run on")
    parser.add_argument("--crs", default=NIMES_CRS, help="its CRS when the header has none")
    parser.add_argument("--stall", type=float, default=300.0, help="stop QGIS after this many seconds without progress")
    parser.add_argument("--limit", type=float, default=3600.0, help="stop QGIS after this many seconds in all")
    parser.add_argument("--resolution", type=float, default=1.0, help="resolution typed into the right-click dialog")
    parser.add_argument("--plugin-root", default=str(REPO), help="plugin source tree to package (default: this one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary HOME and inputs")
    args = parser.parse_args()
    result = run(Path(args.out), Path(args.points), args.crs, args.stall, args.limit, args.keep, Path(args.plugin_root),
                 args.resolution)
    print(json.dumps(result, indent=2))
    return 0 if result.get("plugin_loaded") and not result.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
