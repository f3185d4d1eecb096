"""Parameters picked by name prefix: ``optim.freeze`` and ``zero_init`` of the training config."""
from __future__ import annotations

from collections.abc import Iterable

import torch

from implicity.core.errors import InputError


def parameters_named(model: torch.nn.Module, prefixes: Iterable[str], option: str,
                     source: str | None = None) -> list[tuple[str, torch.nn.Parameter]]:
    """The (name, parameter) pairs whose names start with one of ``prefixes``.

    A prefix that names no parameter is refused (a typo would otherwise train what was meant to
    stay fixed), and the message lists the model's top-level parts to choose from.
    """
    named = list(model.named_parameters())
    picked: dict[str, torch.nn.Parameter] = {}
    for prefix in prefixes:
        hits = [(n, p) for n, p in named if n.startswith(prefix)]
        if not hits:
            parts = sorted({n.split(".", 1)[0] + "." for n, _ in named})
            raise InputError(f"{source or 'training config'}: {option} '{prefix}' names no parameter of this model; "
                             f"its parts are {', '.join(parts)}.")
        picked.update(hits)
    return list(picked.items())


@torch.no_grad()
def zero_parameters(model: torch.nn.Module, prefixes: Iterable[str], source: str | None = None) -> int:
    """Set the parameters under ``prefixes`` to zero; returns how many tensors were zeroed."""
    picked = parameters_named(model, prefixes, "zero_init", source)
    for _, p in picked:
        p.zero_()
    return len(picked)


def freeze_parameters(model: torch.nn.Module, prefixes: Iterable[str], source: str | None = None) -> int:
    """Stop gradients to the parameters under ``prefixes``; returns how many tensors were frozen."""
    picked = parameters_named(model, prefixes, "optim.freeze", source)
    for _, p in picked:
        p.requires_grad_(False)
    return len(picked)
