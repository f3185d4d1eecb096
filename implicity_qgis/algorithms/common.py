"""What every ImpliCity algorithm shares: dependency checks, error mapping, progress, point-cloud input.

The algorithms are thin: they turn Processing parameters into arguments of the core jobs and
core's :class:`ImplicityError` into :class:`QgsProcessingException` with the same message, the core
parameters it names rendered as the labels the user sees (:data:`COMMON_LABELS` and each
algorithm's ``LABELS``). Core is imported lazily, inside ``run``, so the provider loads even when
numpy/rasterio/torch are missing.
"""
from __future__ import annotations

import inspect
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsMapLayer,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterPointCloudLayer,
    QgsProject,
    QgsProperty,
    QgsProviderRegistry,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QCoreApplication, QThread, QTimer
from qgis.PyQt.QtGui import QIcon

from ...core.errors import CancelledError, ImplicityError, InputError, param
from ...core.progress import ProgressFn
from .. import dependencies as deps

ICON_PATH = Path(__file__).resolve().parents[2] / "icon.png"
POINT_CLOUD_FILTER = ("Point clouds (*.las *.laz *.copc.laz *.json *.ply *.npz *.LAS *.LAZ *.PLY *.NPZ);;"
                      "EPT datasets (ept.json)")
#: Resolution bounds (map units per pixel): below 5 cm nothing is gained from any photogrammetric cloud,
#: and a typing slip (0, 0.001) must not turn into a multi-GB raster.
MIN_RESOLUTION = 0.05
MAX_RESOLUTION = 1000.0
#: Largest output raster (pixels) the algorithms accept: 10,000 × 10,000, 400 MB as float32.
MAX_OUTPUT_PIXELS = 100_000_000

POINTS = "POINTS"
POINTS_FILE = "POINTS_FILE"
POINTS_CRS = "POINTS_CRS"
RESOLUTION = "RESOLUTION"
EXTENT = "EXTENT"
OUTPUT = "OUTPUT"

POINTS_HELP = (
    "<b>Point cloud layer</b> or <b>Point cloud file</b> (give one): a point-cloud layer of the project "
    "(EPT, COPC, LAS/LAZ — whatever QGIS opened), or a LAS, LAZ, COPC, EPT (ept.json), PLY or NPZ file. "
    "QGIS 3.22 without PDAL opens only EPT as layers; other files are read by the plugin itself.<br>"
    "<b>Point cloud CRS</b>: only needed when the file has no CRS in its header (e.g. EPSG:28992 for "
    "Dutch AHN, EPSG:2154 for French LiDAR HD); it overrides the file's CRS when given.<br>"
)
RESOLUTION_HELP = (f"<b>Resolution</b>: output pixel size in the point cloud's map units (e.g. 0.5 m), "
                   f"{MIN_RESOLUTION:g} to {MAX_RESOLUTION:g}; the output may have at most "
                   f"{MAX_OUTPUT_PIXELS // 1_000_000} million pixels.<br>")
EXTENT_HELP = ("<b>Extent</b> (optional): the area to compute, reprojected to the point cloud's CRS; "
               "default: the extent of the points. Only the points in and around it are read.<br>")

#: Core parameters named in errors (:func:`implicity.core.errors.param`) → the labels of our parameters.
COMMON_LABELS = {
    "points_crs": "the 'Point cloud CRS' parameter",
    "points": "the point cloud",
    "resolution": "'Resolution'",
    "extent": "'Extent'",
    "out_path": "the output",
    "max_pixels": "the output size limit",
}


def plugin_icon() -> QIcon:
    """The plugin's icon, for the provider and every algorithm."""
    return QIcon(str(ICON_PATH))


def render_error(exc: ImplicityError, labels: dict[str, str]) -> str:
    """A core error's message with each parameter it names written as our label for it ('Resolution');
    a parameter this algorithm has no label for keeps its core name, quoted."""
    return exc.render(lambda name: labels.get(name, f"'{name}'"))


