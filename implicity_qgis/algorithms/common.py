"""What every ImpliCity algorithm shares: dependency checks, error mapping, progress, point-cloud input.

The algorithms are thin: they turn Processing parameters into arguments of the core jobs and
core's :class:`ImplicityError` into :class:`QgsProcessingException` with the same message (CLI
option names in it are replaced by the parameter labels the user sees). Core is imported lazily,
inside ``run``, so the provider loads even when numpy/rasterio/torch are missing.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterPointCloudLayer,
    QgsRectangle,
)
from qgis.PyQt.QtGui import QIcon

from ...core.errors import CancelledError, ImplicityError
from .. import dependencies as deps

ICON_PATH = Path(__file__).resolve().parents[2] / "icon.png"
POINT_CLOUD_SUFFIXES = ("las", "laz", "ply", "npz")
POINT_CLOUD_FILTER = "Point clouds (*.las *.laz *.ply *.npz *.LAS *.LAZ *.PLY *.NPZ)"

POINTS = "POINTS"
POINTS_FILE = "POINTS_FILE"
POINTS_CRS = "POINTS_CRS"
RESOLUTION = "RESOLUTION"
EXTENT = "EXTENT"
OUTPUT = "OUTPUT"

POINTS_HELP = (
    "<b>Point cloud layer</b> or <b>Point cloud file</b> (give one): LAS, LAZ, PLY or NPZ. QGIS 3.22 "
    "without PDAL cannot open LAS/LAZ as layers, so the file is the usual route; a point-cloud layer "
    "is read from its source file.<br>"
    "<b>Point cloud CRS</b>: only needed when the file has no CRS in its header (e.g. EPSG:28992 for "
    "Dutch AHN, EPSG:2154 for French LiDAR HD); it overrides the file's CRS when given.<br>"
)
RESOLUTION_HELP = "<b>Resolution</b>: output pixel size in the point cloud's map units (e.g. 0.5 m).<br>"
EXTENT_HELP = ("<b>Extent</b> (optional): the area to compute, reprojected to the point cloud's CRS; "
               "default: the extent of the points.<br>")

#: CLI option names in core messages → the labels of our parameters.
COMMON_LABELS = {
    "--points-crs": "the 'Point cloud CRS' parameter",
    "--points": "the point cloud",
    "--resolution": "'Resolution'",
    "--extent": "'Extent'",
    "--out": "the output",
}


def plugin_icon() -> QIcon:
    return QIcon(str(ICON_PATH))


def translate_options(message: str, labels: dict[str, str]) -> str:
    """Replace CLI option names (``--points-crs``) in a core message by parameter labels."""
    if not labels:
        return message
    pattern = re.compile("|".join(re.escape(k) for k in sorted(labels, key=len, reverse=True)) + r"(?![\w-])")
    return pattern.sub(lambda m: labels[m.group(0)], message)


def progress_callback(feedback: QgsProcessingFeedback, start: float = 0.0, end: float = 100.0) -> Callable[[float, str], None]:
    """A core ``progress(fraction, message)`` that drives the Processing progress bar and text."""
    last = {"message": None}

    def report(fraction: float, message: str) -> None:
        feedback.setProgress(start + (end - start) * max(0.0, min(1.0, float(fraction))))
        if message and message != last["message"]:
            feedback.setProgressText(message)
            last["message"] = message

    return report


def to_qgs_crs(crs: Any) -> QgsCoordinateReferenceSystem:
    """A QGIS CRS from a rasterio CRS (EPSG code when it has one, else WKT)."""
    if crs is None:
        return QgsCoordinateReferenceSystem()
    epsg = crs.to_epsg()
    return QgsCoordinateReferenceSystem(f"EPSG:{epsg}") if epsg else QgsCoordinateReferenceSystem.fromWkt(crs.to_wkt())


def crs_argument(crs: QgsCoordinateReferenceSystem) -> "str | None":
    """A QGIS CRS as core accepts it ('EPSG:28992' or WKT); None when not set."""
    if not crs.isValid():
        return None
    return crs.authid() or crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)


class ImpliCityAlgorithm(QgsProcessingAlgorithm):
    """Base class: dependency check, error mapping and the point-cloud parameters."""

    REQUIREMENTS: tuple[deps.Requirement, ...] = deps.GEODATA
    LABELS: dict[str, str] = {}
    GROUP = "DSM"
    GROUP_ID = "dsm"

    def createInstance(self) -> "ImpliCityAlgorithm":  # noqa: N802
        return type(self)()

    def group(self) -> str:
        return self.GROUP

    def groupId(self) -> str:  # noqa: N802
        return self.GROUP_ID

    def icon(self) -> QIcon:
        return plugin_icon()

    def labels(self) -> dict[str, str]:
        return {**COMMON_LABELS, **self.LABELS}

    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext) -> tuple[bool, str]:  # noqa: N802
        # Runs in the main thread before the task starts: the place to offer installing packages.
        try:
            deps.require(self.REQUIREMENTS, offer_install=True)
        except deps.MissingDependencies as exc:
            return False, str(exc)
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict:
        try:
            deps.require(self.REQUIREMENTS)
            return self.run_job(parameters, context, feedback)
        except deps.MissingDependencies as exc:
            raise QgsProcessingException(str(exc)) from None
        except CancelledError as exc:
            feedback.reportError(str(exc))
            raise QgsProcessingException(translate_options(str(exc), self.labels())) from None
        except ImplicityError as exc:
            raise QgsProcessingException(translate_options(str(exc), self.labels())) from None

    def run_job(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        raise NotImplementedError

    # -- point-cloud input -------------------------------------------------------------------------

    def add_point_cloud_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterPointCloudLayer(POINTS, "Point cloud layer", optional=True))
        file_param = QgsProcessingParameterFile(POINTS_FILE, "Point cloud file (LAS/LAZ/PLY/NPZ)",
                                                optional=True, fileFilter=POINT_CLOUD_FILTER)
        self.addParameter(file_param)
        self.addParameter(QgsProcessingParameterCrs(POINTS_CRS, "Point cloud CRS (when the file has none)",
                                                    optional=True))

    def add_resolution_and_extent(self, default_resolution: float = 0.5) -> None:
        self.addParameter(QgsProcessingParameterNumber(RESOLUTION, "Resolution (map units per pixel)",
                                                       QgsProcessingParameterNumber.Double, default_resolution,
                                                       minValue=0.001))
        extent = QgsProcessingParameterExtent(EXTENT, "Extent (default: the extent of the points)", optional=True)
        self.addParameter(extent)

    def point_cloud_source(self, parameters: dict, context: QgsProcessingContext) -> tuple[str, "str | None"]:
        """(file path, CRS argument) from the layer or file parameter plus the CRS parameter."""
        path = self.parameterAsFile(parameters, POINTS_FILE, context)
        layer = self.parameterAsPointCloudLayer(parameters, POINTS, context) if parameters.get(POINTS) else None
        if path and layer is not None:
            raise QgsProcessingException(
                "Give either a point cloud layer or a point cloud file, not both (they may differ).")
        crs = crs_argument(self.parameterAsCrs(parameters, POINTS_CRS, context)) if parameters.get(POINTS_CRS) else None
        if layer is not None:
            path = layer.source().split("|")[0]
            if crs is None and layer.crs().isValid():
                crs = crs_argument(layer.crs())
        if not path:
            raise QgsProcessingException(
                "No point cloud: choose a point cloud layer or a LAS/LAZ/PLY/NPZ file.")
        if Path(path).suffix.lower().lstrip(".") not in POINT_CLOUD_SUFFIXES:
            raise QgsProcessingException(
                f"{path}: ImpliCity reads LAS, LAZ, PLY or NPZ point clouds; convert it to one of these "
                "(e.g. with PDAL: pdal translate in.ept.json out.laz).")
        return path, crs

    def read_point_cloud(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback):
        """The core PointCloud with a CRS (or the clear missing-CRS message)."""
        from ...core.pointcloud import read_point_cloud

        path, crs = self.point_cloud_source(parameters, context)
        feedback.setProgressText(f"Reading {Path(path).name}")
        cloud = read_point_cloud(path, crs=crs)
        cloud.require_crs(hint="the 'Point cloud CRS' parameter")
        from ...core.crs import describe_crs

        feedback.pushInfo(f"Point cloud: {path} ({len(cloud):,} points, {describe_crs(cloud.crs)})")
        return cloud

    def extent_in(self, parameters: dict, context: QgsProcessingContext,
                  crs: QgsCoordinateReferenceSystem) -> "tuple[float, float, float, float] | None":
        """The Extent parameter in ``crs`` (reprojected when it carries another CRS), or None."""
        if not parameters.get(EXTENT):
            return None
        rect: QgsRectangle = self.parameterAsExtent(parameters, EXTENT, context, crs)
        if rect.isNull() or rect.isEmpty():
            return None
        return rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()


def check_raster_overlap(layer, layer_label: str, target_crs: QgsCoordinateReferenceSystem,
                         bounds: tuple[float, float, float, float], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> None:
    """Refuse a raster without CRS or not overlapping ``bounds`` (in ``target_crs``); log reprojection."""
    if not layer.crs().isValid():
        raise QgsProcessingException(
            f"{layer_label} '{layer.name()}' has no CRS. Set it (Layer Properties > Source) so it can be "
            f"reprojected to the point cloud's {target_crs.authid() or 'CRS'}.")
    extent = layer.extent()
    if layer.crs() != target_crs:
        transform = QgsCoordinateTransform(layer.crs(), target_crs, context.transformContext())
        extent = transform.transformBoundingBox(extent)
        feedback.pushInfo(f"{layer_label} '{layer.name()}' is in {layer.crs().authid()}; it is reprojected "
                          f"on the fly to the point cloud's {target_crs.authid()}.")
    xmin, ymin, xmax, ymax = bounds
    if extent.xMaximum() < xmin or extent.xMinimum() > xmax or extent.yMaximum() < ymin or extent.yMinimum() > ymax:
        raise QgsProcessingException(
            f"{layer_label} '{layer.name()}' does not overlap the point cloud: it covers "
            f"{extent.xMinimum():.1f},{extent.yMinimum():.1f},{extent.xMaximum():.1f},{extent.yMaximum():.1f} "
            f"and the points {xmin:.1f},{ymin:.1f},{xmax:.1f},{ymax:.1f} (in {target_crs.authid()}). "
            "Check that both show the same place and that their CRSs are right.")


def advanced(param: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    """Mark a parameter as advanced (folded away in the dialog)."""
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return param
