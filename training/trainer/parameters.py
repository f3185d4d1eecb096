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


def optimizer_state_for(saved: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        source: str | None = None) -> dict:
    """A resume checkpoint's optimizer state, fitted to an optimizer over the trainable parameters.

    Why: before ``optim.freeze`` the optimizer held every parameter of the model, frozen ones
    included (the image encoder's unused batch norms never take gradients). Such a checkpoint
    lists them all; its entries for the parameters this run does not train are dropped, so old runs
    resume. Any other mismatch is refused with what to do instead of a bare torch error.
    """
    groups = saved.get("param_groups", [])
    n_saved = sum(len(g["params"]) for g in groups)
    n_now = sum(len(g["params"]) for g in optimizer.param_groups)
    if n_saved == n_now:
        return saved
    every = list(model.parameters())
    if len(groups) == 1 and len(optimizer.param_groups) == 1 and n_saved == len(every):
        keep = [i for i, p in enumerate(every) if p.requires_grad]
        if len(keep) == n_now:
            old_ids = groups[0]["params"]
            state = saved.get("state", {})
            new_state = {new: state[old_ids[old]] for new, old in enumerate(keep) if old_ids[old] in state}
            group = dict(groups[0], params=list(range(n_now)))
            return {"state": new_state, "param_groups": [group]}
    raise InputError(f"{source or 'resume checkpoint'}: its optimizer holds {n_saved} parameter tensors, this run "
                     f"trains {n_now}; the model or optim.freeze changed since it was written. Resume with the "
                     "config that wrote it, or start a new run in another out_dir.")