def raster_path(layer) -> str:
    """The file behind a GDAL raster layer (core reads files, not rendered layers)."""
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"Raster '{layer.name()}' is not a file-based (GDAL) raster ({layer.providerType()}); "
            "save it as GeoTIFF first (Export > Save As).")
    return layer.source().split("|")[0]


def progress_callback(feedback: QgsProcessingFeedback, start: float = 0.0, end: float = 100.0) -> ProgressFn:
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


def crs_argument(crs: QgsCoordinateReferenceSystem) -> str | None:
    """A QGIS CRS as core accepts it ('EPSG:28992' or WKT); None when not set."""
    if not crs.isValid():
        return None
    authid = crs.authid()
    if authid and not authid.upper().startswith("USER:"):
        return authid
    return crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)


def _equivalent_epsg(crs: QgsCoordinateReferenceSystem) -> int | None:
    """The EPSG code whose definition equals a custom CRS (rasterio/PROJ identification), or None."""
    try:
        from rasterio.crs import CRS

        return CRS.from_wkt(crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)).to_epsg()
    except Exception:  # noqa: BLE001 - purely descriptive
        return None


def crs_label(crs: QgsCoordinateReferenceSystem) -> str:
    """How a CRS is named in the log: its authority id, or a custom CRS's name and EPSG equivalent."""
    if not crs.isValid():
        return "no CRS"
    authid = crs.authid()
    if authid and not authid.upper().startswith("USER:"):
        return authid
    name = crs.description().strip()
    label = f"a custom CRS '{name}'" if name and name.lower() not in ("unknown", "unknown crs") else "a custom CRS"
    epsg = _equivalent_epsg(crs)
    return f"{label} (same definition as EPSG:{epsg})" if epsg else label


def same_crs(a: QgsCoordinateReferenceSystem, b: QgsCoordinateReferenceSystem) -> bool:
    """Equal, or the same definition under another name (a custom CRS identical to an EPSG one)."""
    if a == b:
        return True
    if not (a.isValid() and b.isValid()):
        return False
    if a.toProj() and a.toProj() == b.toProj():
        return True
    try:
        from rasterio.crs import CRS

        return CRS.from_wkt(a.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)) == \
            CRS.from_wkt(b.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED))
    except Exception:  # noqa: BLE001 - unknown to PROJ: treat as different (and reproject)
        return False


def source_path(layer: QgsMapLayer) -> str:
    """The file behind a layer (decoded by its provider when it knows how, else the source's path part)."""
    parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
    return parts.get("path") or layer.source().split("|")[0]


