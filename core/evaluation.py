"""DSM accuracy against a reference DSM: the numbers the paper reports, per region.

Residual r = DSM − reference on the reference's grid (the DSM is resampled onto it when grids
differ), where both are valid. Regions: overall; building = the building mask dilated by 2 px
(as in the paper, so facade pixels count as building); terrain = not building; plus any extra
masks; with ``with_step_regions``, the reference's height steps: *step top* and *step foot* (pixels
within 2 px of a jump of more than ``step_height`` between neighbours, above or below the middle
of their neighbourhood's range) and *off steps* (the rest). Gridding a stereo cloud errs at the
foot (fattened edges), a network that undoes fattening risks cutting the top; the overall MAE hides
which. NMAD uses the standard definition 1.4826·median(|r − median(r)|). With ``coregister`` the DSM is
first moved by the shift that best matches the reference (:mod:`.coregistration`), the way
accuracy reports separate a DSM's shape from a displacement of the whole; the shift is reported.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from .coregistration import Coregistration, estimate_shift, shift_dsm
from .errors import InputError, param
from .outputs import check_output_path, write_text_atomic
from .raster import GEOTIFF_SUFFIXES, GridSpec, RasterReader, grid_of, write_geotiff
from .vocabulary import DEFAULT_MAX_SHIFT, DEFAULT_STEP_HEIGHT, STEP_REACH_PX

NMAD_SCALE = 1.4826
#: The region names ``with_step_regions`` adds, in report order.
STEP_REGIONS = ("step top", "step foot", "off steps")


@dataclass(frozen=True)
class Metrics:
    """Error statistics of one region, in the DSM's height units."""

    count: int
    mae: float
    rmse: float
    medae: float
    nmad: float
    bias: float
    median: float
    std: float
    min: float
    max: float

    @classmethod
    def of(cls, residuals: np.ndarray) -> Metrics:
        r = np.asarray(residuals, dtype=np.float64)
        if r.size == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
        med = float(np.median(r))
        return cls(
            count=int(r.size), mae=float(np.mean(np.abs(r))), rmse=float(np.sqrt(np.mean(r * r))),
            medae=float(np.median(np.abs(r))), nmad=float(NMAD_SCALE * np.median(np.abs(r - med))),
            bias=float(np.mean(r)), median=med, std=float(np.std(r)), min=float(r.min()), max=float(r.max()),
        )


