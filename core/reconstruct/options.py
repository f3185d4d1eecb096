"""Inputs, options and result of a DSM reconstruction, as plain dataclasses (configs as data).

Two modes share one engine:

* ``fast`` (default): 64 m windows at a 48 m stride; each window decodes only its central part plus
  the blending overlap (each pixel is decoded ~1.4 times instead of 16); the height search per pixel
  is bracketed by the heights of the points around that pixel (the evidence envelope, see
  ``evidence.py``), starts at the network's own surface prior and takes false-position steps on the
  logit (``FastSearchOptions``), with a final linear interpolation of the logits between the last
  occupied and the first free sample. Pixels whose surface lies outside the envelope are clamped to
  it and flagged in the confidence raster; every height is then kept within the range of the points
  around it (``EvidenceOptions.keep_margin``), and speckles of the network's surface take the median
  of their neighbours (``despeckle``, ``despeckle.py``).
* ``reference``: the paper's generator (``GeneratorDSM`` of the reference implementation with its
  test settings), kept as the yardstick the fast mode is measured against. Windows at a 16 m
  stride; each decodes every pixel it covers; per pixel a coarse scan from −100 m up to (not
  including) +80 m around the window's shift every 16 m, the highest occupied sample, then 4
  refinements that divide the step by 4 and test offsets −1…+3 around the estimate; the result is
  the highest occupied sample of the last round (up to one final step, 0.0625 m, below the
  crossing). It reproduces five details in which the paper's generator differs from a
  pixel-centred scheme:

  1. Queries at i / (n − 1) of the window (n pixels per side), written into the n pixels the
     window covers: up to half a pixel off the pixel centres.
  2. Blending weights ``linspace(0.001, 1)`` over the first ⌊n/2⌋ pixel indices and back down over
     the last ⌊n/2⌋, x times y.
  3. Points cropped with x0 < x < x1, y0 < y < y1 (strict), and the window's height shift is the
     lower median of their heights (``torch.median``).
  4. Windows stay inside the extent: every 16 m from its west and south bounds while they fit,
     then one flush with the east and north bounds (25 windows on a 128 m square, not 121).
  5. A pixel where nothing is occupied takes the window's shift at full weight (``fill_empty``),
     and the −100…+80 m range is never widened (``adaptive_range`` widens it: a deviation, off).

  The evidence rules below are not part of it: it reproduces the paper's pits at building edges.
  Our additions are only what the paper's code cannot do: a window without points is skipped (the
  paper's code stops there), and the optional confidence raster.

The fast mode alone applies the evidence rules (``evidence.py``): heights clamped to the envelope,
blended towards the points' own surface near the outer edge of the cloud, and no height farther
than ``fill_max_distance`` from every input point.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import InputError
from ..vocabulary import (
    DEFAULT_DESPECKLE,
    DEFAULT_FAR_BLUNDER_GAP,
    DEFAULT_KEEP_MARGIN,
    DEFAULT_SEARCH_MARGIN,
    FillMethod,
    Mode,
    Precision,
)


@dataclass(frozen=True)
class ReferenceSearchOptions:
    """The reference generator's coarse-to-fine search (all heights in map z units, metres)."""

    range_below: float = 100.0  # coarse scan starts this far below the window's shift
    range_above: float = 80.0  # ... and ends at most this far above it
    coarse_step: float = 16.0
    refinements: int = 4
    refine_factor: int = 4  # each refinement divides the step by this
    refine_offsets: tuple[int, ...] = (-1, 0, 1, 2, 3)  # samples around the estimate, in new steps

    @property
    def final_step(self) -> float:
        return self.coarse_step / self.refine_factor ** self.refinements