def base_name(value: str) -> str:
    """A short name for an input: a layer's name, a file's stem, an EPT dataset's folder name."""
    layer = QgsProject.instance().mapLayer(value) if value else None
    if layer is not None:
        return layer.name()
    p = Path(value)
    if p.name.lower() == "ept.json":
        return p.parent.name or "ept"
    name = p.name
    for suffix in (".copc.laz", ".laz", ".las", ".ply", ".npz", ".tif", ".tiff", ".vrt", ".json"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return p.stem or name


@dataclass(frozen=True)
class PointInput:
    """Where the points come from: a file path, the CRS argument for core, and a name for outputs."""

    path: str
    crs: str | None
    name: str


def _destination_value(value: Any) -> tuple[str, Callable[[str], Any]] | None:
    """(path, rebuild) of a destination parameter value; rebuild gives the same kind with a new path."""
    if isinstance(value, QgsProcessingOutputLayerDefinition):
        prop = value.sink
        if prop.propertyType() != QgsProperty.StaticProperty:
            return None

        def rebuild(path: str) -> QgsProcessingOutputLayerDefinition:
            new = QgsProcessingOutputLayerDefinition(value)
            new.sink = QgsProperty.fromValue(path)
            return new

        return str(prop.staticValue() or ""), rebuild
    if isinstance(value, str):
        return value, lambda path: path
    return None


def batch_output_names(parameters: dict, destination_names: list[str]) -> dict:
    """Fix outputs auto-named by the batch dialog's "Fill with parameter values" from a file column.

    For file and point-cloud columns QGIS 3.22 appends the input's whole value — an absolute path or
    a layer id — to the chosen file name: ``/out/dsm`` + ``/data/nimes.laz`` + ``.tif`` =
    ``/out/dsm/data/nimes.laz.tif``, in a folder that does not exist. Such outputs become
    ``/out/dsm_nimes.tif``: the chosen folder and name, then the input's base name.
    """
    params = dict(parameters)
    inputs = [v for k, v in parameters.items() if k not in destination_names and isinstance(v, str) and v]
    for name in destination_names:
        found = _destination_value(params.get(name))
        if not found or not found[0]:
            continue
        path, rebuild = found
        stem, ext = os.path.splitext(path)
        for value in inputs:
            is_layer = QgsProject.instance().mapLayer(value) is not None
            if not (os.sep in value or is_layer) or not stem.endswith(value) or len(stem) == len(value):
                continue
            prefix = stem[: -len(value)]
            sep = "" if prefix.endswith((os.sep, "_", "-", " ", ".")) else "_"
            params[name] = rebuild(f"{prefix}{sep}{base_name(value)}{ext}")
            break
    return params


# -- failed runs must not keep their caller alive -------------------------------------------------------
#
# When processAlgorithm raises QgsProcessingException, the SIP bindings of QGIS 3.22 keep the
# exception's traceback forever, and with it every Python frame up the stack that called the
# algorithm. In the batch dialog that caller is BatchAlgorithmDialog.runAlgorithm, whose local
# QgsScopedProxyProgressTask then never finishes: a task stuck in the status bar (at 50 % after one
# of two rows), later runs queued behind it, QGIS unable to quit. (A ValueError does not leak, but
# QGIS shows it as a traceback.) So a failing run records its own frame, and once those frames have
# returned, their locals are released (frame.clear()), which lets QGIS finish the task.

_FAILED_FRAMES: list = []
_SUSPENDABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE
_RELEASE_DELAYS_MS = (0, 500, 1000, 2000, 5000, 10000, 30000, 60000, 120000, 300000)


def release_failed_frames() -> bool:
    """Clear the locals of the failed runs' frames that have returned; True when none is left waiting."""
    waiting = []
    for frame in _FAILED_FRAMES:
        f = frame
        while f is not None and not f.f_code.co_flags & _SUSPENDABLE:  # never close a suspended generator
            try:
                f.clear()
            except RuntimeError:  # still executing (and so are its callers): try again later
                waiting.append(frame)
                break
            f = f.f_back
    _FAILED_FRAMES[:] = waiting
    return not waiting


def _release_later(attempt: int = 0) -> None:
    if not release_failed_frames() and attempt + 1 < len(_RELEASE_DELAYS_MS):
        QTimer.singleShot(_RELEASE_DELAYS_MS[attempt + 1], lambda: _release_later(attempt + 1))


def fail(message: str) -> None:
    """Raise QgsProcessingException(message) for a failed run, releasing the frames SIP keeps (above)."""
    frame = sys._getframe(1)
    _FAILED_FRAMES.append(frame)
    del frame
    app = QCoreApplication.instance()
    if app is not None and QThread.currentThread() == app.thread():  # synchronous run (batch, processing.run)
        QTimer.singleShot(_RELEASE_DELAYS_MS[0], _release_later)
    raise QgsProcessingException(message)


class ImpliCityAlgorithm(QgsProcessingAlgorithm):
    """Base class: dependency check, error mapping and the point-cloud parameters."""

    REQUIREMENTS: tuple[deps.Requirement, ...] = deps.GEODATA
    LABELS: dict[str, str] = {}
    GROUP = "DSM"
    GROUP_ID = "dsm"

    def createInstance(self) -> ImpliCityAlgorithm:
        return type(self)()

    def group(self) -> str:
        return self.GROUP

    def groupId(self) -> str:
        return self.GROUP_ID

    def icon(self) -> QIcon:
        return plugin_icon()

    def labels(self) -> dict[str, str]:
        return {**COMMON_LABELS, **self.LABELS}

    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext) -> tuple[bool, str]:
        # Runs in the main thread before the task starts: the place to offer installing packages.
        try:
            deps.require(self.REQUIREMENTS, offer_install=True)
        except deps.MissingDependencies as exc:
            return False, str(exc)
        if parameters.get(POINTS_FILE) and self.parameterDefinition(POINTS_FILE) is not None:
            from ...core.pointsources import source_format

            try:  # before QGIS's own check, which only says "Incorrect parameter value"
                source_format(self.parameterAsFile(parameters, POINTS_FILE, context))
            except InputError as exc:
                return False, render_error(exc, self.labels())
        if parameters.get(RESOLUTION) is not None and self.parameterDefinition(RESOLUTION) is not None:
            message = resolution_problem(self.parameterAsDouble(parameters, RESOLUTION, context))
            if message:
                return False, message
        return super().checkParameterValues(parameters, context)

    def preprocessParameters(self, parameters: dict) -> dict:
        # The batch dialog calls this on every row before running it.
        names = [p.name() for p in self.destinationParameterDefinitions()]
        return batch_output_names(super().preprocessParameters(parameters), names)

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict:
        release_failed_frames()  # of earlier failed runs that have returned by now
        message = None
        try:
            deps.require(self.REQUIREMENTS)
            results = self.run_job(parameters, context, feedback)
        except deps.MissingDependencies as exc:
            message = str(exc)
        except CancelledError as exc:
            message = render_error(exc, self.labels())
            feedback.reportError(message)
        except ImplicityError as exc:
            message = render_error(exc, self.labels())
        except QgsProcessingException as exc:
            message = str(exc)
        if message is not None:  # raised here, outside the handler: no link to the failed job's frames
            fail(message)
        forget_unwritten_outputs(context, results)
        return results

    def run_job(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        raise NotImplementedError

    # -- point-cloud input -------------------------------------------------------------------------

    def add_point_cloud_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterPointCloudLayer(POINTS, "Point cloud layer", optional=True))
        file_param = QgsProcessingParameterFile(POINTS_FILE, "Point cloud file (LAS/LAZ/COPC/EPT/PLY/NPZ)",
                                                optional=True, fileFilter=POINT_CLOUD_FILTER)
        self.addParameter(file_param)
        self.addParameter(QgsProcessingParameterCrs(POINTS_CRS, "Point cloud CRS (when the file has none)",
                                                    optional=True))

    def add_resolution_and_extent(self, default_resolution: float = 0.5) -> None:
        self.addParameter(QgsProcessingParameterNumber(RESOLUTION, "Resolution (map units per pixel)",
                                                       QgsProcessingParameterNumber.Double, default_resolution,
                                                       minValue=MIN_RESOLUTION, maxValue=MAX_RESOLUTION))
        extent = QgsProcessingParameterExtent(EXTENT, "Extent (default: the extent of the points)", optional=True)
        self.addParameter(extent)

    def point_cloud_source(self, parameters: dict, context: QgsProcessingContext) -> PointInput:
        """The file, CRS argument and name of the point cloud from the layer or file parameter."""
        path = self.parameterAsFile(parameters, POINTS_FILE, context)
        layer = self.parameterAsPointCloudLayer(parameters, POINTS, context) if parameters.get(POINTS) else None
        if path and layer is not None:
            raise QgsProcessingException(
                "Give either a point cloud layer or a point cloud file, not both (they may differ).")
        crs = crs_argument(self.parameterAsCrs(parameters, POINTS_CRS, context)) if parameters.get(POINTS_CRS) else None
        name = base_name(path) if path else ""
        if layer is not None:
            path = source_path(layer)
            name = layer.name() or base_name(path)
            if crs is None and layer.crs().isValid():
                crs = crs_argument(layer.crs())
        if not path:
            raise QgsProcessingException(
                "No point cloud: choose a point cloud layer or a LAS/LAZ/COPC/EPT/PLY/NPZ file.")
        return PointInput(path, crs, name)

    def check_outputs(self, parameters: dict, context: QgsProcessingContext,
                      outputs: list[tuple[str | None, str]]) -> None:
        """Fail fast, before any point is read: each (path, core parameter) must be a writable new
        GeoTIFF that is not the point cloud (the parameters become labels in the message)."""
        from ...core.outputs import check_output_path
        from ...core.raster import GEOTIFF_SUFFIXES

        inputs = [self.point_cloud_source(parameters, context).path]
        for path, parameter in outputs:
            if path:
                check_output_path(path, inputs, parameter, GEOTIFF_SUFFIXES)
                inputs.append(path)

    def read_point_cloud(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                         margin_m: float = 0.0, progress_end: float = 0.0):
        """(core PointCloud with a CRS, extent in its CRS or None, PointInput).

        The header is read first: it gives the CRS the Extent parameter is reprojected to and the
        size of the output, checked before any point is read. With an extent, only the points in it
        plus ``margin_m`` metres (and two pixels) around are read.
        """
        from ...core.crs import parse_crs
        from ...core.pointsources import expand_bounds, map_units_per_metre, probe_point_cloud, read_points

        source = self.point_cloud_source(parameters, context)
        feedback.setProgressText(f"Reading {Path(source.path).name}")
        info = probe_point_cloud(source.path)
        crs = parse_crs(source.crs) or info.crs
        if crs is None:
            raise InputError(
                f"{source.path}: the point cloud has no coordinate reference system in its header. Give it with "
                f"{param('points_crs')} (for example EPSG:2154 for Lambert-93, EPSG:28992 for RD New).")
        qgs_crs = to_qgs_crs(crs)
        extent = self.extent_in(parameters, context, qgs_crs)
        if extent is not None and info.bounds is not None and (
                extent[0] > info.bounds[2] or extent[2] < info.bounds[0]
                or extent[1] > info.bounds[3] or extent[3] < info.bounds[1]):
            b = info.bounds
            raise InputError(
                f"{param('extent')} {extent[0]:.1f},{extent[1]:.1f},{extent[2]:.1f},{extent[3]:.1f} does not overlap "
                f"the point cloud {source.path}, which covers {b[0]:.1f},{b[1]:.1f},{b[2]:.1f},{b[3]:.1f} (in "
                f"{crs_label(qgs_crs)}). Check the extent and its CRS.")
        resolution = self.parameterAsDouble(parameters, RESOLUTION, context) \
            if self.parameterDefinition(RESOLUTION) is not None else None
        if resolution is not None:
            check_output_size(extent or info.bounds, resolution)
        margin = margin_m * map_units_per_metre(crs) + 2 * (resolution or 0.0)
        bounds = expand_bounds(extent, margin)
        cloud = read_points(source.path, crs=crs, bounds=bounds, progress=progress_callback(feedback, 0.0, progress_end),
                            is_cancelled=feedback.isCanceled)
        where = " in and around the extent" if bounds is not None else ""
        feedback.pushInfo(f"Point cloud: {source.path} ({len(cloud):,} points{where}, {crs_label(qgs_crs)})")
        return cloud, extent, source

    def extent_in(self, parameters: dict, context: QgsProcessingContext,
                  crs: QgsCoordinateReferenceSystem) -> tuple[float, float, float, float] | None:
        """The Extent parameter in ``crs`` (reprojected when it carries another CRS), or None."""
        if not parameters.get(EXTENT):
            return None
        rect: QgsRectangle = self.parameterAsExtent(parameters, EXTENT, context, crs)
        if rect.isNull() or rect.isEmpty():
            return None
        return rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()


