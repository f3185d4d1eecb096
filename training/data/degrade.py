"""A *family* of photogrammetric degradations, drawn afresh for every training sample.

Why a family: a model trained on one simulator learns that simulator. Users bring clouds from
CARS, s2p, ASP, MicMac, Metashape or ODM, whose errors differ, so every effect here has
structurally different variants and every parameter is drawn from a wide range per sample
(:class:`DegradationFamily`). The input cloud is made from the reference surface of the patch
itself (the same raster the labels come from), which also works for synthetic cities and for
any LiDAR scene. The variants are documented one by one in ``training/data/README.md``.

A variant can be *held out* (``DegradationFamily.exclude``) so that an evaluation on it measures
generalisation to a degradation the model never saw; :func:`held_out_family` builds the family
that draws only the held-out variant.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from implicity.core.errors import InputError
from implicity.core.gridding import fill_nearest

from .simulate import smooth_field
from .visibility import blocked_mask

#: Every effect and its variants (the vocabulary of ``exclude``, ``only`` and ``include``).
VARIANTS: dict[str, tuple[str, ...]] = {
    "noise": ("independent", "correlated", "mixed"),
    "fattening": ("none", "dilation", "max_mean", "directional"),
    "sampling": ("random", "pixel_grid"),
    "holes": ("occlusion", "shadow", "blobs"),
}

#: Variants added after datasets, validation sets and the held-out protocol were fixed: drawn only
#: where a family ``include``s them (or forces them with ``only``), so that every older family, and
#: every seeded draw made from it, stays exactly as it was.
OPT_IN_VARIANTS: tuple[str, ...] = ("fattening:directional",)


@dataclass(frozen=True)
class DegradationFamily:
    """Ranges of every effect (lengths in metres); each sample draws its own values."""

    noise_std: tuple[float, float] = (0.05, 1.0)          # total height noise, log-uniform
    noise_scale_m: tuple[float, float] = (1.0, 8.0)       # correlation length of correlated noise
    slope_noise_probability: float = 0.5                  # chance that noise grows with slope
    slope_gain: tuple[float, float] = (0.05, 0.5)         # extra std per unit slope
    fattening_m: tuple[float, float] = (0.5, 2.5)         # reach of edge fattening
    fattening_fraction: tuple[float, float] = (0.3, 1.0)  # share of edges fattened (dilation)
    edge_step_m: float = 1.5                              # height jump that counts as an edge
    hole_fraction: tuple[float, float] = (0.0, 0.4)       # cap on the share of cells emptied
    density: tuple[float, float] = (1.0, 20.0)            # points per m², log-uniform
    density_variation: tuple[float, float] = (0.0, 0.8)   # std of log-density modulation
    pixel_grid_gsd: tuple[float, ...] = (0.5, 0.7, 1.0)   # one point per pixel of this size
    blunder_fraction: tuple[float, float] = (0.0, 0.03)
    blunder_std_m: tuple[float, float] = (2.0, 15.0)
    far_outlier_share: float = 0.2                        # share of blunders that are far (50–300 m)
    vertical_bias_std_m: float = 0.2                      # whole-patch height offset
    planimetric_shift_std_m: float = 0.3                  # whole-patch xy shift
    xy_noise_std_m: tuple[float, float] = (0.0, 0.3)
    directional_width_px: tuple[float, float] = (1.0, 3.0)  # width of the one-sided footprint (directional)
    exclude: tuple[str, ...] = ()                         # "effect:variant" never drawn (held out)
    only: tuple[str, ...] = ()                            # "effect:variant" always drawn (held-out tests)
    include: tuple[str, ...] = ()                         # opt-in variants (OPT_IN_VARIANTS) drawn too

    def __post_init__(self) -> None:
        for item in self.include:
            if item not in OPT_IN_VARIANTS:
                raise InputError(f"degradation: include '{item}' is not an opt-in variant; opt-in variants: "
                                 f"{', '.join(OPT_IN_VARIANTS)} (every other variant is drawn unless excluded).")
        for item in (*self.exclude, *self.only, *self.include):
            effect, _, variant = str(item).partition(":")
            if effect not in VARIANTS or variant not in VARIANTS[effect]:
                known = ", ".join(f"{e}:{v}" for e, vs in VARIANTS.items() for v in vs)
                raise InputError(f"degradation variant '{item}' is unknown; known: {known}.")
        for effect in VARIANTS:
            if effect != "holes" and not self.choices(effect):
                raise InputError(f"degradation: every variant of '{effect}' is excluded; keep at least one.")

    def choices(self, effect: str) -> tuple[str, ...]:
        """The variants of ``effect`` this family may draw."""
        forced = tuple(v.split(":", 1)[1] for v in self.only if v.startswith(effect + ":"))
        if forced:
            return forced
        return tuple(v for v in VARIANTS[effect] if f"{effect}:{v}" not in self.exclude
                     and (f"{effect}:{v}" not in OPT_IN_VARIANTS or f"{effect}:{v}" in self.include))


def family_from_mapping(values: Mapping[str, Any] | None, where: str = "degradation") -> DegradationFamily:
    """A family from a YAML mapping (lists become tuples); unknown keys are errors."""
    from implicity.core.yamlconfig import dataclass_from_mapping

    return dataclass_from_mapping(DegradationFamily, values, where)


def held_out_family(family: DegradationFamily) -> DegradationFamily:
    """The family that draws only the variants ``family`` excludes (for the held-out test set)."""
    if not family.exclude:
        raise InputError("degradation: no variant is held out (exclude is empty).")
    return dataclasses.replace(family, exclude=(), only=family.exclude)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _disk(radius_px: float) -> np.ndarray:
    r = max(1, int(math.ceil(radius_px)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (xx ** 2 + yy ** 2) <= radius_px ** 2 + 1e-9


def _one_sided(reach_px: float, azimuth_deg: float, width_px: float) -> np.ndarray:
    """Footprint of the cells at most ``reach_px`` away from the centre towards ``azimuth_deg``
    (clockwise from north; rows run south) and within ``width_px`` / 2 of that line.

    Why one-sided: a matcher fills the side of a building it cannot see with the roof it can,
    along the view direction only, so the fattened band lies on one side of each building."""
    r = max(1, int(math.ceil(reach_px)))
    rows, cols = np.mgrid[-r:r + 1, -r:r + 1].astype(float)
    east, north = math.sin(math.radians(azimuth_deg)), math.cos(math.radians(azimuth_deg))
    along = cols * east - rows * north
    across = np.abs(cols * north + rows * east)
    return (along >= 0) & (along <= reach_px + 1e-9) & (across <= width_px / 2 + 1e-9)


def _fatten(rng: np.random.Generator, surface: np.ndarray, res: float, fam: DegradationFamily,
            variant: str, drawn: dict[str, Any]) -> np.ndarray:
    """Foreground fattening: the low side of height steps takes the height of the high side."""
    if variant == "none":
        return surface
    reach_px = rng.uniform(*fam.fattening_m) / res
    drawn["fattening_m"] = reach_px * res
    if variant == "max_mean":  # matching windows: max over the window, then its mean (rounded edges)
        size = max(2, int(round(2 * reach_px)) + 1)
        return ndimage.uniform_filter(ndimage.maximum_filter(surface, size=size, mode="nearest"), size=size,
                                      mode="nearest")
    if variant == "directional":
        drawn["fattening_azimuth_deg"] = float(rng.uniform(0.0, 360.0))
        footprint = _one_sided(reach_px, drawn["fattening_azimuth_deg"], rng.uniform(*fam.directional_width_px))
    else:
        footprint = _disk(reach_px)
    dilated = ndimage.grey_dilation(surface, footprint=footprint, mode="nearest")
    step = dilated - surface
    patches = smooth_field(rng, surface.shape, 8.0 / res)
    fraction = rng.uniform(*fam.fattening_fraction)
    drawn["fattened_edge_share"] = fraction
    chosen = patches >= np.quantile(patches, 1.0 - fraction) if fraction < 1 else np.ones(surface.shape, bool)
    blend = rng.uniform(0.6, 1.0, surface.shape)
    return surface + np.where((step > fam.edge_step_m) & chosen, blend * step, 0.0)


def _holes(rng: np.random.Generator, surface: np.ndarray, res: float, fam: DegradationFamily) -> tuple[np.ndarray, list[str]]:
    """Keep probability per cell after occlusions, cast shadows and blobs (each on or off)."""
    keep = np.ones(surface.shape)
    used = []
    for variant in fam.choices("holes"):
        forced = f"holes:{variant}" in fam.only
        if not forced and rng.random() < 0.5:
            continue
        used.append(variant)
        if variant == "occlusion":
            for _ in range(int(rng.integers(1, 3))):
                hidden = blocked_mask(surface, res, rng.uniform(0, 360), rng.uniform(55, 85))
                keep *= 1.0 - rng.uniform(0.6, 1.0) * hidden
        elif variant == "shadow":
            shadow = blocked_mask(surface, res, rng.uniform(0, 360), rng.uniform(25, 70))
            keep *= 1.0 - rng.uniform(0.3, 0.9) * shadow
        else:
            field = smooth_field(rng, surface.shape, rng.uniform(2.0, 8.0) / res)
            keep *= field < np.quantile(field, 1.0 - rng.uniform(0.02, 0.25))
    target = rng.uniform(*fam.hole_fraction)
    lost = 1.0 - float(keep.mean())
    if lost > target > 0:  # too many holes for this sample: give part of them back
        keep = 1.0 - (1.0 - keep) * (target / lost)
    elif target == 0:
        keep = np.ones(surface.shape)
    return keep, used


def _sample_xy(rng: np.random.Generator, shape: tuple[int, int], res: float, fam: DegradationFamily,
               variant: str) -> np.ndarray:
    """Planimetric positions (N, 2) in metres from the grid's north-west corner (x east, y south)."""
    h, w = shape
    if variant == "pixel_grid":
        gsd = float(rng.choice(fam.pixel_grid_gsd))
        xs = np.arange(gsd / 2, w * res, gsd)
        ys = np.arange(gsd / 2, h * res, gsd)
        xx, yy = np.meshgrid(xs + rng.uniform(-gsd / 2, gsd / 2), ys + rng.uniform(-gsd / 2, gsd / 2))
        xy = np.column_stack([xx.ravel(), yy.ravel()])
        return xy[(xy[:, 0] >= 0) & (xy[:, 0] < w * res) & (xy[:, 1] >= 0) & (xy[:, 1] < h * res)]
    density = _log_uniform(rng, *fam.density)
    n = rng.poisson(density * h * w * res * res)
    xy = rng.uniform(0.0, 1.0, (n, 2)) * np.array([w * res, h * res])
    sigma = rng.uniform(*fam.density_variation)
    if sigma > 0:  # texture-poor areas match worse: thin by a smooth log-normal field
        field = np.exp(sigma * smooth_field(rng, shape, rng.uniform(4.0, 16.0) / res))
        r = np.minimum((xy[:, 1] / res).astype(int), h - 1)
        c = np.minimum((xy[:, 0] / res).astype(int), w - 1)
        xy = xy[rng.random(n) < field[r, c] / field.max()]
    return xy


