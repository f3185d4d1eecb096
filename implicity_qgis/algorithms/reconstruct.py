"""Processing algorithm: ImpliCity DSM from a point cloud (+ 0/1/2 ortho-images) and a trained network."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from ...core.errors import CancelledError, InputError
from ...core.shipped_models import MODELS_DIR, default_model, missing_model_message
from ...core.vocabulary import (
    DEFAULT_DESPECKLE,
    DEFAULT_DEVICE,
    DEFAULT_KEEP_MARGIN,
    DEFAULT_MODE,
    DEFAULT_SEARCH_MARGIN,
    DEVICE_CHOICES,
    MODES,
    SYMMETRY_COUNTS,
    VARIANT_KINDS,
    variant_name,
)
from .. import dependencies as deps
from ..styling import attach_style
from .common import (
    EXTENT_HELP,
    OUTPUT,
    POINTS_HELP,
    RESOLUTION,
    RESOLUTION_HELP,
    ImpliCityAlgorithm,
    advanced,
    check_raster_overlap,
    progress_callback,
    raster_path,
    to_qgs_crs,
)

DEVICES = DEVICE_CHOICES
READ_SHARE = 5.0  # % of the progress bar for reading the points
WINDOW_M = 64.0  # ImpliCity's window: points this far around the extent feed its border windows


def model_label(model: Path) -> str:
    """'ImpliCity-0' / '-mono' / '-stereo' for a shipped checkpoint, the file's stem otherwise."""
    model = Path(model)
    parts = model.stem.split("-")
    n_images = {kind: n for n, kind in VARIANT_KINDS.items()}.get(parts[1]) if len(parts) >= 2 else None
    if model.parent.resolve() == MODELS_DIR.resolve() and parts[0] == "implicity" and n_images is not None:
        return variant_name(n_images)
    return model.stem


