"""Training data for ImpliCity: synthetic cities, input simulation, query labels, prepared patches.

Nothing here imports QGIS. The pieces, each in its own module:

* :mod:`.synthetic_city` — procedural cities with an exact reference DSM and land-cover masks;
* :mod:`.render` — nadir ortho-images with sun shading and cast shadows;
* :mod:`.visibility` — line-of-sight masks (cast shadows, occlusion from a viewing direction);
* :mod:`.simulate` — a *simulation* of satellite-stereo point clouds from LiDAR or dense samples;
* :mod:`.scenes` — the sources of a prepared dataset (synthetic city, LiDAR, user rasters);
* :mod:`.labels` — query points and occupancy labels from a reference DSM;
* :mod:`.store` — compact per-patch files and the manifest;
* :mod:`.prepare` — ``implicity prepare CONFIG``;
* :mod:`.dataset` — the PyTorch dataset the trainer reads.
"""

from typing import Any

__all__ = ["PatchDataset"]


def __getattr__(name: str) -> Any:
    """``PatchDataset`` is imported lazily: it needs torch, the generators and CLI do not."""
    if name == "PatchDataset":
        from .dataset import PatchDataset

        return PatchDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
