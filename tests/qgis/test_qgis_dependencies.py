"""Dependency detection/installation logic and shipped-model choice (no QGIS, no network)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from implicity.core.errors import InputError
from implicity.core.shipped_models import default_model, missing_model_message
from implicity.implicity_qgis import dependencies as deps

FAKE = deps.Requirement("implicity_fake_pkg_xyz", "implicity-fake-pkg-xyz>=1", "a test package")


@pytest.fixture
def clean_path(monkeypatch):
    """Restore sys.path and the module-level hooks after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(deps, "gui_prompt", None)
    monkeypatch.setattr(deps, "deps_dir", None)
    yield
    sys.modules.pop(FAKE.module, None)


def test_missing_finds_absent_modules_without_importing(clean_path):
    assert deps.missing([deps.Requirement("json", "json", "x"), FAKE]) == [FAKE]


def test_missing_treats_blocked_module_as_missing(clean_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # how a broken/absent torch looks after a failed import
    assert [r.module for r in deps.missing(deps.NETWORK)] == ["torch"]


def test_pip_command_targets_private_folder_and_cpu_torch(tmp_path):
    cmd = deps.pip_command(deps.GEODATA + deps.NETWORK, tmp_path)
    assert cmd[1:4] == ["-m", "pip", "install"]
    assert cmd[cmd.index("--target") + 1] == str(tmp_path)
    assert cmd[cmd.index("--extra-index-url") + 1] == deps.TORCH_CPU_INDEX
    assert "laspy>=2.4" in cmd and "torch>=2.1" in cmd
    assert "--extra-index-url" not in deps.pip_command(deps.GEODATA, tmp_path)


def test_python_executable_is_a_python_not_the_qgis_binary(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/usr/bin/qgis")
    exe = deps.python_executable()
    assert "python" in exe.rsplit("/", 1)[-1]


def test_default_deps_dir_is_inside_the_profile(tmp_path):
    assert deps.default_deps_dir(tmp_path) == tmp_path / "python" / "implicity_deps"


def test_activate_appends_existing_folder_once(clean_path, tmp_path):
    assert deps.activate(tmp_path / "absent") is False
    assert deps.activate(tmp_path) is True
    assert sys.path[-1] == str(tmp_path)
    assert deps.activate(tmp_path) is False


def test_install_runs_pip_into_target_and_makes_module_importable(clean_path, tmp_path):
    calls = []

    def fake_pip(cmd):  # what pip --target would leave behind
        calls.append(cmd)
        target = cmd[cmd.index("--target") + 1]
        (tmp_path / "deps" / f"{FAKE.module}.py").write_text("VALUE = 42\n")
        assert target == str(tmp_path / "deps")
        return subprocess.CompletedProcess(cmd, 0, "Successfully installed", None)

    result = deps.install([FAKE], tmp_path / "deps", runner=fake_pip)
    assert result.ok and not result.still_missing and len(calls) == 1
    assert __import__(FAKE.module).VALUE == 42


def test_install_failure_reports_output_and_what_is_missing(clean_path, tmp_path):
    result = deps.install([FAKE], tmp_path / "deps",
                          runner=lambda cmd: subprocess.CompletedProcess(cmd, 1, "ERROR: no network", None))
    assert not result.ok and result.still_missing == [FAKE] and "no network" in result.output


def test_require_message_names_packages_and_both_ways_to_install(clean_path, tmp_path):
    deps.deps_dir = tmp_path
    with pytest.raises(deps.MissingDependencies) as info:
        deps.require([FAKE])
    msg = str(info.value)
    assert FAKE.module in msg and "a test package" in msg
    assert "Install Python dependencies" in msg and "--target" in msg and str(tmp_path) in msg
    assert info.value.requirements == [FAKE]


def test_require_offers_install_only_when_asked(clean_path, tmp_path):
    offered = []

    def prompt(missing):
        offered.append([r.module for r in missing])
        (tmp_path / f"{FAKE.module}.py").write_text("")
        deps.activate(tmp_path)
        return True

    deps.gui_prompt = prompt
    with pytest.raises(deps.MissingDependencies):
        deps.require([FAKE])  # worker thread: never prompts
    assert offered == []
    deps.require([FAKE], offer_install=True)  # main thread: prompt installs, no error
    assert offered == [[FAKE.module]]


def test_default_model_matches_image_count(tmp_path):
    for name in ("implicity-0-lite.pt", "implicity-mono-lite.pt", "implicity-mono.pt", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert default_model(0, tmp_path).name == "implicity-0-lite.pt"
    assert default_model(1, tmp_path).name == "implicity-mono.pt"  # the full model wins over lite
    assert default_model(2, tmp_path) is None
    assert default_model(0, tmp_path / "none") is None
    error = InputError(missing_model_message(2, tmp_path))
    assert error.parameter == "model"
    msg = error.render({"model": "'Model checkpoint'"}.get)
    assert "ImpliCity-stereo" in msg and "with 'Model checkpoint'" in msg and "implicity-0-lite.pt" in msg