class ReconstructDsmAlgorithm(ImpliCityAlgorithm):
    """Thin wrapper of :func:`implicity.core.reconstruct.reconstruct_dsm`."""

    ORTHOS = "ORTHOS"
    MODEL = "MODEL"
    DEVICE = "DEVICE"
    MODE = "MODE"
    KEEP_MARGIN = "KEEP_MARGIN"
    DESPECKLE = "DESPECKLE"
    SYMMETRIES = "SYMMETRIES"
    CONFIDENCE = "CONFIDENCE"
    SCHEDULER = "SCHEDULER"
    WORKERS = "WORKERS"
    REQUIREMENTS = deps.GEODATA + deps.NETWORK
    LABELS = {"orthos": "'Ortho-images'", "model": "'Model checkpoint'", "device": "'Device'",
              "confidence_path": "'Confidence'", "mode": "'Search mode'"}

    def name(self) -> str:
        return "reconstructdsm"

    def displayName(self) -> str:
        return "Reconstruct DSM (ImpliCity)"

    def shortHelpString(self) -> str:
        return (
            "Turns a photogrammetric point cloud (and optionally ortho-images) into a DSM with ImpliCity "
            "(Stucker et al., ISPRS Annals 2022): a convolutional occupancy network predicts, for every 3-D "
            "point, whether it lies inside a building or the ground; the DSM height of each pixel is where "
            "that occupancy crosses 0.5. The area is processed in 64 m windows that are blended seamlessly, "
            "so any extent works; the GUI stays responsive and Cancel stops within about a second, between "
            "batches of the network (no partial file is left).<br><br>" + POINTS_HELP
            + "<b>Ortho-images</b> (optional): 0, 1 or 2 raster layers (grey or RGB, any CRS and pixel size: "
            "reprojected on the fly to the point cloud's CRS; they must overlap the points). Their number "
            "must match the model: ImpliCity-0 none, ImpliCity-mono one, ImpliCity-stereo two.<br>"
            "<b>Model checkpoint</b> (optional): a trained .pt file; empty = the model shipped with the plugin "
            "for that number of images (ImpliCity-0, -mono or -stereo).<br>" + RESOLUTION_HELP + EXTENT_HELP
            + "<b>Device</b>: auto (a CUDA GPU if present, else the CPU), cpu or cuda. The device used is logged. "
            "On the CPU it runs in the background on the cores other programs leave free, and always leaves "
            "one core to QGIS, so the map stays responsive.<br>"
            "<b>Search mode</b> (advanced): fast (default) or reference (the paper's generator, reproduced as a "
            "yardstick: many times slower, and without the fast mode's protection against pits).<br>"
            "<b>Keep heights within the points' range ± (m)</b> (advanced, fast mode; default 0): each height stays "
            "between the lowest and the highest input point within 2.5 m of its pixel, widened by this.<br>"
            "<b>Despeckle threshold</b> (advanced, fast mode; default 0.25 m, 0 = off): a pixel farther than this "
            "from the median of its 3 × 3 neighbours that agrees with at most one of them takes that median; "
            "corners and lines one pixel wide stay.<br>"
            "<b>Average turned / mirrored copies of each window</b> (advanced; default 1 = off): the network sees every window "
            "also turned and mirrored (2, 4 or 8 copies) and its answers are averaged: a slightly less noisy "
            "surface, about that many times slower.<br>"
            "<b>Dask scheduler address</b> (advanced; empty = in this process): tcp://HOST:PORT of an existing Dask "
            "cluster that computes the DSM in blocks of ~512 m; its workers must see the point-cloud file, the "
            "model and the output folder at the same paths. <b>Workers</b> (advanced; 0 = in this process): start "
            "that many local worker processes instead (one per GPU with CUDA). Either way the point cloud is "
            "streamed from its file into per-block files beside the output (removed at the end), so it may be "
            "larger than memory, and the result is the same DSM. Needs the optional package dask[distributed], "
            "offered for installation when one of them is set.<br>"
            "<b>Confidence</b> (optional): raster in [0, 1], the occupancy just below minus just above the "
            "surface (1 = sharp, certain surface; 0 = a guess or a filled hole).<br>"
            "<b>DSM</b>: float32 Cloud-Optimized GeoTIFF in the point cloud's CRS (nodata -9999), added to the "
            "map as '&lt;input&gt; — DSM (&lt;model&gt;)' with a hillshade over a colour ramp. The log lists the "
            "device, windows and run time."
        )

    def initAlgorithm(self, config=None) -> None:
        self.add_point_cloud_parameters()
        self.addParameter(QgsProcessingParameterMultipleLayers(self.ORTHOS, "Ortho-images (0, 1 or 2)",
                                                               QgsProcessing.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "Model checkpoint (empty = shipped model)", optional=True,
            fileFilter="PyTorch checkpoints (*.pt *.pth *.ckpt)"))
        self.add_resolution_and_extent()
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=list(DEVICES),
                                                     defaultValue=DEVICES.index(DEFAULT_DEVICE)))
        self.addParameter(advanced(QgsProcessingParameterEnum(self.MODE, "Search mode", options=list(MODES),
                                                              defaultValue=MODES.index(DEFAULT_MODE))))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.KEEP_MARGIN, "Keep heights within the points' range ± (m)", QgsProcessingParameterNumber.Double,
            defaultValue=DEFAULT_KEEP_MARGIN, minValue=0.0, maxValue=DEFAULT_SEARCH_MARGIN)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.DESPECKLE, "Despeckle threshold (m; 0 = off)", QgsProcessingParameterNumber.Double,
            defaultValue=DEFAULT_DESPECKLE, minValue=0.0, maxValue=1000.0)))
        self.addParameter(advanced(QgsProcessingParameterEnum(
            self.SYMMETRIES, "Average turned / mirrored copies of each window (1 = off)",
            options=[str(n) for n in SYMMETRY_COUNTS], defaultValue=0)))
        self.addParameter(advanced(QgsProcessingParameterString(
            self.SCHEDULER, "Dask scheduler address (empty = in this process)", defaultValue="", optional=True)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.WORKERS, "Workers (local Dask processes; 0 = in this process)", QgsProcessingParameterNumber.Integer,
            defaultValue=0, minValue=0, maxValue=1024)))
        self.addParameter(QgsProcessingParameterRasterDestination(self.CONFIDENCE, "Confidence", optional=True,
                                                                  createByDefault=False))
        self.addParameter(QgsProcessingParameterRasterDestination(OUTPUT, "DSM"))

    def _cluster(self, parameters: dict, context: QgsProcessingContext):
        """ClusterOptions for a Dask run, or None to reconstruct in this process."""
        scheduler = (self.parameterAsString(parameters, self.SCHEDULER, context) or "").strip() \
            if parameters.get(self.SCHEDULER) else ""
        workers = self.parameterAsInt(parameters, self.WORKERS, context) if parameters.get(self.WORKERS) else 0
        if not scheduler and not workers:
            return None
        from ...core.cluster.run import ClusterOptions

        return ClusterOptions(workers=None if scheduler else workers, scheduler=scheduler or None)

    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext) -> tuple[bool, str]:
        ok, message = super().checkParameterValues(parameters, context)
        if ok and self._cluster(parameters, context) is not None:
            try:  # the main thread: the place to offer installing the optional package
                deps.require(deps.CLUSTER, offer_install=True)
            except deps.MissingDependencies as exc:
                return False, str(exc)
        return ok, message

    def _orthos(self, parameters: dict, context: QgsProcessingContext) -> list:
        layers = self.parameterAsLayerList(parameters, self.ORTHOS, context) or []
        if len(layers) > 2:
            raise QgsProcessingException(
                f"'Ortho-images': {len(layers)} layers selected; ImpliCity uses 0 (ImpliCity-0), 1 (mono) or "
                "2 (stereo) ortho-images. Deselect the extra ones.")
        return layers

    def point_cloud_header(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback):
        """(path, CRS, extent in that CRS or None, PointInput, bounds) from the header alone, for a Dask run."""
        from ...core.crs import parse_crs
        from ...core.pointsources import probe_point_cloud

        source = self.point_cloud_source(parameters, context)
        info = probe_point_cloud(source.path)
        crs = parse_crs(source.crs) or info.crs
        if crs is None:
            raise InputError(f"{source.path}: the point cloud has no coordinate reference system in its header. Give "
                             "it with 'Point cloud CRS' (for example EPSG:2154 for Lambert-93).")
        extent = self.extent_in(parameters, context, to_qgs_crs(crs))
        count = f"{info.count:,} points, " if info.count else ""
        feedback.pushInfo(f"Point cloud: {source.path} ({count}streamed by the Dask run)")
        return source.path, crs, extent, source, info.bounds

    def _model(self, parameters: dict, context: QgsProcessingContext, n_images: int) -> Path:
        path = self.parameterAsFile(parameters, self.MODEL, context)
        if path:
            if not Path(path).is_file():
                raise QgsProcessingException(f"'Model checkpoint' {path}: file not found. Choose a trained .pt file.")
            return Path(path)
        model = default_model(n_images)
        if model is None:
            raise InputError(missing_model_message(n_images))
        return model

    def run_job(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        from ...core.reconstruct import ReconstructionInputs, ReconstructionOptions, reconstruct_dsm
        from ...core.reconstruct.device import resolve_device

        orthos = self._orthos(parameters, context)
        model = self._model(parameters, context, len(orthos))
        device, reason = resolve_device(DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)])
        label = model_label(model)
        feedback.pushInfo(f"Model: {model} ({label})\nDevice: {device} ({reason})")
        out = self.parameterAsOutputLayer(parameters, OUTPUT, context)
        conf = self.parameterAsOutputLayer(parameters, self.CONFIDENCE, context) or None
        self.check_outputs(parameters, context, [(out, "out_path"), (conf, "confidence_path")])
        cluster = self._cluster(parameters, context)
        if cluster is None:
            cloud, extent, source = self.read_point_cloud(parameters, context, feedback, margin_m=WINDOW_M,
                                                          progress_end=READ_SHARE)
            points, points_crs, bounds = cloud, None, cloud.bounds
        else:  # the workers stream the file: nothing is read here
            deps.require(deps.CLUSTER)
            points, points_crs, extent, source, bounds = self.point_cloud_header(parameters, context, feedback)
            cloud = None
        cloud_crs = to_qgs_crs(points_crs if cloud is None else cloud.crs)
        for i, layer in enumerate(orthos, start=1):
            if (extent or bounds) is not None:
                check_raster_overlap(layer, f"Ortho-image {i}", cloud_crs, extent or bounds, context, feedback)
        feedback.setProgress(READ_SHARE)
        if feedback.isCanceled():
            raise CancelledError("reconstruction stopped by the user; no output was written")
        inputs = ReconstructionInputs(
            points=points, points_crs=points_crs, model=str(model), out_path=out, resolution=self.parameterAsDouble(parameters, RESOLUTION, context),
            orthos=tuple(raster_path(layer) for layer in orthos), confidence_path=conf, extent=extent,
        )
        defaults = ReconstructionOptions()

        def number(name: str, default: float) -> float:
            return self.parameterAsDouble(parameters, name, context) if parameters.get(name) is not None else default

        options = ReconstructionOptions(
            mode=MODES[self.parameterAsEnum(parameters, self.MODE, context)], device=str(device), reserve_cores=1,
            evidence=dataclasses.replace(defaults.evidence,
                                         keep_margin=number(self.KEEP_MARGIN, defaults.evidence.keep_margin)),
            despeckle=number(self.DESPECKLE, defaults.despeckle),
            symmetries=SYMMETRY_COUNTS[self.parameterAsEnum(parameters, self.SYMMETRIES, context)])
        if cluster is None:
            result = reconstruct_dsm(inputs, options, progress=progress_callback(feedback, READ_SHARE, 100.0),
                                     is_cancelled=feedback.isCanceled)
        else:
            from ...core.cluster.run import reconstruct_on_cluster

            result = reconstruct_on_cluster(inputs, options, cluster,
                                            progress=progress_callback(feedback, READ_SHARE, 100.0),
                                            is_cancelled=feedback.isCanceled)
        feedback.pushInfo(
            f"DSM: {result.dsm_path} ({result.width} x {result.height} px); {result.tiles} windows "
            f"({result.tiles_skipped} without points) on {result.device} in {result.seconds:.1f} s")
        attach_style(context, out, "dsm", f"{source.name} — DSM ({label})")
        if conf:
            attach_style(context, conf, "confidence", f"{source.name} — confidence ({label})")
        return {OUTPUT: out, self.CONFIDENCE: conf}
