"""A second view of an ortho-image, made by parallax-warping it with the surface heights.

Why: ImpliCity-stereo takes two ortho-images of the same area seen from different satellite
positions; in each, elevated objects lean away from the view direction by (height above ground) ·
tan(off-nadir angle). Our real scenes have one ortho (or one set of point colours), so the second
view is the first one warped by that parallax, with the reference DSM giving the heights. It is
a geometric simulation: no new radiometry, no occluded facades — documented as such.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

#: Ground is the lowest surface within this distance (metres): a morphological opening.
GROUND_WINDOW_M = 40.0
#: Steeper views than this are not ortho-images any more (and would lean most roofs out of a patch).
MAX_OFF_NADIR_DEG = 60.0


def height_above_ground(dsm: np.ndarray, res: float) -> np.ndarray:
    """NDSM ≈ DSM − its morphological opening over GROUND_WINDOW_M (NaN cells count as ground)."""
    finite = np.isfinite(dsm)
    base = np.where(finite, dsm, np.nanmin(dsm) if finite.any() else 0.0)
    size = max(3, int(round(GROUND_WINDOW_M / res)) | 1)
    ground = ndimage.maximum_filter(ndimage.minimum_filter(base, size=size, mode="nearest"), size=size, mode="nearest")
    return np.clip(base - ground, 0.0, None)


def parallax_view(image: np.ndarray, dsm: np.ndarray, res: float, azimuth_deg: float = 90.0,
                  off_nadir_deg: float = 20.0) -> np.ndarray:
    """The second view of a stereo pair: ``image`` (H, W, rows north→south, NaN = no data) as seen
    from ``off_nadir_deg`` with elevated objects leaning towards ``azimuth_deg`` (:func:`leaning_view`).

    Until 2026-11-27 each output pixel was sampled at its own height, so a roof moved only within its
    footprint; the stereo patches prepared before then, and the stereo models trained on them, had
    those views."""
    return leaning_view(image, dsm, res, azimuth_deg, off_nadir_deg)


def leaning_view(image: np.ndarray, dsm: np.ndarray, res: float, azimuth_deg: float,
                 off_nadir_deg: float) -> np.ndarray:
    """``image`` (H, W, rows north→south, NaN = no data) as a standard ortho of an off-nadir view shows
    it: every pixel moved by (height above ground) · tan(``off_nadir_deg``) / res in the direction
    ``azimuth_deg`` (clockwise from north, 90 = east; away from the sensor), higher pixels hiding lower
    ones where they land together.

    Every pixel goes where *its* height sends it (forward, with a height buffer): sampling each output
    pixel at its own height instead would move a roof only within its footprint and cut it where it
    should overhang the ground. What was under a moved roof and is now seen (the facade, in a real
    view) takes the nearest pixel shown."""
    if image.shape != dsm.shape:
        raise ValueError(f"leaning_view: the image {image.shape} and the surface {dsm.shape} differ in shape")
    if not 0.0 <= off_nadir_deg < MAX_OFF_NADIR_DEG:
        raise ValueError(f"leaning_view: the off-nadir angle must lie in [0, {MAX_OFF_NADIR_DEG:g})°, "
                         f"got {off_nadir_deg}")
    height = height_above_ground(dsm, res)
    lean = height * math.tan(math.radians(off_nadir_deg)) / res  # pixels
    az = math.radians(azimuth_deg)
    rows, cols = np.indices(image.shape)
    tr = np.rint(rows - math.cos(az) * lean).astype(np.int64)
    tc = np.rint(cols + math.sin(az) * lean).astype(np.int64)
    inside = (tr >= 0) & (tr < image.shape[0]) & (tc >= 0) & (tc < image.shape[1])
    target = tr[inside] * image.shape[1] + tc[inside]
    h = height[inside]
    top = np.full(image.size, -np.inf)
    np.maximum.at(top, target, h)
    shown = h >= top[target]                                    # the highest of the pixels landing there
    out = np.full(image.size, np.nan, np.float32)
    written = np.zeros(image.size, bool)
    out[target[shown]] = image[inside][shown]
    written[target[shown]] = True
    written = written.reshape(image.shape)
    out = out.reshape(image.shape)
    if not written.all():
        nearest = ndimage.distance_transform_edt(~written, return_distances=False, return_indices=True)
        out = out[nearest[0], nearest[1]]
    return out
