"""The Processing algorithms, one module each; :data:`ALGORITHM_CLASSES` is what the provider loads."""
from __future__ import annotations

from .baseline import BaselineDsmAlgorithm
from .evaluate import EvaluateDsmAlgorithm
from .reconstruct import ReconstructDsmAlgorithm
from .reference import ReferenceDsmAlgorithm

ALGORITHM_CLASSES = (ReconstructDsmAlgorithm, BaselineDsmAlgorithm, ReferenceDsmAlgorithm, EvaluateDsmAlgorithm)

__all__ = ["ALGORITHM_CLASSES", "BaselineDsmAlgorithm", "EvaluateDsmAlgorithm", "ReconstructDsmAlgorithm",
           "ReferenceDsmAlgorithm"]
