"""Processing algorithm: DSM accuracy against a reference DSM (residual raster + metrics)."""
from __future__ import annotations

import math
import os

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ...core.vocabulary import DEFAULT_MAX_SHIFT, DEFAULT_STEP_HEIGHT
from ..styling import attach_style
from .common import ImpliCityAlgorithm, advanced, raster_path

OVERALL_OUTPUTS = ("count", "mae", "rmse", "medae", "nmad", "bias")
SHIFT_OUTPUTS = ("dx", "dy", "dz")


def same_raster(a, b) -> bool:
    """The same layer, or two layers on the same file (comparing them would give all-zero metrics)."""
    if a.id() == b.id():
        return True
    try:
        return os.path.realpath(raster_path(a)) == os.path.realpath(raster_path(b))
    except QgsProcessingException:
        return a.source() == b.source()


SAME_RASTER_MESSAGE = ("'DSM' and 'Reference DSM' are the same raster ('{name}'); every residual would be 0. "
                       "Choose the DSM to evaluate and a different, independent reference DSM.")


class EvaluateDsmAlgorithm(ImpliCityAlgorithm):
    """Residual DSM − reference and the paper's metrics per region (overall/building/terrain)."""

    DSM = "DSM"
    REFERENCE = "REFERENCE"
    BUILDING_MASK = "BUILDING_MASK"
    DILATION = "BUILDING_DILATION"
    COREGISTER = "COREGISTER"
    MAX_SHIFT = "MAX_SHIFT"
    STEP_REGIONS = "STEP_REGIONS"
    STEP_HEIGHT = "STEP_HEIGHT"
    RESIDUAL = "RESIDUAL"
    OUTPUT_HTML = "OUTPUT_HTML"
    OUTPUT_JSON = "OUTPUT_JSON"
    GROUP = "Evaluation"
    GROUP_ID = "evaluation"
    LABELS = {"residual_out": "'Residual'", "json_out": "'Metrics (JSON)'", "html_out": "'Metrics report (HTML)'",
              "building_dilation_px": "'Building dilation'", "dsm_path": "'DSM'", "reference_path": "'Reference DSM'",
              "building_mask": "'Building mask'", "max_shift": "'Largest horizontal shift'",
              "step_height": "'Smallest height step'"}

    def name(self) -> str:
        return "evaluatedsm"

    def displayName(self) -> str:
        return "Evaluate DSM against reference"

    def shortHelpString(self) -> str:
        return (
            "Compares a DSM with a reference DSM, as in the ImpliCity paper. The DSM is resampled onto the "
            "reference grid (reprojected if its CRS differs; nearest when the grids coincide); the residual "
            "r = DSM − reference is taken where both are valid.<br><br>"
            "<b>DSM</b>: the DSM to evaluate (any GDAL raster).<br>"
            "<b>Reference DSM</b>: the ground truth, e.g. from <i>Reference DSM from classified LiDAR</i>; it "
            "must be another raster than the DSM.<br>"
            "<b>Building mask</b> (optional): 0/1 raster; adds <i>building</i> (mask dilated by the building "
            "dilation, so façades count as building) and <i>terrain</i> (the rest) to <i>overall</i>.<br>"
            "<b>Building dilation</b> (advanced): pixels added around the mask (2, as in the paper).<br>"
            "<b>Co-register the DSM to the reference first</b> (advanced): move the DSM by the shift (east, "
            "north, up) that best matches the reference before taking the residual, as accuracy reports do to "
            "separate a displaced whole from errors of shape. The shift is printed in the log and in the "
            "reports, and returned as outputs.<br>"
            "<b>Largest horizontal shift</b> (advanced): how far the co-registration searches, in map units "
            f"({DEFAULT_MAX_SHIFT:g}).<br>"
            "<b>Also report height steps</b> (advanced): adds <i>step top</i> and <i>step foot</i> (pixels within "
            "2 px of a jump of more than the smallest height step between neighbouring reference pixels, above "
            "or below the middle of their neighbourhood's range) and <i>off steps</i>: where a DSM errs at edges, "
            "on roofs cut down or on fattened feet, which the overall numbers hide.<br>"
            f"<b>Smallest height step</b> (advanced): in height units ({DEFAULT_STEP_HEIGHT:g}).<br>"
            "<b>Residual</b>: float32 GeoTIFF of r on the reference grid (blue = DSM too low, red = too high).<br>"
            "<b>Metrics report (HTML)</b> and <b>Metrics (JSON)</b>: per region COUNT, MAE, RMSE, MedAE = "
            "median |r|, NMAD = 1.4826·median(|r − median r|), bias = mean r, in the DSM's height units. "
            "The table is also printed in the log; the overall numbers are outputs for models."
        )

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.DSM, "DSM"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.REFERENCE, "Reference DSM"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.BUILDING_MASK, "Building mask (0/1)", optional=True))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.DILATION, "Building dilation (pixels)", QgsProcessingParameterNumber.Integer, 2, minValue=0)))
        self.addParameter(advanced(QgsProcessingParameterBoolean(
            self.COREGISTER, "Co-register the DSM to the reference first", defaultValue=False)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.MAX_SHIFT, "Largest horizontal shift (map units)", QgsProcessingParameterNumber.Double,
            DEFAULT_MAX_SHIFT, minValue=0.0)))
        self.addParameter(advanced(QgsProcessingParameterBoolean(
            self.STEP_REGIONS, "Also report height steps (top, foot, off steps)", defaultValue=False)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.STEP_HEIGHT, "Smallest height step", QgsProcessingParameterNumber.Double,
            DEFAULT_STEP_HEIGHT, minValue=0.01)))
        self.addParameter(QgsProcessingParameterRasterDestination(self.RESIDUAL, "Residual (DSM − reference)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, "Metrics report (HTML)", "HTML files (*.html)", optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_JSON, "Metrics (JSON)", "JSON files (*.json)", optional=True, createByDefault=False))
        for key in OVERALL_OUTPUTS:
            self.addOutput(QgsProcessingOutputNumber(f"OVERALL_{key.upper()}", f"Overall {key.upper()}"))
        for key in SHIFT_OUTPUTS:
            self.addOutput(QgsProcessingOutputNumber(f"SHIFT_{key.upper()}", f"Co-registration shift {key}"))

    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext) -> tuple[bool, str]:
        # In the dialog this stops Run before a task starts (e.g. both combo boxes on the one raster).
        dsm = self.parameterAsRasterLayer(parameters, self.DSM, context) if parameters.get(self.DSM) else None
        ref = self.parameterAsRasterLayer(parameters, self.REFERENCE, context) if parameters.get(self.REFERENCE) else None
        if dsm is not None and ref is not None and same_raster(dsm, ref):
            return False, SAME_RASTER_MESSAGE.format(name=dsm.name())
        return super().checkParameterValues(parameters, context)

    def run_job(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        from ...core.evaluation import evaluate_dsm

        dsm = self.parameterAsRasterLayer(parameters, self.DSM, context)
        ref = self.parameterAsRasterLayer(parameters, self.REFERENCE, context)
        mask_layer = self.parameterAsRasterLayer(parameters, self.BUILDING_MASK, context) \
            if parameters.get(self.BUILDING_MASK) else None
        if dsm is None or ref is None:
            raise QgsProcessingException("Choose both a DSM and a reference DSM raster.")
        if same_raster(dsm, ref):
            raise QgsProcessingException(SAME_RASTER_MESSAGE.format(name=dsm.name()))
        residual = self.parameterAsOutputLayer(parameters, self.RESIDUAL, context)
        html = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context) or None
        js = self.parameterAsFileOutput(parameters, self.OUTPUT_JSON, context) or None
        feedback.setProgressText("Comparing the DSM with the reference")
        report = evaluate_dsm(
            raster_path(dsm), raster_path(ref), building_mask=raster_path(mask_layer) if mask_layer else None,
            residual_out=residual, json_out=js, html_out=html,
            building_dilation_px=self.parameterAsInt(parameters, self.DILATION, context),
            coregister=self.parameterAsBool(parameters, self.COREGISTER, context),
            max_shift=self.parameterAsDouble(parameters, self.MAX_SHIFT, context),
            with_step_regions=self.parameterAsBool(parameters, self.STEP_REGIONS, context),
            step_height=self.parameterAsDouble(parameters, self.STEP_HEIGHT, context),
        )
        feedback.setProgress(100)
        feedback.pushInfo(f"DSM: {report.dsm}\nReference: {report.reference}\n\n" + report.as_table())
        attach_style(context, residual, "residual", f"{dsm.name()} − {ref.name()} (residual)")
        overall = report.regions["overall"]
        results = {self.RESIDUAL: residual, self.OUTPUT_HTML: html, self.OUTPUT_JSON: js}
        for key in OVERALL_OUTPUTS:
            value = float(getattr(overall, key))
            results[f"OVERALL_{key.upper()}"] = value if math.isfinite(value) else None
        for key in SHIFT_OUTPUTS:
            results[f"SHIFT_{key.upper()}"] = None if report.coregistration is None else getattr(report.coregistration, key)
        return results
