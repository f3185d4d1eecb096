"""Processing algorithm: the classical gridded DSM of a point cloud (what ImpliCity must beat)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from ...core import vocabulary
from ..styling import attach_style
from .common import (
    EXTENT_HELP,
    OUTPUT,
    POINTS_HELP,
    RESOLUTION,
    RESOLUTION_HELP,
    ImpliCityAlgorithm,
    advanced,
    progress_callback,
)

STATISTICS = vocabulary.STATISTICS
FILLS = vocabulary.FILL_METHODS


class BaselineDsmAlgorithm(ImpliCityAlgorithm):
    """Per-cell statistic of the point heights, optional outlier removal and hole filling."""

    STATISTIC = "STATISTIC"
    FILL = "FILL"
    FILL_MAX_DISTANCE = "FILL_MAX_DISTANCE"
    OUTLIER_THRESHOLD = "OUTLIER_THRESHOLD"
    LABELS = {"statistic": "'Statistic'", "fill_max_distance": "'Fill distance'", "fill": "'Hole filling'",
              "outlier_threshold": "'Outlier threshold'", "smooth": "'Smoothing'"}

    def name(self) -> str:
        return "baselinedsm"

    def displayName(self) -> str:
        return "Baseline DSM from point cloud"

    def shortHelpString(self) -> str:
        return (
            "The classical DSM of a point cloud, to compare ImpliCity with: each pixel takes a statistic "
            "of the heights of the points falling in it, isolated spikes can be removed, and small holes "
            "are filled.<br><br>" + POINTS_HELP + RESOLUTION_HELP + EXTENT_HELP
            + "<b>Statistic</b>: max (the visible surface, default), median, mean or min of the heights in a pixel.<br>"
            "<b>Hole filling</b>: idw (inverse-distance weighting), nearest, or none (leave nodata).<br>"
            "<b>Fill distance</b>: fill only holes within this distance (map units) of a pixel with points.<br>"
            "<b>Outlier threshold</b> (advanced, 0 = off): pixels more than this above/below the median of "
            "their 5×5 neighbourhood are treated as empty and filled.<br>"
            "<b>Baseline DSM</b>: float32 Cloud-Optimized GeoTIFF in the point cloud's CRS (nodata -9999), "
            "written atomically; loaded with a hillshade over a colour ramp."
        )

    def initAlgorithm(self, config=None) -> None:
        self.add_point_cloud_parameters()
        self.add_resolution_and_extent()
        self.addParameter(QgsProcessingParameterEnum(
            self.STATISTIC, "Statistic", options=list(STATISTICS),
            defaultValue=STATISTICS.index(vocabulary.DEFAULT_STATISTIC)))
        self.addParameter(QgsProcessingParameterEnum(self.FILL, "Hole filling", options=list(FILLS),
                                                     defaultValue=FILLS.index(vocabulary.DEFAULT_FILL)))
        self.addParameter(QgsProcessingParameterNumber(
            self.FILL_MAX_DISTANCE, "Fill distance (map units)", QgsProcessingParameterNumber.Double,
            vocabulary.DEFAULT_FILL_MAX_DISTANCE, minValue=0.0))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.OUTLIER_THRESHOLD, "Outlier threshold (map units, 0 = off)", QgsProcessingParameterNumber.Double,
            0.0, minValue=0.0)))
        self.addParameter(QgsProcessingParameterRasterDestination(OUTPUT, "Baseline DSM"))

    def run_job(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        from ...core.baseline import make_baseline_dsm

        out = self.parameterAsOutputLayer(parameters, OUTPUT, context)
        self.check_outputs(parameters, context, [(out, "out_path")])
        cloud, extent, source = self.read_point_cloud(parameters, context, feedback, progress_end=20.0)
        outlier = self.parameterAsDouble(parameters, self.OUTLIER_THRESHOLD, context)
        statistic = STATISTICS[self.parameterAsEnum(parameters, self.STATISTIC, context)]
        grid = make_baseline_dsm(
            cloud, out, self.parameterAsDouble(parameters, RESOLUTION, context),
            statistic=statistic,
            fill=FILLS[self.parameterAsEnum(parameters, self.FILL, context)],
            fill_max_distance=self.parameterAsDouble(parameters, self.FILL_MAX_DISTANCE, context),
            outlier_threshold=outlier if outlier > 0 else None,
            extent=extent, progress=progress_callback(feedback, 20.0, 100.0), is_cancelled=feedback.isCanceled,
        )
        feedback.pushInfo(f"Baseline DSM: {out} ({grid.width} x {grid.height} px)")
        attach_style(context, out, "dsm", f"{source.name} — baseline DSM ({statistic})")
        return {OUTPUT: out}