@dataclass
class Degradation:
    """One degraded cloud and what was drawn (for logs and tests)."""

    xyz: np.ndarray  # (N, 3): x east and y north in metres from the grid's south-west corner, z absolute
    drawn: dict[str, Any] = field(default_factory=dict)


def degrade_surface(rng: np.random.Generator, dsm: np.ndarray, valid: np.ndarray | None, res: float,
                    fam: DegradationFamily) -> Degradation:
    """A photogrammetric-like cloud of the surface ``dsm`` (rows north→south, NaN = unknown)."""
    dsm = np.asarray(dsm, dtype=np.float64)
    known = np.isfinite(dsm) & (valid > 0 if valid is not None else True)
    if not known.any():
        return Degradation(np.zeros((0, 3)), {"empty": True})
    surface = fill_nearest(np.where(known, dsm, np.nan))
    surface = np.where(np.isfinite(surface), surface, float(np.nanmedian(dsm[known])))
    drawn: dict[str, Any] = {}

    drawn["fattening"] = str(rng.choice(fam.choices("fattening")))
    observed = _fatten(rng, surface, res, fam, drawn["fattening"], drawn)
    keep, drawn["holes"] = _holes(rng, surface, res, fam)
    keep = np.where(known, keep, 0.0)

    drawn["sampling"] = str(rng.choice(fam.choices("sampling")))
    xy = _sample_xy(rng, dsm.shape, res, fam, drawn["sampling"])
    h, w = dsm.shape
    r = np.minimum((xy[:, 1] / res).astype(int), h - 1)
    c = np.minimum((xy[:, 0] / res).astype(int), w - 1)
    kept = rng.random(len(xy)) < keep[r, c]
    xy, r, c = xy[kept], r[kept], c[kept]
    drawn["hole_share"] = 1.0 - float(keep[known].mean())
    drawn["points_per_m2"] = len(xy) / max(float(known.sum()) * res * res, 1e-9)
    z = observed[r, c].copy()

    drawn["noise"] = str(rng.choice(fam.choices("noise")))
    total = _log_uniform(rng, *fam.noise_std)
    share = {"independent": 0.0, "correlated": 1.0}.get(drawn["noise"], rng.uniform(0.2, 0.8))
    sigma_i = total * math.sqrt(1.0 - share)
    sigma_c = total * math.sqrt(share)
    drawn["noise_correlated_share"] = share
    if sigma_c > 0:
        scale = rng.uniform(*fam.noise_scale_m) / res
        drawn["noise_scale_m"] = scale * res
        z += sigma_c * smooth_field(rng, dsm.shape, scale)[r, c]
    if sigma_i > 0:
        per_point = np.full(len(z), sigma_i)
        drawn["slope_noise"] = bool(rng.random() < fam.slope_noise_probability)
        if drawn["slope_noise"]:
            gy, gx = np.gradient(surface, res)
            per_point = per_point + rng.uniform(*fam.slope_gain) * np.clip(np.hypot(gx, gy), 0, 4)[r, c]
        z += rng.standard_normal(len(z)) * per_point
    drawn["noise_std"] = total

    blunders = rng.random(len(z)) < rng.uniform(*fam.blunder_fraction)
    drawn["blunder_share"] = float(blunders.mean()) if len(z) else 0.0
    far = blunders & (rng.random(len(z)) < fam.far_outlier_share)
    near = blunders & ~far
    z[near] += rng.normal(0.0, rng.uniform(*fam.blunder_std_m), int(near.sum()))
    z[far] += rng.choice([-1.0, 1.0], int(far.sum())) * rng.uniform(50.0, 300.0, int(far.sum()))

    bias = float(rng.normal(0.0, fam.vertical_bias_std_m))
    shift = rng.normal(0.0, fam.planimetric_shift_std_m, 2)  # (east, south) in metres
    z += bias
    xy = xy + shift + rng.normal(0.0, rng.uniform(*fam.xy_noise_std_m), xy.shape)
    drawn["vertical_bias_m"] = bias
    drawn["planimetric_shift_m"] = (float(shift[0]), -float(shift[1]))  # (east, north)
    # grid frame (x east, y south from the north-west corner) → x east, y north from the south-west corner
    xyz = np.column_stack([xy[:, 0], h * res - xy[:, 1], z])
    return Degradation(xyz, drawn)
