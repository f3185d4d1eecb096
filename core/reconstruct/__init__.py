"""ImpliCity DSM reconstruction: any extent, window by window, streamed to a GeoTIFF.

Public entry point: :func:`reconstruct_dsm` with :class:`ReconstructionInputs` and
:class:`ReconstructionOptions`; it returns a :class:`ReconstructionResult`.
"""
from typing import Any

from .options import (
    EvidenceOptions,
    FastSearchOptions,
    ReconstructionInputs,
    ReconstructionOptions,
    ReconstructionResult,
    ReferenceSearchOptions,
    with_overrides,
)


def reconstruct_dsm(*args: Any, **kwargs: Any) -> ReconstructionResult:
    """See :func:`implicity.core.reconstruct.engine.reconstruct_dsm` (imported lazily: torch)."""
    from .engine import reconstruct_dsm as _impl

    return _impl(*args, **kwargs)


__all__ = [
    "EvidenceOptions", "FastSearchOptions", "ReconstructionInputs", "ReconstructionOptions", "ReconstructionResult",
    "ReferenceSearchOptions", "reconstruct_dsm", "with_overrides",
]
