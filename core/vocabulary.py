"""The project's vocabulary in one torch-free module: model variants, LiDAR classes, the choices of
every option (fill methods, statistics, search modes, devices, precisions) and their defaults.

The ``Literal`` types annotate the core functions; the tuples derived from them are the argparse
``choices``, the values core validation accepts and the options of the QGIS enums, so a choice
added here reaches the CLI, the library and the plugin at once.
"""
from __future__ import annotations

from typing import Literal, get_args

# -- model variants: the number of ortho-images decides the network ---------------------------------
#: Ortho-images per variant: ImpliCity-0 (points only), -mono (one ortho), -stereo (two orthos).
IMAGE_COUNTS = (0, 1, 2)
VARIANT_NAMES = {0: "ImpliCity-0", 1: "ImpliCity-mono", 2: "ImpliCity-stereo"}
#: The ``<kind>`` of a shipped checkpoint's file name ``implicity-<kind>[-<variant>].pt``.
VARIANT_KINDS = {0: "0", 1: "mono", 2: "stereo"}
VARIANT_DESCRIPTIONS = {0: "ImpliCity-0 (points only)", 1: "ImpliCity-mono (one ortho-image)",
                        2: "ImpliCity-stereo (two ortho-images)"}


def variant_name(n_images: int) -> str:
    """'ImpliCity-0' / '-mono' / '-stereo' for 0, 1, 2 ortho-images; 'ImpliCity-<n>img' otherwise."""
    return VARIANT_NAMES.get(n_images, f"ImpliCity-{n_images}img")


def variant_description(n_images: int) -> str:
    """What a variant is, for messages: 'ImpliCity-mono (one ortho-image)'."""
    return VARIANT_DESCRIPTIONS.get(n_images, f"a model with {n_images} ortho-images")


# -- LiDAR classes (ASPRS LAS 1.4) ------------------------------------------------------------------
GROUND_CLASS = 2
VEGETATION_CLASSES = (3, 4, 5)
BUILDING_CLASS = 6
WATER_CLASS = 9
#: Low noise (7) and high noise (18): never part of a surface.
NOISE_CLASSES = (7, 18)

# -- option choices ----------------------------------------------------------------------------------
FillMethod = Literal["idw", "nearest", "none"]
Statistic = Literal["max", "median", "mean", "min"]
Mode = Literal["fast", "reference"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
#: Device choices of the plugin's enum; the CLI also takes ``cuda:N``.
DeviceChoice = Literal["auto", "cpu", "cuda"]

FILL_METHODS: tuple[str, ...] = get_args(FillMethod)
STATISTICS: tuple[str, ...] = get_args(Statistic)
MODES: tuple[str, ...] = get_args(Mode)
PRECISIONS: tuple[str, ...] = get_args(Precision)
DEVICE_CHOICES: tuple[str, ...] = get_args(DeviceChoice)

# -- defaults (the first choice of each tuple is its default) -----------------------------------------
DEFAULT_FILL: FillMethod = "idw"
DEFAULT_STATISTIC: Statistic = "max"
DEFAULT_MODE: Mode = "fast"
DEFAULT_PRECISION: Precision = "auto"
DEFAULT_DEVICE: DeviceChoice = "auto"
#: Baseline and reconstruction: holes are filled only within this distance of data (map units).
DEFAULT_FILL_MAX_DISTANCE = 10.0
#: Reference DSMs from LiDAR: only small gaps are filled.
DEFAULT_REFERENCE_FILL_MAX_DISTANCE = 2.0
#: Fast mode: heights are searched within the points' robust range ± this (metres; ``EvidenceOptions``) ...
DEFAULT_SEARCH_MARGIN = 3.0
#: ... and kept within the points' own range ± this (at most the search margin).
DEFAULT_KEEP_MARGIN = 0.0
#: Fast mode: a cell this far below (above) every other cell around it is a far outlier (metres; 0 = off).
DEFAULT_FAR_BLUNDER_GAP = 50.0
#: Fast mode: the despeckle threshold (metres; 0 = off; ``core/reconstruct/despeckle.py``).
DEFAULT_DESPECKLE = 0.25
#: Test-time symmetry averaging: how many turned / mirrored copies of a window may be averaged
#: (core/reconstruct/symmetry.py; 1 = off, the default).
SYMMETRY_COUNTS = (1, 2, 4, 8)
#: ``evaluate --coregister``: the largest horizontal shift searched (map units), a few times the
#: planimetric error of a stereo DSM's orientation.
DEFAULT_MAX_SHIFT = 2.0
#: ``evaluate --step-regions``: a height step is a jump of more than this (height units) between
#: neighbouring reference pixels; pixels within ``STEP_REACH_PX`` of one are split into the step's
#: top and foot. 1.5 m: a storey is ~3 m, kerbs and low walls stay off steps.
DEFAULT_STEP_HEIGHT = 1.5
STEP_REACH_PX = 2


def choice_list(choices: tuple[str, ...]) -> str:
    """'a, b or c', for messages that list the accepted values."""
    return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else "".join(choices)
