"""Python packages the algorithms need, and installing the missing ones into a plugin-private folder.

QGIS's own Python often lacks torch, laspy or rasterio. Loading the plugin never imports them; an
algorithm checks its packages when it runs and, if some are missing, says which and how to get them.
The installer runs pip with ``--target`` into a folder inside the QGIS profile (never into the
system Python), and that folder is put on ``sys.path`` when the plugin loads. Nothing here imports
Qt, so the logic is testable headless; :mod:`.dependency_dialog` is the GUI around it.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DEPS_FOLDER_NAME = "implicity_deps"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class Requirement:
    """One importable module and the pip requirement that provides it."""

    module: str  # what ``import`` needs, e.g. "yaml"
    pip: str  # what pip installs, e.g. "pyyaml>=6.0"
    why: str  # shown to the user next to the name


#: Everything reading/writing geodata (all four algorithms).
GEODATA: tuple[Requirement, ...] = (
    Requirement("numpy", "numpy>=1.24,<2", "arrays"),
    Requirement("scipy", "scipy>=1.10", "hole filling and masks"),
    Requirement("rasterio", "rasterio>=1.3", "GeoTIFF reading and writing"),
    Requirement("affine", "affine>=2.4", "raster geotransforms"),
    Requirement("laspy", "laspy>=2.4", "LAS/LAZ point clouds"),
    Requirement("lazrs", "lazrs>=0.5", "LAZ decompression"),
    Requirement("yaml", "pyyaml>=6.0", "model configurations"),
)
#: The network (the reconstruction algorithm only). The CPU build is pinned: PyPI's Linux torch
#: would pull several GB of CUDA libraries.
NETWORK: tuple[Requirement, ...] = (Requirement("torch", "torch>=2.1", "the ImpliCity network (PyTorch)"),)
#: Optional: only a reconstruction with 'Workers' or a 'Dask scheduler address' needs it. It is never
#: part of what the plugin asks for up front; it is offered when one of those parameters is set.
CLUSTER: tuple[Requirement, ...] = (
    Requirement("distributed", "dask[distributed]>=2024.1", "optional: runs on a Dask cluster (Workers, scheduler)"),
)
OPTIONAL: tuple[Requirement, ...] = CLUSTER


def default_deps_dir(profile_dir: str | os.PathLike[str]) -> Path:
    """``<QGIS profile>/python/implicity_deps``: private to this plugin and this profile."""
    return Path(profile_dir) / "python" / DEPS_FOLDER_NAME


def activate(deps_dir: str | os.PathLike[str]) -> bool:
    """Put ``deps_dir`` on ``sys.path`` (after the system's packages) if it exists; True if added."""
    path = str(Path(deps_dir))
    if not Path(path).is_dir() or path in sys.path:
        return False
    sys.path.append(path)  # appended: never shadow packages QGIS itself depends on (numpy, GDAL)
    importlib.invalidate_caches()
    return True


def missing(requirements: Iterable[Requirement]) -> list[Requirement]:
    """The requirements whose module cannot be found (found without importing it: cheap and safe)."""
    out = []
    for req in requirements:
        try:
            found = importlib.util.find_spec(req.module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(req)
    return out


def describe_missing(reqs: Sequence[Requirement], deps_dir: str | os.PathLike[str] | None = None) -> str:
    """One message naming what is missing, why it is needed and the two ways to install it."""
    names = ", ".join(f"{r.module} ({r.why})" for r in reqs)
    where = f" into {deps_dir}" if deps_dir else ""
    return (
        f"ImpliCity needs Python packages that QGIS's Python does not have: {names}. "
        f"Install them from the menu Plugins > ImpliCity > Install Python dependencies (pip{where}), "
        f"or yourself with: {' '.join(pip_command(reqs, Path(deps_dir) if deps_dir else None, display=True))}"
    )


def python_executable() -> str:
    """The Python interpreter QGIS runs (``sys.executable`` is the qgis binary inside QGIS)."""
    exe = Path(sys.executable)
    if exe.name.lower().startswith("python"):
        return str(exe)
    names = ("python.exe", "python3.exe") if os.name == "nt" else (
        f"python{sys.version_info.major}.{sys.version_info.minor}", f"python{sys.version_info.major}", "python")
    for prefix in (sys.exec_prefix, sys.base_exec_prefix):
        for sub in ("bin", ""):
            for name in names:
                candidate = Path(prefix) / sub / name
                if candidate.is_file():
                    return str(candidate)
    return f"python{sys.version_info.major}"


def pip_command(reqs: Sequence[Requirement], target: Path | None, display: bool = False) -> list[str]:
    """The pip command installing ``reqs`` into ``target`` (torch from PyTorch's CPU index)."""
    cmd = [python_executable() if not display else "python3", "-m", "pip", "install", "--upgrade",
           "--disable-pip-version-check", "--no-input"]
    if target is not None:
        cmd += ["--target", str(target)]
    if any(r.module == "torch" for r in reqs):
        cmd += ["--extra-index-url", TORCH_CPU_INDEX]
    specs = [r.pip for r in reqs]
    return cmd + ([f'"{s}"' for s in specs] if display else specs)


@dataclass
class InstallResult:
    """What pip did: success, the command and its combined output (shown on failure)."""

    ok: bool
    command: list[str]
    output: str
    still_missing: list[Requirement]


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run_pip(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)


def install(reqs: Sequence[Requirement], deps_dir: str | os.PathLike[str], runner: Runner = _run_pip) -> InstallResult:
    """pip-install ``reqs`` into ``deps_dir``, activate it and report what is still missing."""
    target = Path(deps_dir)
    target.mkdir(parents=True, exist_ok=True)
    cmd = pip_command(reqs, target)
    proc = runner(cmd)
    activate(target)
    importlib.invalidate_caches()
    left = missing(reqs)
    return InstallResult(ok=proc.returncode == 0 and not left, command=cmd, output=proc.stdout or "",
                         still_missing=left)


class MissingDependencies(Exception):
    """Raised by :func:`require`; its message is the user-facing explanation."""

    def __init__(self, reqs: Sequence[Requirement], message: str):
        super().__init__(message)
        self.requirements = list(reqs)


#: Set by the plugin when a GUI is running: called with the missing requirements, returns True if
#: they were installed (the user accepted the offer). Headless (qgis_process, tests) it stays None.
gui_prompt: Callable[[list[Requirement]], bool] | None = None
#: Where :func:`require` says packages would be installed; the plugin sets it from the profile.
deps_dir: Path | None = None


def require(reqs: Iterable[Requirement], offer_install: bool = False) -> None:
    """Raise :class:`MissingDependencies` unless every requirement is importable.

    With ``offer_install`` and a GUI, the user is first offered to install what is missing (only
    from the main thread: the algorithms ask in ``checkParameterValues``, never while running).
    """
    absent = missing(reqs)
    if absent and offer_install and gui_prompt is not None and gui_prompt(absent):
        absent = missing(absent)
    if absent:
        raise MissingDependencies(absent, describe_missing(absent, deps_dir))
