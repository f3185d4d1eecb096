"""Test-time symmetry averaging: the occupancy of a window seen turned and mirrored, averaged.

Why: the networks are trained on every one of the 8 symmetries of the square (training/data/
dataset.py), so each turned or mirrored copy of a window is an equally valid view of it, and their
errors are partly independent. Averaging the logits of the copies lowers the noise of the surface
at the cost of one encoding and one decoding per copy: on the validation split (ImpliCity-0 step 600,
docs/checkpoint_selection.md) 8 copies took MedAE / MAE from 0.304 / 1.012 m to 0.302 / 0.994 m,
4 copies to 0.302 / 0.995 m. Off (1) by default: it multiplies the network's time by the count.

Coordinates are the engine's window coordinates: x east and y north in [0, 1], images with rows
north → south. A copy applies (optional mirror x → 1 − x, then k counter-clockwise quarter turns
about the window's centre) to the points, the images and every query, exactly as training did.
"""
from __future__ import annotations

from typing import Any

import torch

from ..vocabulary import SYMMETRY_COUNTS

#: The copies of each count: the identity; + the half turn; + both mirrors; all 8 symmetries.
_GROUPS: dict[int, tuple[tuple[bool, int], ...]] = {
    1: ((False, 0),),
    2: ((False, 0), (False, 2)),
    4: ((False, 0), (True, 0), (False, 2), (True, 2)),
    8: tuple((mirror, k) for mirror in (False, True) for k in range(4)),
}


def symmetries(count: int) -> tuple[tuple[bool, int], ...]:
    """The (mirror, quarter turns) of the ``count`` copies; see :data:`SYMMETRY_COUNTS`."""
    if count not in _GROUPS:
        raise ValueError(f"symmetries must be one of {SYMMETRY_COUNTS}, got {count!r}")
    return _GROUPS[count]


def symmetric_xy(x: Any, y: Any, mirror: bool, k: int) -> tuple[Any, Any]:
    """Window coordinates x, y in [0, 1] (numpy arrays or tensors): mirror x, then ``k``
    counter-clockwise quarter turns about the centre. The one definition training's augmentation
    (training/data/dataset.py) and this averaging share."""
    if mirror:
        x = 1.0 - x
    for _ in range(k % 4):
        x, y = 1.0 - y, x
    return x, y


def transform_xy(xy: torch.Tensor, mirror: bool, k: int) -> torch.Tensor:
    """(…, 2) window coordinates: :func:`symmetric_xy` on tensors."""
    return torch.stack(symmetric_xy(xy[..., 0], xy[..., 1], mirror, k), dim=-1)


def transform_images(images: torch.Tensor, mirror: bool, k: int) -> torch.Tensor:
    """The same symmetry on (…, rows north → south, cols west → east) images."""
    out = torch.flip(images, dims=[-1]) if mirror else images
    return torch.rot90(out, k % 4, dims=(-2, -1)).contiguous()


def _with_xy(points: torch.Tensor, mirror: bool, k: int) -> torch.Tensor:
    return torch.cat([transform_xy(points[..., :2], mirror, k), points[..., 2:]], dim=-1)


def averaged(model: Any, count: int) -> Any:
    """``model`` itself for one copy, else :class:`SymmetryAveraged` over ``count`` copies; the
    single-process engine and the cluster's workers both call this on the model they loaded."""
    return model if count == 1 else SymmetryAveraged(model, count)


class SymmetryAveraged:
    """A model with the engine's interface whose logits are the mean over ``count`` symmetric copies.

    Everything else (``config``, ``n_images``, ``normalize_image`` of test models …) is the
    wrapped model's. ``decode_columns`` exists only when the wrapped model has it."""

    def __init__(self, model: Any, count: int) -> None:
        self.model = model
        self.group = symmetries(count)
        self.config = model.config
        self.n_images = model.n_images

    def __getattr__(self, name: str) -> Any:  # only reached for attributes this class lacks
        return getattr(self.__dict__["model"], name)

    def encode(self, points: torch.Tensor, images: torch.Tensor | None = None) -> list[Any]:
        return [self.model.encode(_with_xy(points, m, k), None if images is None else transform_images(images, m, k))
                for m, k in self.group]

    def decode(self, query: torch.Tensor, features: list[Any]) -> torch.Tensor:
        logits = [self.model.decode(_with_xy(query, m, k), f) for (m, k), f in zip(self.group, features)]
        return torch.stack(logits).mean(dim=0)

    @property
    def decode_columns(self) -> Any:
        if not hasattr(self.model, "decode_columns"):
            raise AttributeError("decode_columns")
        return self._decode_columns

    def _decode_columns(self, xy: torch.Tensor, features: list[Any]) -> AveragedColumns:
        return AveragedColumns([self.model.decode_columns(transform_xy(xy, m, k).contiguous(), f)
                                for (m, k), f in zip(self.group, features)])


class AveragedColumns:
    """The column decoders of every copy: logits averaged; the surface prior (models that have one)
    averaged too, so the fast search still starts from the network's own surface."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        priors: list[torch.Tensor] = [p.prior for p in parts if getattr(p, "prior", None) is not None]
        self.prior = torch.stack(priors).mean(dim=0) if len(priors) == len(parts) else None

    def __call__(self, columns: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.stack([p(columns, z) for p in self.parts]).mean(dim=0)
