"""Growing a trained network into a wider one that computes exactly what it computed.

Why: the lite networks reach a plateau that more steps of the same recipe do not leave, and a wider
network trained from scratch needs thousands of steps to catch up with them. Grown from a trained
narrow network, the wider one starts on the narrow one's function and its new channels can only add
to it (Net2Net's idea, with zeros instead of copies: Chen, Goodfellow, Shlens, ICLR 2016).

The rule, for every Linear, Conv2d and ConvTranspose2d whose width changed: the narrow weights fill
the block of the old output and the old input channels; the old outputs read nothing (0) of the new
input channels; the new outputs keep the wide network's fresh initialisation. Since no old channel
reads a new one, every old channel, and so the output, is unchanged; the new channels' outgoing
weights are zero but get gradients at once (their inputs are not zero), so training uses them.
Inputs that are concatenations of equal parts (the U-Net's ``[upsampled, skip]``, the point
encoder's ``[point, pooled]``, declared by the module that concatenates, ``concatenated_inputs``)
map each part's old channels to the start of the same part. The image encoder's input grows the same
way: a mono grown into a stereo (one more ortho, one more input channel of the first convolution)
reads nothing of the second view at first, so it starts as the mono on the first view.
:func:`grow_state_dict` refuses what the rule does not cover, and :func:`same_function` checks the
result on a random patch.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .network import ImpliCityNet

_GROWABLE = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def _input_parts(model: nn.Module) -> dict[str, int]:
    """{layer name: how many equal, concatenated parts its input has}, as the modules that
    concatenate declare it (``concatenated_inputs``); layers not named read one part."""
    parts: dict[str, int] = {}
    for prefix, module in model.named_modules():
        declare = getattr(module, "concatenated_inputs", None)
        if callable(declare):
            parts.update({f"{prefix}.{name}" if prefix else name: n for name, n in declare().items()})
    return parts


def _embed(old: torch.Tensor, new: torch.Tensor, out_dim: int, in_dim: int | None, parts: int) -> torch.Tensor:
    """``new`` with ``old`` written into its old-output × old-input block and zeros in the
    old-output × new-input block."""
    out = new.clone()
    n_old_out = old.shape[out_dim]
    if in_dim is None:                              # a bias: old outputs first
        out[:n_old_out] = old
        return out
    n_old_in, n_new_in = old.shape[in_dim] // parts, new.shape[in_dim] // parts
    if any(old.shape[d] != new.shape[d] for d in range(new.ndim) if d not in (out_dim, in_dim)):
        raise ValueError(f"its kernel changed from {tuple(old.shape)} to {tuple(new.shape)}")
    old_rows = [slice(None)] * new.ndim
    old_rows[out_dim] = slice(0, n_old_out)
    out[tuple(old_rows)] = 0.0
    for k in range(parts):
        dst = [slice(None)] * new.ndim
        src = [slice(None)] * new.ndim
        dst[out_dim], src[out_dim] = slice(0, n_old_out), slice(None)
        dst[in_dim] = slice(k * n_new_in, k * n_new_in + n_old_in)
        src[in_dim] = slice(k * n_old_in, (k + 1) * n_old_in)
        out[tuple(dst)] = old[tuple(src)]
    return out


def grow_state_dict(wide: nn.Module, narrow_state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The weights of ``narrow_state`` laid into ``wide``'s shapes by the rule above, for the
    tensors whose names match and whose every dimension is at least as large (equal shapes copy
    as they are). A tensor whose width changed but that the rule does not cover (e.g. a group norm)
    is refused; :func:`same_function` checks the whole result."""
    ours = wide.state_dict()
    grown: dict[str, torch.Tensor] = {}
    layers = {name: module for name, module in wide.named_modules() if isinstance(module, _GROWABLE)}
    input_parts = _input_parts(wide)
    for key, value in ours.items():
        old = narrow_state.get(key)
        if old is None or old.ndim != value.ndim or any(a > b for a, b in zip(old.shape, value.shape)):
            continue
        old = old.to(value.dtype)
        if old.shape == value.shape:
            grown[key] = old
            continue
        layer_name, _, kind = key.rpartition(".")
        layer = layers.get(layer_name)
        if layer is None or kind not in ("weight", "bias"):
            raise InputError(f"init_grow from {source}: {key} is wider in this network "
                             f"({tuple(old.shape)} → {tuple(value.shape)}) but is not a linear or convolution "
                             "weight, so it cannot be grown; keep that part's width.")
        transposed = isinstance(layer, nn.ConvTranspose2d)
        out_dim, in_dim = (1, 0) if transposed else (0, 1)
        try:
            grown[key] = (_embed(old, value, 0, None, 1) if kind == "bias"
                          else _embed(old, value, out_dim, in_dim, input_parts.get(layer_name, 1)))
        except ValueError as exc:
            raise InputError(f"init_grow from {source}: {key} cannot be grown: {exc}.") from None
    return grown


def same_function(narrow: ImpliCityNet, wide: ImpliCityNet, source: str, n_points: int = 2000,
                  n_queries: int = 2000, tolerance: float = 1e-4) -> None:
    """Refuse (InputError) unless ``wide`` gives ``narrow``'s logits on a random patch."""
    if wide.config.n_images < narrow.config.n_images:
        raise InputError(f"init_grow from {source}: it reads {narrow.config.n_images} ortho-image(s), this network "
                         f"{wide.config.n_images}; a network can be grown to read more ortho-images, not fewer. "
                         "Use init_from without init_grow to copy the weights that fit.")
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(1, n_points, 3, generator=generator)
    points[..., 2] = points[..., 2] * 0.2 - 0.1
    query = torch.rand(1, n_queries, 3, generator=generator)
    query[..., 2] = query[..., 2] * 0.4 - 0.2
    n_images, size = narrow.config.n_images, narrow.config.image_size
    images = torch.rand(1, n_images, size, size, generator=generator) if n_images else None
    wide_images = images
    if images is not None and wide.config.n_images > n_images:      # mono grown into stereo: the new views
        extra = torch.rand(1, wide.config.n_images - n_images, size, size, generator=generator)
        wide_images = torch.cat([images, extra], dim=1)              # must change nothing
    modes = narrow.training, wide.training
    with torch.no_grad():
        a = narrow.eval()(query, points, images)
        b = wide.eval()(query, points, wide_images)
    narrow.train(modes[0])
    wide.train(modes[1])
    gap = float((a - b).abs().max())
    if not gap <= tolerance * max(1.0, float(a.abs().max())):
        raise InputError(f"init_grow from {source}: the grown network's logits differ from the original's by "
                         f"{gap:.3g}; a part of this network cannot be grown (only widths of linear and "
                         "convolution layers can). Keep that part's width.")
