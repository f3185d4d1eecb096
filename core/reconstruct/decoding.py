"""The network as the engine sees it: encode a window once, then answer height queries per pixel.

Any model with ``encode(points (1,N,3), images (1,n,S,S) | None)``, ``decode(query (1,M,3),
features) -> logits (1,M)``, ``n_images`` and ``config.patch_size / image_size / z_std`` works (the
tests use analytic models). Coordinates follow the patch normalisation of the contract: x, y of the
window to [0, 1] (y south→north), z to (z − shift) / z_std with shift = median point height.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import InputError, param
from ..normalization import normalize_image
from .device import BatchRunner, precision_context


def load_occupancy_model(model: Any, device: torch.device) -> tuple[Any, str]:
    """A ready model (eval mode, on ``device``) and a name for messages."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model).expanduser()
        if not path.is_file():
            raise InputError(f"{param('model')} {path}: file not found. Give a trained checkpoint (.pt).")
        from ..model import load_model

        loaded, _config = load_model(path, device=str(device))
        name = path.name
        model = loaded
    else:
        name = type(model).__name__
    for attr in ("encode", "decode", "n_images", "config"):
        if not hasattr(model, attr):
            raise InputError(f"{param('model')} {name}: not an occupancy model (it has no '{attr}').")
    if isinstance(model, torch.nn.Module):
        # Channels-last convolution weights: the U-Net and hourglass run ~25 % faster on oneDNN
        # (and on tensor cores), with the same results up to float rounding.
        model = model.to(device).eval()
        model.to(memory_format=torch.channels_last)
    return model, name


def image_normalizer(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The model's intensity normalisation for ortho-images: its own method if it has one (test
    models), else the one of ``core/normalization.py`` that training used, with its config."""
    own = getattr(model, "normalize_image", None)
    if callable(own):
        return own
    config = model.config
    return lambda img: np.asarray(normalize_image(img, config))


@dataclass
class WindowFrame:
    """Where a window is: map origin, size, height shift and scale."""

    x0: float
    y0: float
    size: float
    shift: float
    z_std: float

    def normalize_points(self, xyz: np.ndarray) -> np.ndarray:
        from ..normalization import normalize_points

        return normalize_points(xyz, self.x0, self.y0, self.size, self.shift, self.z_std)


class WindowDecoder:
    """``evaluate(pixels, heights) -> logits`` for the pixel centres of one encoded window."""

    def __init__(self, model: Any, features: Any, frame: WindowFrame, xy: np.ndarray,
                 device: torch.device, runner: BatchRunner, precision: str, xy_is_normalized: bool = False,
                 columns: bool = True) -> None:
        """``xy``: (P, 2) map coordinates of the pixels, or, with ``xy_is_normalized``, their float32
        window coordinates in [0, 1] as given (the reference mode passes the paper's own).
        ``columns=False`` runs the whole decoder on every query, as the paper's generator does."""
        self.model, self.features, self.frame = model, features, frame
        self.device, self.runner, self.precision = device, runner, precision
        if xy_is_normalized:
            xyn = np.ascontiguousarray(xy, dtype=np.float32)
        else:
            xyn = np.empty(xy.shape, np.float32)
            xyn[:, 0] = (xy[:, 0] - frame.x0) / frame.size
            xyn[:, 1] = (xy[:, 1] - frame.y0) / frame.size
        self.xy = torch.from_numpy(xyn).to(device)
        self.queries = 0
        # Models that can (ours) bind the decoder to the pixels once: what does not depend on z
        # (feature sampling, prior, feature projections) is then computed once per pixel.
        self.columns = None
        if columns and hasattr(model, "decode_columns"):
            with precision_context(device, precision):
                self.columns = model.decode_columns(self.xy, features)

    def prior_heights(self) -> np.ndarray | None:
        """The network's own robust surface prior at each pixel, in map heights (P,), for models
        that have one (``height_reference: prior``): the surface they correct, so the best first
        guess of where occupancy flips. None otherwise."""
        prior = getattr(self.columns, "prior", None)
        if prior is None:
            return None
        return prior.float().cpu().numpy().astype(np.float64) * self.frame.z_std + self.frame.shift

    def __call__(self, pixels: np.ndarray, heights: np.ndarray) -> np.ndarray:
        """Logits (P, K) at map heights (P, K) above the given pixels (indices into ``xy``)."""
        return self.normalized(pixels, ((heights - self.frame.shift) / self.frame.z_std).astype(np.float32))

    def normalized(self, pixels: np.ndarray, zn: np.ndarray) -> np.ndarray:
        """Logits (P, K) at normalised heights ``(z − shift) / z_std`` (float32), the unit the
        paper's generator searches in."""
        q, k = zn.shape
        if q == 0:
            return np.zeros((0, k), np.float32)
        z = to_device(np.ascontiguousarray(zn, dtype=np.float32), self.device)
        idx = to_device(np.ascontiguousarray(pixels), self.device)
        columns = self.columns
        if columns is not None:
            self.queries += q * k

            def run_columns(a: int, b: int) -> torch.Tensor:
                with precision_context(self.device, self.precision):
                    out = columns(idx[a:b], z[a:b])
                return occupancy_logit(out.reshape(1, (b - a) * k, -1)).reshape(-1).float()

            return torch.cat(self.runner.map(q, run_columns, unit=k)).reshape(q, k).cpu().numpy()
        xy = self.xy[idx]
        query = torch.cat([xy[:, None, :].expand(q, k, 2), z[..., None]], dim=-1).reshape(1, q * k, 3)
        self.queries += q * k

        def run(a: int, b: int) -> torch.Tensor:
            with precision_context(self.device, self.precision):
                return occupancy_logit(self.model.decode(query[:, a:b], self.features)).reshape(-1).float()

        parts = self.runner.map(q * k, run)
        return torch.cat(parts).reshape(q, k).cpu().numpy()


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy array on ``device``; to CUDA from pinned memory without blocking, so the copy of the
    next batch's queries overlaps the kernels still running on the GPU."""
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def occupancy_logit(logits: torch.Tensor) -> torch.Tensor:
    """(B, M) occupancy logits; a multi-class output (B, M, 3) = free / building / terrain becomes
    log P(building or terrain) − log P(free), so 0 is still the 0.5 occupancy threshold."""
    if logits.dim() == 3 and logits.shape[-1] > 1:
        return torch.logsumexp(logits[..., 1:].float(), dim=-1) - logits[..., 0].float()
    return logits.reshape(logits.shape[0], -1)


def encode_window(model: Any, points: np.ndarray, images: np.ndarray | None, device: torch.device,
                  precision: str) -> Any:
    """Encode normalised points (N, 3) and images (n, S, S) once for the whole window."""
    pts = to_device(points, device)[None]
    imgs = None if images is None or images.shape[0] == 0 else to_device(images, device)[None]
    with precision_context(device, precision):
        return model.encode(pts, imgs)
