"""The ImpliCity network (Stucker et al. 2022): configuration, layers, normalisation, checkpoints.

Public API: :class:`ModelConfig`, :func:`load_model_config`, :func:`build_model`,
:class:`ImpliCityNet`, :func:`normalize_image` (from ``core/normalization.py``, where the patch
normalisation lives), :func:`save_checkpoint`, :func:`load_model`.
"""
from ..normalization import normalize_image
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_model, save_checkpoint
from .config import ModelConfig, load_model_config, reference_config
from .network import EncodedPatch, ImpliCityNet, build_model
from .scatter import HAVE_TORCH_SCATTER

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "EncodedPatch", "HAVE_TORCH_SCATTER", "ImpliCityNet",
    "ModelConfig", "build_model", "load_model", "load_model_config", "normalize_image",
    "reference_config", "save_checkpoint",
]