@dataclass
class EvaluationReport:
    """Metrics per region plus what was compared."""

    dsm: str
    reference: str
    regions: dict[str, Metrics] = field(default_factory=dict)
    units: str = "m"
    coregistration: Coregistration | None = None  # the shift applied to the DSM first, if any

    def to_dict(self) -> dict:
        return {"dsm": self.dsm, "reference": self.reference, "units": self.units,
                "coregistration": None if self.coregistration is None else self.coregistration.to_dict(),
                "regions": {k: asdict(v) for k, v in self.regions.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=True)

    def as_table(self) -> str:
        """A fixed-width table for terminals and the QGIS log."""
        cols = ("count", "mae", "rmse", "medae", "nmad", "bias")
        head = f"{'region':<12}" + "".join(f"{c.upper():>10}" for c in cols)
        lines = [head, "-" * len(head)]
        for name, m in self.regions.items():
            vals = [f"{m.count:>10d}"] + [f"{getattr(m, c):>10.3f}" for c in cols[1:]]
            lines.append(f"{name:<12}" + "".join(vals))
        if self.coregistration is not None:
            lines.append(f"Co-registered: {self.coregistration.describe(self.units)}")
        return "\n".join(lines)

    def as_html(self) -> str:
        cols = ("count", "mae", "rmse", "medae", "nmad", "bias", "median", "min", "max")
        rows = "".join(
            "<tr><td>" + name + "</td>" + "".join(
                f"<td>{getattr(m, c)}</td>" if c == "count" else f"<td>{getattr(m, c):.3f}</td>" for c in cols
            ) + "</tr>"
            for name, m in self.regions.items()
        )
        head = "".join(f"<th>{c.upper()}</th>" for c in cols)
        coreg = "" if self.coregistration is None else f"<br>Co-registered: {self.coregistration.describe(self.units)}"
        return (
            "<html><head><meta charset='utf-8'><title>DSM evaluation</title></head><body>"
            f"<h3>DSM evaluation</h3><p>DSM: {self.dsm}<br>Reference: {self.reference}<br>"
            f"Units: {self.units}{coreg}</p><table border='1' cellpadding='3'><tr><th>region</th>{head}</tr>"
            f"{rows}</table></body></html>"
        )


def _read_on(path: str | os.PathLike[str], grid: GridSpec, what: str, resampling: str) -> np.ndarray:
    # A raster in another CRS is reprojected by the warped read: never mixed silently.
    with RasterReader(path, what=what) as reader:
        return reader.read_on_grid(grid, resampling=resampling, bands=[1])[0]


def _resampling_for(path: str | os.PathLike[str], grid: GridSpec) -> str:
    """Nearest when the grids coincide pixel for pixel (no smoothing), bilinear otherwise."""
    other = grid_of(path)
    same = (other.crs == grid.crs and abs(other.resolution - grid.resolution) < 1e-9
            and abs(((other.transform.c - grid.transform.c) / grid.resolution) % 1) < 1e-6
            and abs(((other.transform.f - grid.transform.f) / grid.resolution) % 1) < 1e-6)
    return "nearest" if same else "bilinear"


def step_regions(reference: np.ndarray, step_height: float = DEFAULT_STEP_HEIGHT,
                 reach_px: int = STEP_REACH_PX) -> dict[str, np.ndarray]:
    """{"step top", "step foot", "off steps"}: boolean masks over the finite pixels of ``reference``.

    A step is a jump of more than ``step_height`` within a pixel's 3 x 3 neighbourhood; pixels within
    ``reach_px`` of one are its top where they lie at or above the middle of the highest and lowest
    height within ``reach_px + 1`` pixels, else its foot."""
    finite = np.isfinite(reference)
    hi = ndimage.maximum_filter(np.where(finite, reference, -np.inf), size=3, mode="nearest")
    lo = ndimage.minimum_filter(np.where(finite, reference, np.inf), size=3, mode="nearest")
    with np.errstate(invalid="ignore"):
        jump = finite & (hi - lo > step_height)
    near = finite & (ndimage.binary_dilation(jump, structure=np.ones((3, 3), bool), iterations=reach_px)
                     if reach_px > 0 else jump)
    size = 2 * reach_px + 3
    top_h = ndimage.maximum_filter(np.where(finite, reference, -np.inf), size=size, mode="nearest")
    low_h = ndimage.minimum_filter(np.where(finite, reference, np.inf), size=size, mode="nearest")
    with np.errstate(invalid="ignore"):
        upper = reference >= (top_h + low_h) / 2
    return dict(zip(STEP_REGIONS, (near & upper, near & ~upper, finite & ~near)))


def evaluate_dsm(
    dsm_path: str | os.PathLike[str],
    reference_path: str | os.PathLike[str],
    building_mask: str | os.PathLike[str] | None = None,
    extra_masks: Mapping[str, str | os.PathLike[str]] | None = None,
    residual_out: str | os.PathLike[str] | None = None,
    json_out: str | os.PathLike[str] | None = None,
    html_out: str | os.PathLike[str] | None = None,
    building_dilation_px: int = 2,
    coregister: bool = False,
    max_shift: float = DEFAULT_MAX_SHIFT,
    with_step_regions: bool = False,
    step_height: float = DEFAULT_STEP_HEIGHT,
) -> EvaluationReport:
    """Compare ``dsm_path`` with ``reference_path`` and optionally write residual/JSON/HTML.

    ``with_step_regions``: also report the reference's height steps (:func:`step_regions`).

    ``coregister``: move the DSM by the shift (within ``max_shift`` map units horizontally) that
    best matches the reference before taking the residual.
    """
    if isinstance(building_dilation_px, bool) or not isinstance(building_dilation_px, int) or building_dilation_px < 0:
        raise InputError(f"{param('building_dilation_px')} must be a whole number of pixels >= 0, "
                         f"got {building_dilation_px}.")
    if with_step_regions and (isinstance(step_height, bool) or not isinstance(step_height, (int, float))
                              or not np.isfinite(step_height) or step_height <= 0):
        raise InputError(f"{param('step_height')} must be a height difference > 0 (map units), got {step_height!r}.")
    inputs = [dsm_path, reference_path, building_mask, *(extra_masks or {}).values()]
    if residual_out is not None:
        residual_out = check_output_path(residual_out, inputs, "residual_out", GEOTIFF_SUFFIXES)
    if json_out is not None:
        json_out = check_output_path(json_out, inputs, "json_out", (".json",))
    if html_out is not None:
        html_out = check_output_path(html_out, inputs, "html_out", (".html", ".htm"))
    grid = grid_of(reference_path, "reference DSM")
    with RasterReader(reference_path, what="reference DSM") as ref_reader:
        ref = ref_reader.read_on_grid(grid, "nearest", bands=[1])[0]
    dsm_grid = grid_of(dsm_path, "DSM")
    if (dsm_grid.crs is None) != (grid.crs is None):
        raise InputError(
            f"{dsm_path if dsm_grid.crs is None else reference_path} has no CRS while the other raster "
            "has one; assign the CRS (e.g. with gdal_edit.py -a_srs) so they can be compared."
        )
    dsm = _read_on(dsm_path, grid, "DSM", _resampling_for(dsm_path, grid))
    valid = np.isfinite(dsm) & np.isfinite(ref)
    if not valid.any():
        raise InputError(
            f"{dsm_path} and {reference_path} have no valid pixels in common (no overlap, or one is "
            "all nodata). Check that both cover the same area in the same CRS."
        )
    shift = None
    if coregister:
        shift = estimate_shift(dsm, ref, grid.resolution, max_shift)
        dsm = shift_dsm(dsm, shift, grid.resolution)
        valid = np.isfinite(dsm) & np.isfinite(ref)
    residual = np.where(valid, dsm - ref, np.nan).astype(np.float32)
    regions: dict[str, np.ndarray] = {"overall": valid}
    if building_mask is not None:
        mask = _read_on(building_mask, grid, "building mask", "nearest")
        building = np.nan_to_num(mask, nan=0.0) > 0.5
        if building_dilation_px > 0:
            building = ndimage.binary_dilation(building, structure=np.ones((3, 3), bool),
                                               iterations=building_dilation_px)
        regions["building"] = valid & building
        regions["terrain"] = valid & ~building
    for name, path in (extra_masks or {}).items():
        mask = _read_on(path, grid, f"mask '{name}'", "nearest")
        regions[name] = valid & (np.nan_to_num(mask, nan=0.0) > 0.5)
    if with_step_regions:
        regions.update({name: valid & m for name, m in step_regions(ref, step_height).items()})
    report = EvaluationReport(dsm=str(dsm_path), reference=str(reference_path), coregistration=shift,
                              regions={k: Metrics.of(residual[m]) for k, m in regions.items()})
    if residual_out is not None:
        write_geotiff(residual_out, residual, grid)
    if json_out is not None:
        write_text_atomic(json_out, report.to_json())
    if html_out is not None:
        write_text_atomic(html_out, report.as_html())
    return report


__all__ = ["Metrics", "EvaluationReport", "evaluate_dsm", "step_regions", "STEP_REGIONS"]
