"""Styles for the rasters the algorithms load: DSM (hillshade over a colour ramp), residual, confidence, mask.

QGIS 3.22 draws one renderer per raster layer, so "hillshade over pseudocolour" is two layers on
the same file: the DSM with a colour ramp and, just above it in the layer tree, a multi-directional
hillshade blended with *multiply*. The hillshade is computed at the raster's own resolution and
resampled bilinearly when zoomed in: computed on nearest-neighbour upsampled heights it would be
flat inside each pixel and dark at every pixel edge (a grid). Legends say what the values are
("Height (m)", two decimals) instead of "Band 1 (Gray)". Styling happens in a layer post-processor,
which Processing calls in the main thread after loading the output into the project; it also sets
the layer's name (input and model), so runs stay distinguishable in the layer tree.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from qgis.core import (
    QgsBasicNumericFormat,
    QgsBilinearRasterResampler,
    QgsColorRampShader,
    QgsGradientColorRamp,
    QgsGradientStop,
    QgsHillshadeRenderer,
    QgsLayerTreeLayer,
    QgsMapLayerLegendUtils,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProject,
    QgsRasterBandStats,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
    QgsUnitTypes,
)
from qgis.PyQt.QtGui import QColor, QPainter

#: Low → high: water blue, greens, ochre, brown, near white (a hypsometric feel for city DSMs).
DSM_COLOURS: Sequence[str] = ("#2b6ca3", "#4fa36b", "#c9d67a", "#e3b15a", "#b0694a", "#f4f1ee")
RESIDUAL_COLOURS: Sequence[str] = ("#2166ac", "#f7f7f7", "#b2182b")  # DSM too low / right / too high
CONFIDENCE_COLOURS: Sequence[str] = ("#440154", "#21918c", "#fde725")
HILLSHADE_SUFFIX = " — hillshade"
LEGEND_DECIMALS = 2
KINDS = ("dsm", "residual", "confidence", "mask")
HILLSHADE_OPACITY = 0.4  # enough relief to read roofs, not so much that walls turn black
RESIDUAL_SATURATION = 5.0  # map units: larger errors get the end colours


def _ramp(colours: Sequence[str]) -> QgsGradientColorRamp:
    stops = [QgsGradientStop(i / (len(colours) - 1), QColor(c)) for i, c in enumerate(colours[1:-1], start=1)]
    return QgsGradientColorRamp(QColor(colours[0]), QColor(colours[-1]), False, stops)


def _pseudocolor(layer: QgsRasterLayer, colours: Sequence[str], vmin: float, vmax: float) -> QgsSingleBandPseudoColorRenderer:
    shader_fn = QgsColorRampShader(vmin, vmax)
    shader_fn.setSourceColorRamp(_ramp(colours))
    shader_fn.setColorRampType(QgsColorRampShader.Interpolated)
    if vmax <= vmin:
        vmax = vmin + 1.0
    values = [vmin + (vmax - vmin) * i / (len(colours) - 1) for i in range(len(colours))]
    items = [QgsColorRampShader.ColorRampItem(v, QColor(c), f"{v:.2f}") for v, c in zip(values, colours)]
    shader_fn.setColorRampItemList(items)
    shader_fn.setMinimumValue(vmin)
    shader_fn.setMaximumValue(vmax)
    legend = shader_fn.legendSettings()
    number_format = QgsBasicNumericFormat()
    number_format.setNumberDecimalPlaces(LEGEND_DECIMALS)
    number_format.setShowTrailingZeros(True)
    legend.setNumericFormat(number_format)
    shader_fn.setLegendSettings(legend)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(shader_fn)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(vmin)
    renderer.setClassificationMax(vmax)
    return renderer


def band_range(layer: QgsRasterLayer) -> tuple[float, float]:
    """(min, max) of band 1 from exact statistics (outputs are small enough; nodata excluded)."""
    stats = layer.dataProvider().bandStatistics(1, QgsRasterBandStats.Min | QgsRasterBandStats.Max, layer.extent(), 0)
    return float(stats.minimumValue), float(stats.maximumValue)


def style_dsm(layer: QgsRasterLayer, project: QgsProject | None = None) -> QgsRasterLayer | None:
    """Colour-ramp the DSM and add a multiply-blended hillshade of it just above (returned)."""
    vmin, vmax = band_range(layer)
    layer.setRenderer(_pseudocolor(layer, DSM_COLOURS, vmin, vmax))
    layer.triggerRepaint()
    if project is None:
        return None
    shade = QgsRasterLayer(layer.source(), layer.name() + HILLSHADE_SUFFIX, layer.providerType())
    if not shade.isValid():
        return None
    hill = QgsHillshadeRenderer(shade.dataProvider(), 1, 315.0, 45.0)
    hill.setMultiDirectional(True)
    hill.setZFactor(1.0)
    shade.setRenderer(hill)
    # Shade at the source resolution, then interpolate: no pixel-edge grid when zoomed in.
    shade.resampleFilter().setZoomedInResampler(QgsBilinearRasterResampler())
    shade.resampleFilter().setMaxOversampling(1.0)
    shade.setBlendMode(QPainter.CompositionMode_Multiply)
    shade.setOpacity(HILLSHADE_OPACITY)
    project.addMapLayer(shade, False)
    node = project.layerTreeRoot().findLayer(layer.id())
    parent = node.parent() if node is not None else project.layerTreeRoot()
    index = parent.children().index(node) if node is not None else 0
    parent.insertLayer(index, shade)  # index of the DSM = drawn above it
    return shade


def style_residual(layer: QgsRasterLayer) -> None:
    """Diverging blue-white-red, symmetric around 0 so the sign of the error reads at a glance."""
    vmin, vmax = band_range(layer)
    bound = min(max(abs(vmin), abs(vmax), 1e-6), RESIDUAL_SATURATION)  # outliers saturate
    layer.setRenderer(_pseudocolor(layer, RESIDUAL_COLOURS, -bound, bound))
    layer.triggerRepaint()


def style_confidence(layer: QgsRasterLayer) -> None:
    """0 (guess/filled) to 1 (sharp surface) on a perceptual ramp."""
    layer.setRenderer(_pseudocolor(layer, CONFIDENCE_COLOURS, 0.0, 1.0))
    layer.triggerRepaint()


def style_mask(layer: QgsRasterLayer) -> None:
    """Building mask: 1 = building in red, 0 transparent (the map below stays readable)."""
    classes = [QgsPalettedRasterRenderer.Class(0, QColor(0, 0, 0, 0), "not building"),
               QgsPalettedRasterRenderer.Class(1, QColor("#d7301f"), "building")]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    layer.triggerRepaint()


def height_unit(layer: QgsRasterLayer) -> str:
    """' (m)' / ' (ft)': heights are in the map units of a projected CRS; '' when unknown."""
    units = layer.crs().mapUnits() if layer.crs().isValid() else QgsUnitTypes.DistanceUnknownUnit
    if units in (QgsUnitTypes.DistanceUnknownUnit, QgsUnitTypes.DistanceDegrees):
        return ""
    return f" ({QgsUnitTypes.toAbbreviatedString(units)})"


def legend_title(layer: QgsRasterLayer, kind: str) -> str | None:
    """The first legend row: what the colours mean, instead of the band name."""
    if kind == "dsm":
        return "Height" + height_unit(layer)
    if kind == "residual":
        return "DSM − reference" + height_unit(layer)
    if kind == "confidence":
        return "Confidence (0–1)"
    return None


def set_legend_title(node: QgsLayerTreeLayer | None, title: str | None) -> None:
    """Label the legend's band-name row (node 0) of a pseudocolour layer in the layer tree."""
    if node is not None and title:
        QgsMapLayerLegendUtils.setLegendNodeUserLabel(node, 0, title)
        node.layer().legendChanged.emit()  # layer tree views built the legend when the layer was added


class RasterStylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Applies one of the styles above to an output when Processing loads it into the project."""

    def __init__(self, kind: str, name: str | None = None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown style kind {kind!r}")
        self.kind = kind
        self.name = name

    def postProcessLayer(self, layer, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> None:
        if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
            return
        if self.name:
            layer.setName(self.name)
        project = context.project() or QgsProject.instance()
        if self.kind == "dsm":
            style_dsm(layer, project)
        elif self.kind == "residual":
            style_residual(layer)
        elif self.kind == "confidence":
            style_confidence(layer)
        else:
            style_mask(layer)
        node = project.layerTreeRoot().findLayer(layer.id())
        set_legend_title(node, legend_title(layer, self.kind))


# Processing holds post-processors by raw pointer: Python must keep them alive until they have run.
_KEEP_ALIVE: deque[RasterStylePostProcessor] = deque(maxlen=64)


def attach_style(context: QgsProcessingContext, output_path: str, kind: str, name: str | None = None) -> bool:
    """Style (and name) ``output_path`` when it is loaded on completion; False when it will not be."""
    if not output_path or not context.willLoadLayerOnCompletion(output_path):
        return False
    processor = RasterStylePostProcessor(kind, name)
    _KEEP_ALIVE.append(processor)
    details = context.layerToLoadOnCompletionDetails(output_path)
    if name:
        details.name = name
        details.forceName = True
    details.setPostProcessor(processor)
    return True