@dataclass(frozen=True)
class EvidenceOptions:
    """How the input points bound and steer the network's heights (see ``evidence.py``)."""

    radius: float = 2.5  # points within ±radius of a pixel (a square) bound its height ...
    margin: float = DEFAULT_SEARCH_MARGIN  # ... searched within [robust lowest − margin, robust highest + margin] (beyond: flagged)
    # ... and kept within [robust lowest − keep_margin, robust highest + keep_margin] (at most
    # ``margin``). 0, the range of the points themselves, was chosen on the validation split: kept
    # within 3 m MedAE / MAE was 0.321 / 1.084 m, 1 m 0.320 / 1.064, 0 m 0.315 / 1.049
    # (docs/checkpoint_selection.md).
    keep_margin: float = DEFAULT_KEEP_MARGIN
    # A cell whose lowest (highest) point lies more than this below (above) every other cell of its
    # 5 x 5 cells is a blunder and bounds nothing. Not 0: the true top of a smooth hill or roof is
    # also its neighbourhood's highest cell, by up to a slope step.
    blunder_gap: float = 1.0
    # Where a 5 x 5 block is too sparse for that test: a cell more than this below (above) every other
    # cell within reach + radius bounds nothing either (evidence.py). 50 m: deeper than a street lying
    # between roofs of up to ~15 storeys, so one point that sees such a street is kept. 0 = off.
    far_blunder_gap: float = DEFAULT_FAR_BLUNDER_GAP
    edge_width: float = 4.0  # within this distance of the cloud's outer edge, blend towards the points' surface
    blend: bool = True  # False: keep the network's heights along the edge (still clamped)


@dataclass(frozen=True)
class FastSearchOptions:
    """The fast mode's bracketed search (the bracket is the evidence envelope).

    ``guided`` (default) starts at ±``guard`` around the points' own surface and takes
    false-position steps on the logit (``search.guided_search``, ~6 queries per pixel);
    ``bisection`` scans the whole envelope with ``coarse_samples`` and halves the bracket
    (``search.bracket_search``, ~12)."""

    strategy: Literal["guided", "bisection"] = "guided"
    guard: float = 0.5  # guided: the first bracket is the guess ± guard (metres)

    coarse_samples: int = 6  # samples spread over the bracket in the first pass
    max_coarse_step: float = 4.0  # ... more if the bracket is tall, so no layer thicker is skipped
    refine_factor: int = 2  # 2 = bisection (1 query per pixel and round)
    final_step: float = 0.0625  # stop when the bracket is this thin (the reference's final step)
    interpolate: bool = True  # linear zero crossing of the logits inside the final bracket


@dataclass(frozen=True)
class ReconstructionInputs:
    """What to reconstruct: points (+ orthos) + model → DSM (+ confidence) on a grid."""

    points: Any  # path to LAS/LAZ/PLY/NPZ or a core.pointcloud.PointCloud
    model: Any  # checkpoint path or a loaded model object (encode/decode/n_images/config)
    out_path: str | os.PathLike[str]
    resolution: float
    points_crs: Any = None  # overrides/supplies the cloud's CRS (e.g. "EPSG:2154")
    orthos: tuple[str | os.PathLike[str], ...] = ()  # 0, 1 (mono) or 2 (stereo) ortho-images
    confidence_path: str | os.PathLike[str] | None = None
    extent: str | tuple[float, float, float, float] | None = None  # in the cloud's CRS


