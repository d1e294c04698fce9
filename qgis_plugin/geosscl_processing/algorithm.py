"""Processing algorithm "Segment raster": ``geosscl predict`` on a raster layer."""

from __future__ import annotations

import os
import tempfile

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)
from qgis.PyQt import sip

from .base import GeossclAlgorithm
from .layers import bands_advice, check_raster, configured_executable, imagery_nodata, raster_file
from .runner import EXECUTABLE_SETTING, Cancelled, RunError, find_executable, predict_command, reporter, run
from .style import style_class_map

DEVICES = ["auto", "cpu", "cuda"]


def bfloat16_parameter(name):
    """The choice of geosscl's ``--precision bf16``, as every algorithm that runs a model offers it."""
    return QgsProcessingParameterBoolean(
        name, "Run the model in bfloat16 (faster on recent GPUs and on CPUs with AVX512-BF16 or AMX; a few pixels in "
              "a thousand change class)", defaultValue=False)


class _Styler(QgsProcessingLayerPostProcessorInterface):
    """Styles a loaded output with ``style(layer)``."""

    def __init__(self, style):
        super().__init__()
        self.style = style

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        self.style(layer)


#: Post-processors QGIS has not deleted yet: its binding takes them over without keeping their Python
#: side alive, and without it QGIS calls the bare interface, which styles nothing.
_PENDING: list[_Styler] = []


def style_on_load(context, output, style) -> None:
    """Style ``output`` with ``style(layer)`` when Processing loads it.

    A new post-processor each run: QGIS deletes it with the run's context, so a single shared
    one was gone after the first run (the next run's ``setPostProcessor`` failed).
    """
    _PENDING[:] = [p for p in _PENDING if not sip.isdeleted(p)]
    processor = _Styler(style)
    _PENDING.append(processor)
    context.layerToLoadOnCompletionDetails(output).setPostProcessor(processor)


def palette_on_load(context, output) -> None:
    """Style the class map ``output`` with the model's classes when Processing loads it."""
    style_on_load(context, output, style_class_map)


class SegmentRasterAlgorithm(GeossclAlgorithm):
    INPUT = "INPUT"
    MODEL = "MODEL"
    BANDS = "BANDS"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    BFLOAT16 = "BFLOAT16"
    OUTPUT = "OUTPUT"
    OUTPUT_PROBABILITIES = "OUTPUT_PROBABILITIES"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"

    def name(self):
        return "segment_raster"

    def displayName(self):  # noqa: N802
        return "Segment raster"

    def shortHelpString(self):  # noqa: N802
        return ("Runs a geosscl segmentation model over a raster layer, tile by tile, and writes a class map "
                "(Cloud-Optimised GeoTIFF, class colours and names from the model); optionally class probabilities "
                "and class polygons (none of the model's background class, such as the ground between buildings). "
                "Runs the geosscl executable (Processing options > Providers > geosscl, "
                f"or {EXECUTABLE_SETTING}, or PATH).")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "geosscl model", behavior=QgsProcessingParameterFile.File,
            fileFilter="geosscl models (*.safetensors *.onnx)"))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, "Bands fed to the model, in order (default: the model's)", parentLayerParameterName=self.INPUT,
            optional=True, allowMultiple=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.TILE_SIZE, "Tile size, pixels (0: the model's)", QgsProcessingParameterNumber.Integer, 0, False, 0))
        self.addParameter(QgsProcessingParameterNumber(
            self.OVERLAP, "Tile overlap, pixels (empty: the model's)", QgsProcessingParameterNumber.Integer, None, True, 0))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Tiles per batch", QgsProcessingParameterNumber.Integer, 8, False, 1))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES, defaultValue=0))
        self.addParameter(bfloat16_parameter(self.BFLOAT16))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Class map"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_PROBABILITIES, "Class probabilities", optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_POLYGONS, "Class polygons", QgsProcessing.TypeVectorPolygon, optional=True,
            createByDefault=False))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        check_raster(layer)
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if not model or not os.path.isfile(model):
            raise QgsProcessingException(f"model file {model or '(none)'} does not exist")
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        probabilities = self._optional_output(parameters, self.OUTPUT_PROBABILITIES, context)
        polygons = self._optional_output(parameters, self.OUTPUT_POLYGONS, context)
        if polygons and not polygons.lower().endswith(".gpkg"):
            raise QgsProcessingException(f"{polygons}: class polygons are written as GeoPackage; choose a .gpkg file")
        overlap = parameters.get(self.OVERLAP)
        nodata = imagery_nodata([layer])
        try:
            executable = find_executable(configured_executable())
            with tempfile.TemporaryDirectory(prefix="geosscl-qgis-") as scratch:
                scene = raster_file(layer, scratch, context, feedback)
                command = predict_command(
                    executable, scene, model, output, bands=self.parameterAsInts(parameters, self.BANDS, context) or None,
                    tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context) or None,
                    overlap=None if overlap in (None, "") else self.parameterAsInt(parameters, self.OVERLAP, context),
                    batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
                    device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                    bfloat16=self.parameterAsBool(parameters, self.BFLOAT16, context),
                    probabilities=probabilities, vector=polygons, nodata=nodata,
                )
                feedback.pushCommandInfo(" ".join(command))
                run(command, feedback.setProgress, reporter(feedback), feedback.isCanceled)
        except Cancelled as exc:
            raise QgsProcessingException(str(exc)) from None
        except RunError as exc:
            raise QgsProcessingException(f"geosscl: {bands_advice(str(exc), 'Bands fed to the model')}") from None
        if context.willLoadLayerOnCompletion(output):
            palette_on_load(context, output)
        return {self.OUTPUT: output, self.OUTPUT_PROBABILITIES: probabilities, self.OUTPUT_POLYGONS: polygons}

    def _optional_output(self, parameters, name, context):
        if parameters.get(name) in (None, ""):
            return None
        return self.parameterAsOutputLayer(parameters, name, context) or None
