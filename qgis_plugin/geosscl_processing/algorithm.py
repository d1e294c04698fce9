"""Processing algorithm "Segment raster": ``geosscl predict`` on a raster layer."""

from __future__ import annotations

import os
import tempfile

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
    QgsRasterFileWriter,
    QgsRasterPipe,
)

from .runner import EXECUTABLE_SETTING, Cancelled, RunError, find_executable, predict_command, run
from .style import style_class_map

DEVICES = ["auto", "cpu", "cuda"]
#: Raster layers geosscl reads from their file directly (GDAL files); others are written to a GeoTIFF first.
DIRECT_SUFFIXES = (".tif", ".tiff", ".gtif", ".vrt", ".img", ".jp2")


class _ClassPalette(QgsProcessingLayerPostProcessorInterface):
    """Gives the loaded class map a paletted renderer with the model's class names."""

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        style_class_map(layer)


# One module-level instance: Processing keeps only a C++ pointer to a post-processor,
# and the algorithm object that runs is a copy that is deleted when the run ends.
_PALETTE = _ClassPalette()


class SegmentRasterAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    MODEL = "MODEL"
    BANDS = "BANDS"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    OUTPUT = "OUTPUT"
    OUTPUT_PROBABILITIES = "OUTPUT_PROBABILITIES"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"

    def name(self):
        return "segment_raster"

    def displayName(self):  # noqa: N802
        return "Segment raster"

    def group(self):
        return "Segmentation"

    def groupId(self):  # noqa: N802
        return "segmentation"

    def shortHelpString(self):  # noqa: N802
        return ("Runs a geosscl segmentation model over a raster layer, tile by tile, and writes a class map "
                "(Cloud-Optimised GeoTIFF, class colours and names from the model); optionally class probabilities "
                "and class polygons. Runs the geosscl executable (Processing options > Providers > geosscl, "
                f"or {EXECUTABLE_SETTING}, or PATH).")

    def createInstance(self):  # noqa: N802
        return SegmentRasterAlgorithm()

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
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Class map"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_PROBABILITIES, "Class probabilities", optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_POLYGONS, "Class polygons", QgsProcessing.TypeVectorPolygon, optional=True,
            createByDefault=False))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException("Input raster: not a valid raster layer")
        if not layer.crs().isValid():
            raise QgsProcessingException(f"{layer.name()}: the raster has no CRS; assign one (Layer Properties > Source) first")
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if not model or not os.path.isfile(model):
            raise QgsProcessingException(f"model file {model or '(none)'} does not exist")
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        probabilities = self._optional_output(parameters, self.OUTPUT_PROBABILITIES, context)
        polygons = self._optional_output(parameters, self.OUTPUT_POLYGONS, context)
        if polygons and not polygons.lower().endswith(".gpkg"):
            raise QgsProcessingException(f"{polygons}: class polygons are written as GeoPackage; choose a .gpkg file")
        overlap = parameters.get(self.OVERLAP)
        try:
            executable = find_executable(_setting())
            with tempfile.TemporaryDirectory(prefix="geosscl-qgis-") as scratch:
                scene = self._scene_file(layer, scratch, context, feedback)
                command = predict_command(
                    executable, scene, model, output, bands=self.parameterAsInts(parameters, self.BANDS, context) or None,
                    tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context) or None,
                    overlap=None if overlap in (None, "") else self.parameterAsInt(parameters, self.OVERLAP, context),
                    batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
                    device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                    probabilities=probabilities, vector=polygons,
                )
                feedback.pushCommandInfo(" ".join(command))
                run(command, feedback.setProgress, feedback.pushInfo, feedback.isCanceled)
        except Cancelled as exc:
            raise QgsProcessingException(str(exc)) from None
        except RunError as exc:
            raise QgsProcessingException(f"geosscl: {exc}") from None
        if context.willLoadLayerOnCompletion(output):
            context.layerToLoadOnCompletionDetails(output).setPostProcessor(_PALETTE)
        return {self.OUTPUT: output, self.OUTPUT_PROBABILITIES: probabilities, self.OUTPUT_POLYGONS: polygons}

    def _optional_output(self, parameters, name, context):
        if parameters.get(name) in (None, ""):
            return None
        return self.parameterAsOutputLayer(parameters, name, context) or None

    @staticmethod
    def _scene_file(layer, scratch, context, feedback):
        """The layer's own file when GDAL reads it as a file; otherwise a GeoTIFF copy."""
        source = layer.source().split("|")[0]
        if layer.providerType() == "gdal" and os.path.isfile(source) and source.lower().endswith(DIRECT_SUFFIXES):
            return source
        if layer.providerType() not in ("gdal",):
            raise QgsProcessingException(
                f"{layer.name()}: a {layer.providerType()} layer (a web service or database) cannot be segmented "
                "directly; save it as a GeoTIFF (Export > Save As) first")
        feedback.pushInfo(f"{layer.name()}: not a plain raster file; writing a temporary GeoTIFF")
        path = os.path.join(scratch, "input.tif")
        provider = layer.dataProvider()
        pipe = QgsRasterPipe()
        pipe.set(provider.clone())
        writer = QgsRasterFileWriter(path)
        writer.setOutputFormat("GTiff")
        error = writer.writeRaster(pipe, provider.xSize(), provider.ySize(), provider.extent(), provider.crs(),
                                   context.transformContext())
        if error != QgsRasterFileWriter.NoError:
            raise QgsProcessingException(f"{layer.name()}: could not write it as a temporary GeoTIFF (error {error})")
        return path


def _setting():
    try:
        from processing.core.ProcessingConfig import ProcessingConfig

        return ProcessingConfig.getSetting(EXECUTABLE_SETTING) or None
    except (ImportError, KeyError):
        return None