def resolution_problem(value: Any) -> str | None:
    """Why a Resolution value cannot be used (None when it can)."""
    try:
        res = float(value)
    except (TypeError, ValueError):
        return f"'Resolution' must be a number of map units per pixel (got {value!r}), e.g. 0.5."
    if not math.isfinite(res) or not MIN_RESOLUTION <= res <= MAX_RESOLUTION:
        return (f"'Resolution' must be between {MIN_RESOLUTION:g} and {MAX_RESOLUTION:g} map units per pixel "
                f"(got {res:g}); e.g. 0.5 for a half-metre DSM.")
    return None


def check_output_size(bounds: tuple[float, float, float, float] | None, resolution: float) -> None:
    """Refuse outputs of more than MAX_OUTPUT_PIXELS before reading points or allocating anything."""
    message = resolution_problem(resolution)
    if message:
        raise InputError(message)
    if bounds is None:
        return
    width_m, height_m = bounds[2] - bounds[0], bounds[3] - bounds[1]
    cols, rows = math.ceil(width_m / resolution) + 1, math.ceil(height_m / resolution) + 1
    if cols * rows > MAX_OUTPUT_PIXELS:
        coarser = resolution * math.sqrt(cols * rows / MAX_OUTPUT_PIXELS) * 1.01
        raise InputError(
            f"'Resolution' {resolution:g} over {width_m:,.0f} × {height_m:,.0f} map units makes a "
            f"{cols:,} × {rows:,} pixel raster ({cols * rows / 1e6:,.0f} million pixels; at most "
            f"{MAX_OUTPUT_PIXELS // 1_000_000} million). Choose a resolution of at least {coarser:.2g} "
            "or a smaller 'Extent'.")


