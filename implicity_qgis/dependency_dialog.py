"""The GUI around :mod:`.dependencies`: ask before installing, show pip's progress and result."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from qgis.PyQt.QtCore import QThread
from qgis.PyQt.QtWidgets import QApplication, QMessageBox, QProgressDialog, QWidget

from . import dependencies as deps


def _run_pip_with_events(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run pip while keeping the GUI painted (a busy progress dialog), collecting its output."""
    dialog = QProgressDialog("Installing Python packages with pip…\nThis can take a few minutes.", None, 0, 0)
    dialog.setWindowTitle("ImpliCity")
    dialog.setMinimumDuration(0)
    dialog.show()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while proc.poll() is None:
            QApplication.processEvents()
            time.sleep(0.05)
        out = proc.stdout.read() if proc.stdout else ""
    finally:
        dialog.close()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def offer_install(missing: list[deps.Requirement], deps_dir: Path, parent: QWidget | None = None) -> bool:
    """Ask whether to pip-install ``missing`` into ``deps_dir``; install if yes. True when all present."""
    app = QApplication.instance()
    if app is None or QThread.currentThread() != app.thread():
        return False  # never show dialogs from a Processing worker thread
    names = "\n".join(f"  • {r.module} — {r.why}" for r in missing)
    answer = QMessageBox.question(
        parent, "ImpliCity: missing Python packages",
        f"ImpliCity needs these Python packages, which QGIS's Python does not have:\n{names}\n\n"
        f"Install them now with pip into\n{deps_dir}\n(private to this plugin; your system Python is not "
        "touched)? An internet connection is needed.",
        QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes,
    )
    if answer != QMessageBox.Yes:
        return False
    result = deps.install(missing, deps_dir, runner=_run_pip_with_events)
    if result.ok:
        QMessageBox.information(parent, "ImpliCity", "The Python packages were installed. "
                                "If an algorithm still reports them missing, restart QGIS.")
        return True
    QMessageBox.warning(
        parent, "ImpliCity: installation failed",
        "pip could not install everything"
        + (f" (still missing: {', '.join(r.module for r in result.still_missing)})" if result.still_missing else "")
        + f".\n\nCommand:\n{' '.join(result.command)}\n\nLast output:\n{result.output[-1500:]}",
    )
    return False


def check_and_offer(deps_dir: Path, parent: QWidget | None = None) -> bool:
    """Menu action: report that everything is present, or offer to install what is not."""
    absent = deps.missing(deps.GEODATA + deps.NETWORK)
    optional = deps.missing(deps.OPTIONAL)
    note = ("" if not optional else "\n\nOptional, not installed: " + ", ".join(f"{r.pip} ({r.why})" for r in optional)
            + ". It is offered when a reconstruction sets 'Workers' or a 'Dask scheduler address'.")
    if not absent:
        QMessageBox.information(parent, "ImpliCity", "All Python packages ImpliCity needs are installed." + note)
        return True
    return offer_install(absent, deps_dir, parent)
