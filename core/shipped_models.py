"""The trained checkpoints shipped in ``models/`` and which one is the default for an image count.

Used by the CLI, the demo and the QGIS algorithm alike. Names follow ``implicity-<kind>[-<variant>].pt``
with kind ``0`` (points only), ``mono`` (one ortho) or ``stereo`` (two orthos).
"""
from __future__ import annotations

from pathlib import Path

from .errors import param
from .vocabulary import VARIANT_KINDS, variant_description

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def shipped_models(models_dir: Path = MODELS_DIR) -> list[Path]:
    """All shipped checkpoints, sorted by name."""
    return sorted(models_dir.glob("*.pt")) if models_dir.is_dir() else []


def default_model(n_images: int, models_dir: Path = MODELS_DIR) -> Path | None:
    """The shipped model for ``n_images`` ortho-images: the full one if shipped, else a variant (lite)."""
    kind = VARIANT_KINDS.get(n_images)
    if kind is None:
        return None
    prefix = f"implicity-{kind}"
    candidates = [p for p in shipped_models(models_dir)
                  if p.stem == prefix or p.stem.startswith(prefix + "-")]
    candidates.sort(key=lambda p: (p.stem != prefix, p.stem))
    return candidates[0] if candidates else None


def missing_model_message(n_images: int, models_dir: Path = MODELS_DIR) -> str:
    """What to do when no checkpoint is given and none is shipped for this image count (a message
    for an :class:`~implicity.core.errors.InputError`: it names the ``model`` parameter)."""
    what = variant_description(n_images)
    shipped = ", ".join(p.name for p in shipped_models(models_dir)) or "none"
    return (
        f"No trained model for {what} is shipped with the plugin (shipped in {models_dir}: {shipped}). "
        f"Choose a checkpoint file (.pt) with {param('model')} — train one with "
        "`implicity train` — or give the number of ortho-images a shipped model expects."
    )
