"""Processing algorithm: ImpliCity DSM from a point cloud (+ 0/1/2 ortho-images) and a trained network."""
from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterDestination,
)

from ...core.errors import CancelledError, InputError
from ...core.shipped_models import MODELS_DIR, default_model, missing_model_message
from ...core.vocabulary import DEFAULT_DEVICE, DEFAULT_MODE, DEVICE_CHOICES, MODES, VARIANT_KINDS, variant_name
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
    CONFIDENCE = "CONFIDENCE"
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
            + "<b>Device</b>: auto (a CUDA GPU if present, else the CPU), cpu or cuda. The device used is logged.<br>"
            "<b>Search mode</b> (advanced): fast (default) or reference (the paper's generator, reproduced as a "
            "yardstick: many times slower, and without the fast mode's protection against pits).<br>"
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
        self.addParameter(QgsProcessingParameterRasterDestination(self.CONFIDENCE, "Confidence", optional=True,
                                                                  createByDefault=False))
        self.addParameter(QgsProcessingParameterRasterDestination(OUTPUT, "DSM"))

    def _orthos(self, parameters: dict, context: QgsProcessingContext) -> list:
        layers = self.parameterAsLayerList(parameters, self.ORTHOS, context) or []
        if len(layers) > 2:
            raise QgsProcessingException(
                f"'Ortho-images': {len(layers)} layers selected; ImpliCity uses 0 (ImpliCity-0), 1 (mono) or "
                "2 (stereo) ortho-images. Deselect the extra ones.")
        return layers

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
        cloud, extent, source = self.read_point_cloud(parameters, context, feedback, margin_m=WINDOW_M,
                                                      progress_end=READ_SHARE)
        cloud_crs = to_qgs_crs(cloud.crs)
        for i, layer in enumerate(orthos, start=1):
            check_raster_overlap(layer, f"Ortho-image {i}", cloud_crs, extent or cloud.bounds, context, feedback)
        feedback.setProgress(READ_SHARE)
        if feedback.isCanceled():
            raise CancelledError("reconstruction stopped by the user; no output was written")
        inputs = ReconstructionInputs(
            points=cloud, model=str(model), out_path=out, resolution=self.parameterAsDouble(parameters, RESOLUTION, context),
            orthos=tuple(raster_path(layer) for layer in orthos), confidence_path=conf, extent=extent,
        )
        options = ReconstructionOptions(mode=MODES[self.parameterAsEnum(parameters, self.MODE, context)],
                                        device=str(device), reserve_cores=1)
        result = reconstruct_dsm(inputs, options, progress=progress_callback(feedback, READ_SHARE, 100.0),
                                 is_cancelled=feedback.isCanceled)
        feedback.pushInfo(
            f"DSM: {result.dsm_path} ({result.width} x {result.height} px); {result.tiles} windows "
            f"({result.tiles_skipped} without points) on {result.device} in {result.seconds:.1f} s")
        attach_style(context, out, "dsm", f"{source.name} — DSM ({label})")
        if conf:
            attach_style(context, conf, "confidence", f"{source.name} — confidence ({label})")
        return {OUTPUT: out, self.CONFIDENCE: conf}
