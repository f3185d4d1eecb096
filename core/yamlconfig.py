"""YAML config files with ``inherit_from``, read one way for every config of the project.

Model, prepare and training configs are data; a child file states only what differs from the
file(s) it inherits (a path or a list, relative to the child; later parents win over earlier
ones, the child over all). Nested mappings merge key by key. Errors name the file and the fix.
Every config mapping is checked for unknown keys here (:func:`check_known_keys`,
:func:`dataclass_from_mapping`).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import InputError

#: Called with each file's raw mapping and folder before merging (e.g. to make paths absolute).
Prepare = Callable[[dict[str, Any], Path], None]


def read_yaml_mapping(path: str | os.PathLike[str], what: str = "config") -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty file = empty mapping)."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{what} not found: {file} does not exist. Check the path.")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{what} {file} is not valid YAML ({exc}). Fix the file.") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} {file} must be a mapping of options (key: value), not {type(data).__name__}.")
    return data


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``; mappings present in both are merged recursively."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_inheritance(data: Mapping[str, Any], folder: Path, what: str = "config",
                        prepare: Prepare | None = None, search_dirs: Iterable[Path] = (),
                        _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``data`` (read from a file in ``folder``) with its ``inherit_from`` parents merged under it.

    A parent is looked up beside the file first, then by name in ``search_dirs`` (shipped configs).
    """
    data = dict(data)
    parents = data.pop("inherit_from", None) or []
    if isinstance(parents, (str, os.PathLike)):
        parents = [parents]
    if prepare is not None:
        prepare(data, folder)
    merged: dict[str, Any] = {}
    for parent in parents:
        path = (folder / Path(parent)).resolve()
        if not path.exists():
            path = next((d / parent for d in search_dirs if (d / parent).is_file()), path)
        if not path.is_file():
            where = f" (inherited by {_chain[-1]})" if _chain else ""
            raise InputError(f"{path}: {what} file not found{where}. Check 'inherit_from'.")
        merged = deep_merge(merged, read_with_inheritance(path, what, prepare, search_dirs, _chain))
    return deep_merge(merged, data)


def read_with_inheritance(path: str | os.PathLike[str], what: str = "config", prepare: Prepare | None = None,
                          search_dirs: Iterable[Path] = (), _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of ``path`` with everything it inherits merged in."""
    file = Path(path).expanduser().resolve()
    if file in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, file))
        raise InputError(f"{file}: inherit_from forms a cycle ({cycle}). Remove one of the links.")
    data = read_yaml_mapping(file, what)
    return resolve_inheritance(data, file.parent, what, prepare, tuple(search_dirs), (*_chain, file))


def check_known_keys(values: Mapping[str, Any], known: Iterable[str], where: str, what: str = "option") -> None:
    """Refuse keys of a config mapping that are not ``known`` (typos must not pass silently): the
    error names each one, with the closest known key when there is one, and lists the known keys."""
    known = sorted(known)
    unknown = sorted(set(values) - set(known))
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1)
        hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    raise InputError(f"{where}: unknown {what}(s) {', '.join(hints)}. Known: {', '.join(known)}.")


def dataclass_from_mapping(cls: type, values: Mapping[str, Any] | None, where: str) -> Any:
    """A config dataclass from a YAML mapping: unknown keys refused (:func:`check_known_keys`), YAML
    lists turned into the tuples the dataclasses hold, the dataclass's own checks as InputErrors.
    ``None`` gives the defaults."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise InputError(f"{where}: must be a mapping of options, got {values!r}.")
    check_known_keys(values, (f.name for f in dataclasses.fields(cls)), where)
    kwargs = {key: tuple(tuple(v) if isinstance(v, list) else v for v in value) if isinstance(value, list) else value
              for key, value in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from None
