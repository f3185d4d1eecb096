"""Processing algorithm: reference DSM and building mask from classified LiDAR (evaluation data)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from ...core.vocabulary import DEFAULT_REFERENCE_FILL_MAX_DISTANCE
from ..styling import attach_style
from .common import EXTENT_HELP, OUTPUT, POINTS_HELP, RESOLUTION, RESOLUTION_HELP, ImpliCityAlgorithm, progress_callback


class ReferenceDsmAlgorithm(ImpliCityAlgorithm):
    """Highest non-noise return per pixel, small gaps filled; class 6 rasterised as building mask."""

    BUILDING_MASK = "BUILDING_MASK"
    FILL_MAX_DISTANCE = "FILL_MAX_DISTANCE"
    GROUP = "Evaluation"
    GROUP_ID = "evaluation"
    LABELS = {"building_mask_out": "'Building mask'", "fill_max_distance": "'Fill distance'"}

    def name(self) -> str:
        return "referencedsm"

    def displayName(self) -> str:
        return "Reference DSM from classified LiDAR"

    def shortHelpString(self) -> str:
        return (
            "Makes evaluation data from classified airborne LiDAR (ASPRS classes): the DSM is the highest "
            "return per pixel after dropping noise (classes 7 and 18); gaps (water, occlusions) up to the fill "
            "distance are filled with the nearest height.<br><br>" + POINTS_HELP + RESOLUTION_HELP + EXTENT_HELP
            + "<b>Fill distance</b>: largest gap (map units) filled with the nearest valid height.<br>"
            "<b>Reference DSM</b>: float32 GeoTIFF (nodata -9999) in the point cloud's CRS.<br>"
            "<b>Building mask</b> (optional): 0/1 uint8 GeoTIFF on the same grid, 1 where class 6 (building) "
            "points fall (closed by one pixel); needs a classified cloud. Use it in <i>Evaluate DSM against "
            "reference</i> to get building/terrain metrics."
        )

    def initAlgorithm(self, config=None) -> None:
        self.add_point_cloud_parameters()
        self.add_resolution_and_extent()
        self.addParameter(QgsProcessingParameterNumber(
            self.FILL_MAX_DISTANCE, "Fill distance (map units)", QgsProcessingParameterNumber.Double,
            DEFAULT_REFERENCE_FILL_MAX_DISTANCE, minValue=0.0))
        self.addParameter(QgsProcessingParameterRasterDestination(OUTPUT, "Reference DSM"))
        self.addParameter(QgsProcessingParameterRasterDestination(self.BUILDING_MASK, "Building mask",
                                                                  optional=True, createByDefault=False))

    def run_job(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        from ...core.reference import make_reference_dsm

        out = self.parameterAsOutputLayer(parameters, OUTPUT, context)
        mask = self.parameterAsOutputLayer(parameters, self.BUILDING_MASK, context) or None
        self.check_outputs(parameters, context, [(out, "out_path"), (mask, "building_mask_out")])
        cloud, extent, source = self.read_point_cloud(parameters, context, feedback, progress_end=20.0)
        grid = make_reference_dsm(
            cloud, out, self.parameterAsDouble(parameters, RESOLUTION, context), building_mask_out=mask,
            fill_max_distance=self.parameterAsDouble(parameters, self.FILL_MAX_DISTANCE, context),
            extent=extent, progress=progress_callback(feedback, 20.0, 100.0), is_cancelled=feedback.isCanceled,
        )
        feedback.pushInfo(f"Reference DSM: {out} ({grid.width} x {grid.height} px)"
                          + (f"; building mask: {mask}" if mask else ""))
        attach_style(context, out, "dsm", f"{source.name} — reference DSM")
        if mask:
            attach_style(context, mask, "mask", f"{source.name} — building mask")
        return {OUTPUT: out, self.BUILDING_MASK: mask}
