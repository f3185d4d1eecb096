"""Build the installable QGIS plugin zip: one top folder ``implicity/`` with the plugin's files only.

Used by ``make package`` (``/usr/bin/python3 tools/package_plugin.py --out dist/implicity.zip``) and
``make deploy`` (``--enable PROFILE`` marks it enabled in a QGIS profile); standard library only. What goes in is listed explicitly (:data:`INCLUDE`); tests, benchmarks,
virtual environments, caches and development documents never do. Entries are sorted and dated
with a fixed timestamp so the same tree always gives the same zip.
"""
from __future__ import annotations

import argparse
import fnmatch
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN_NAME = "implicity"
#: Files and folders (relative to the repo root) that make up the plugin.
INCLUDE = ("__init__.py", "cli.py", "metadata.txt", "icon.png", "LICENSE", "README.md", "requirements.txt",
           "core", "training", "implicity_qgis", "models", "configs")
#: Required for QGIS to load the plugin at all.
REQUIRED = ("__init__.py", "metadata.txt", "icon.png", "implicity_qgis")
#: Never shipped, wherever they appear.
EXCLUDE = ("__pycache__", "*.pyc", "*.pyo", ".*", "*.egg-info", "tests", "test_*.py", "bench", "runs",
           "*.part", "*.tmp.tif", "*.ckpt.tmp")
#: Folders of the repository that the plugin never needs (training's initial weights, runs in progress).
EXCLUDE_PATHS = ("training/init", "training/resume")
FIXED_DATE = (2024, 1, 1, 0, 0, 0)


def _excluded(rel: Path) -> bool:
    if any(rel.as_posix() == p or rel.as_posix().startswith(p + "/") for p in EXCLUDE_PATHS):
        return True
    return any(fnmatch.fnmatch(part, pattern) for part in rel.parts for pattern in EXCLUDE)


def plugin_files(root: Path = REPO) -> list[Path]:
    """Sorted paths (relative to ``root``) of everything to ship."""
    missing = [name for name in REQUIRED if not (root / name).exists()]
    if missing:
        raise SystemExit(f"package_plugin: {', '.join(missing)} missing in {root}; the plugin cannot load without it.")
    files: list[Path] = []
    for name in INCLUDE:
        path = root / name
        if path.is_file():
            files.append(Path(name))
        elif path.is_dir():
            files.extend(p.relative_to(root) for p in path.rglob("*")
                         if p.is_file() and not _excluded(p.relative_to(root)))
    return sorted(set(files))


def build_zip(out: Path, root: Path = REPO) -> list[str]:
    """Write the zip atomically; returns the archive names."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    names = []
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for rel in plugin_files(root):
                name = f"{PLUGIN_NAME}/{rel.as_posix()}"
                info = zipfile.ZipInfo(name, FIXED_DATE)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_STORED if rel.suffix in (".pt", ".png", ".laz") else zipfile.ZIP_DEFLATED
                zf.writestr(info, (root / rel).read_bytes())
                names.append(name)
        tmp.replace(out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return names


def enable_plugin(profile: Path, name: str = PLUGIN_NAME) -> Path:
    """Mark the plugin enabled in a QGIS profile, as Plugins → Manage and Install Plugins does.

    Sets ``[PythonPlugins] <name>=true`` in ``<profile>/QGIS/QGIS3.ini`` (what the desktop and
    ``qgis_process`` read), editing only that line so every other setting stays as it was; the file
    is replaced atomically. Returns the ini's path.
    """
    ini = Path(profile) / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    lines = ini.read_text(encoding="utf-8").splitlines() if ini.is_file() else []
    entry = f"{name}=true"
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "[PythonPlugins]")
    except StopIteration:
        lines += ([""] if lines and lines[-1].strip() else []) + ["[PythonPlugins]", entry]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
        keys = [i for i in range(start + 1, end) if lines[i].split("=", 1)[0].strip() == name]
        if keys:
            lines[keys[0]] = entry
            for i in reversed(keys[1:]):
                del lines[i]
        else:
            lines.insert(start + 1, entry)
    tmp = ini.with_name(f".{ini.name}.part")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(ini)
    return ini


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "dist" / f"{PLUGIN_NAME}.zip"), help="zip to write")
    parser.add_argument("--list", action="store_true", help="print the archive's entries")
    parser.add_argument("--root", default=str(REPO), help="plugin source tree (default: this repository)")
    parser.add_argument("--enable", metavar="PROFILE", help="only enable the plugin in this QGIS profile folder")
    args = parser.parse_args(argv)
    if args.enable:
        ini = enable_plugin(Path(args.enable))
        print(f"{PLUGIN_NAME} enabled in {ini}")
        return 0
    names = build_zip(Path(args.out), Path(args.root))
    if args.list:
        print("\n".join(names))
    size = Path(args.out).stat().st_size
    print(f"{args.out}: {len(names)} files, {size / 1e6:.2f} MB, top folder {PLUGIN_NAME}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