@dataclass(frozen=True)
class ReconstructionOptions:
    """How to reconstruct. ``None`` values take the mode's default (see :meth:`stride` and
    :meth:`blend_overlap`)."""

    mode: Mode = "fast"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    window_stride: float | None = None  # metres; fast 48, reference 16
    overlap: float | None = None  # fast mode: width of the blending ramp between windows (default 8 m)
    reference_search: ReferenceSearchOptions = field(default_factory=ReferenceSearchOptions)
    fast_search: FastSearchOptions = field(default_factory=FastSearchOptions)
    evidence: EvidenceOptions = field(default_factory=EvidenceOptions)
    adaptive_range: bool = False  # reference: widen the −100…+80 m range to the window's points ± margin
    range_margin: float = 10.0
    batch_size: int | None = None  # queries per decoder call; None = from free memory
    fill: FillMethod = "idw"  # pixels without an occupied sample: filled, or nodata with "none"
    fill_max_distance: float = 10.0  # no height farther than this from every input point (map units)
    max_pixels: int | None = 100_000_000  # refuse larger outputs (None = no limit)
    min_ortho_coverage: float = 0.5  # refuse an ortho whose valid pixels cover less of the extent
    precision: Precision = "auto"  # auto = fp32 (mixed precision only when asked, CUDA only)
    confidence_delta: float = 0.5  # metres above/below the surface where confidence is probed
    min_points_per_window: int = 1
    threads: str | int = "auto"  # CPU: auto = the cores other processes leave free (threads.py), all, or N
    reserve_cores: int = 0  # CPU cores never used (the QGIS plugin keeps one for the desktop)
    prefetch: int | None = None  # windows prepared ahead on a worker thread; None = 2 on a GPU, 0 on the CPU
    # Fast mode: a pixel farther than this (metres) from the median of its 3 x 3 neighbourhood that
    # agrees with at most one of its neighbours is a speckle and takes that median (despeckle.py;
    # chosen on the validation split, docs/checkpoint_selection.md); 0 = off.
    despeckle: float = DEFAULT_DESPECKLE
    # Test-time symmetry averaging (symmetry.py): the network's logits averaged over this many
    # turned / mirrored copies of every window (1, 2, 4 or 8). Slower by about that factor; lowers
    # the surface's noise a little (docs/checkpoint_selection.md). 1 = off.
    symmetries: int = 1

    def stride(self) -> float:
        if self.window_stride is not None:
            return float(self.window_stride)
        return 48.0 if self.mode == "fast" else 16.0

    def blend_overlap(self) -> float:
        return float(self.overlap) if self.overlap is not None else 8.0


@dataclass
class ReconstructionResult:
    """What a run produced, on which device, how long it took and what it did."""

    dsm_path: Path
    confidence_path: Path | None
    device: str
    device_reason: str
    mode: str
    tiles: int  # windows encoded and decoded
    tiles_skipped: int  # windows without enough points
    seconds: float
    width: int
    height: int
    stats: dict[str, float] = field(default_factory=dict)


def with_overrides(options: ReconstructionOptions, overrides: dict[str, Any]) -> ReconstructionOptions:
    """``options`` with dotted fields replaced, e.g. ``{"evidence.far_blunder_gap": 0.0}``: how a
    validation or benchmark run asks for one setting other than the default without code.

    A value takes the type of the field's current value (``"0"`` for a float field is 0.0). Unknown
    names are refused with the names that exist there."""
    for key, value in overrides.items():
        options = _replace_path(options, key.split("."), value, key)
    return options


def _replace_path(obj: Any, path: list[str], value: Any, key: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if path[0] not in fields:
        raise InputError(f"Reconstruction option {key!r}: {type(obj).__name__} has no field {path[0]!r}. "
                         f"Known: {', '.join(fields)}.")
    current = getattr(obj, path[0])
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise InputError(f"Reconstruction option {key!r}: {path[0]!r} has no fields.")
        return dataclasses.replace(obj, **{path[0]: _replace_path(current, path[1:], value, key)})
    return dataclasses.replace(obj, **{path[0]: _typed(current, str(fields[path[0]].type), value, key)})


def _typed(current: Any, annotation: str, value: Any, key: str) -> Any:
    """``value`` as the field's type when given as text (a command-line NAME=VALUE)."""
    if not isinstance(value, str) or isinstance(current, str):
        return value
    if current is None:  # an optional number left to the mode's default: its annotation says which
        if value.lower() == "none":
            return None
        kind: type = int if "int" in annotation and "float" not in annotation else float
    else:
        kind = type(current)
    if kind is bool:
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
    elif kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    else:
        return value
    raise InputError(f"Reconstruction option {key!r}: {value!r} is not a {kind.__name__}.")
