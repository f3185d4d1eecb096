"""Resume checkpoints: everything needed to continue a run bit-exactly, written atomically.

A resume checkpoint holds the model, optimizer, LR scheduler and AMP scaler states, the position
in the data (optimizer step, micro-step inside the accumulation group, epoch, position in the
epoch), the partial gradients when it was taken mid-accumulation (Ctrl-C), and the RNG states of
torch / CUDA / numpy / Python of every rank. All of it is plain tensors and Python values so it
loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from implicity.core.errors import InputError, param
from implicity.core.outputs import atomic_path

FORMAT = "implicity-train-state"
VERSION = 1


def capture_rng_state() -> dict[str, Any]:
    """The RNG states of this process, in a ``weights_only``-loadable form."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the RNG states captured by :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


def capture_gradients(model: torch.nn.Module) -> list[torch.Tensor | None] | None:
    """Partial gradients of an unfinished accumulation group (None when there are none)."""
    grads = [None if p.grad is None else p.grad.detach().cpu().clone() for p in model.parameters()]
    return None if all(g is None for g in grads) else grads


def restore_gradients(model: torch.nn.Module, grads: list[torch.Tensor | None] | None) -> None:
    """Put saved gradients back on the model's parameters, in order (``None``: clear them all)."""
    params = list(model.parameters())
    if grads is None:
        for p in params:
            p.grad = None
        return
    if len(grads) != len(params):
        raise InputError("The resume checkpoint's gradients do not match the model; it is from another model.")
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.to(device=p.device, dtype=p.dtype).clone()


def save_train_state(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write a resume checkpoint atomically (a crash mid-write keeps the previous one)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
    return target


def load_train_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a resume checkpoint written by :func:`save_train_state`."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{param('resume')}: no resume checkpoint at {file}. Start without {param('resume')}, "
                         "or point out_dir at the run you want to continue.")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise InputError(f"{param('resume')}: {file} cannot be read as a resume checkpoint ({exc}).") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{param('resume')}: {file} is not an ImpliCity resume checkpoint.")
    if state.get("version", 0) > VERSION:
        raise InputError(f"{param('resume')}: {file} was written by a newer version (format {state['version']}).")
    return state