def forget_unwritten_outputs(context: QgsProcessingContext, results: dict) -> None:
    """Take optional outputs that were not written (empty path, or no file) off the load-on-completion
    list, so Processing does not report them as "not correctly generated"."""
    layers = context.layersToLoadOnCompletion()
    ours = {v for v in results.values() if isinstance(v, str)}
    stale = [p for p in layers if not p or (p in ours and not Path(p).is_file())]
    if stale:
        for p in stale:
            layers.pop(p, None)
        context.setLayersToLoadOnCompletion(layers)


def check_raster_overlap(layer, layer_label: str, target_crs: QgsCoordinateReferenceSystem,
                         bounds: tuple[float, float, float, float], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> None:
    """Refuse a raster without CRS or not overlapping ``bounds`` (in ``target_crs``); log reprojection."""
    if not layer.crs().isValid():
        raise QgsProcessingException(
            f"{layer_label} '{layer.name()}' has no CRS. Set it (Layer Properties > Source) so it can be "
            f"reprojected to the point cloud's {crs_label(target_crs)}.")
    extent = layer.extent()
    if not same_crs(layer.crs(), target_crs):
        transform = QgsCoordinateTransform(layer.crs(), target_crs, context.transformContext())
        extent = transform.transformBoundingBox(extent)
        feedback.pushInfo(f"{layer_label} '{layer.name()}' is in {crs_label(layer.crs())}; it is reprojected "
                          f"on the fly to the point cloud's {crs_label(target_crs)}.")
    elif layer.crs() != target_crs:
        feedback.pushInfo(f"{layer_label} '{layer.name()}' is in {crs_label(layer.crs())}, the same CRS as the "
                          f"point cloud's {crs_label(target_crs)}: used without reprojection.")
    xmin, ymin, xmax, ymax = bounds
    if extent.xMaximum() < xmin or extent.xMinimum() > xmax or extent.yMaximum() < ymin or extent.yMinimum() > ymax:
        raise QgsProcessingException(
            f"{layer_label} '{layer.name()}' does not overlap the point cloud: it covers "
            f"{extent.xMinimum():.1f},{extent.yMinimum():.1f},{extent.xMaximum():.1f},{extent.yMaximum():.1f} "
            f"and the points {xmin:.1f},{ymin:.1f},{xmax:.1f},{ymax:.1f} (in {crs_label(target_crs)}). "
            "Check that both show the same place and that their CRSs are right.")


def advanced(param: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    """Mark a parameter as advanced (folded away in the dialog)."""
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return param
