"""Processing algorithm "Suggest tiles to label": ``geosscl suggest`` on a raster layer."""

from __future__ import annotations

import os
import tempfile

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
)

from .algorithm import DEVICES, bfloat16_parameter, style_on_load
from .base import GeossclAlgorithm
from .layers import check_raster, check_vector, configured_executable, imagery_nodata, label_files, named_after_layers, raster_file, vector_file
from .runner import EXECUTABLE_SETTING, Cancelled, RunError, find_executable, reporter, run, suggest_command
from .style import style_tiles


class SuggestTilesAlgorithm(GeossclAlgorithm):
    INPUT = "INPUT"
    MODEL = "MODEL"
    COUNT = "COUNT"
    TILE_SIZE = "TILE_SIZE"
    SPACING = "SPACING"
    REGION = "REGION"
    EXCLUDE = "EXCLUDE"
    DEVICE = "DEVICE"
    BFLOAT16 = "BFLOAT16"
    OUTPUT = "OUTPUT"

    def name(self):
        return "suggest_tiles"

    def displayName(self):  # noqa: N802
        return "Suggest tiles to label"

    def shortHelpString(self):  # noqa: N802
        return (
            "Where to label next. Runs a geosscl model over a raster layer and writes the squares (tiles of the "
            "model's tile size, or the size given) where it is least sure of the class: the highest mean entropy of "
            "its class probabilities, from 0 (certain) to 1 (every class equally likely). Tiles holding any of the "
            "labels you already have, tiles touching the excluded polygons (keep a test region free) and tiles with "
            "no-data are skipped, and no two suggestions (nor one and your labels) touch, so the labels spread over "
            "the scene. Label the squares, then train again (Train model from labels). The layer's fields: rank "
            "(1 = least sure), uncertainty, the class the model predicts for most of the tile, and its share with "
            f"data. Runs the geosscl executable (Processing options > Providers > geosscl, or {EXECUTABLE_SETTING}, "
            "or PATH)."
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "geosscl model", behavior=QgsProcessingParameterFile.File,
            fileFilter="geosscl models (*.safetensors *.onnx)"))
        self.addParameter(QgsProcessingParameterNumber(
            self.COUNT, "Tiles to suggest", QgsProcessingParameterNumber.Integer, 20, False, 1))
        self.addParameter(QgsProcessingParameterNumber(
            self.TILE_SIZE, "Tile size, pixels (0: the model's)", QgsProcessingParameterNumber.Integer, 0, False, 0))
        self.addParameter(QgsProcessingParameterNumber(
            self.SPACING, "Keep suggestions this many tiles apart (0: neighbours allowed)",
            QgsProcessingParameterNumber.Integer, 1, False, 0))
        self.add_label_parameters("Labels you already have (optional)", "unlabelled")
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.REGION, "Suggest only inside these polygons", [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.EXCLUDE, "Keep these polygons free of suggestions (e.g. a test region)",
            [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES, defaultValue=0))
        self.addParameter(bfloat16_parameter(self.BFLOAT16))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT, "Tiles to label", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber("TILES", "Tiles suggested"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        raster = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        check_raster(raster)
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if not model or not os.path.isfile(model):
            raise QgsProcessingException(f"model file {model or '(none)'} does not exist")
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        if not output.lower().endswith(".gpkg"):
            raise QgsProcessingException(f"{output}: tiles to label are written as GeoPackage; choose a .gpkg file")
        labels = self.label_parameters(parameters, context, optional=True, model=True)
        polygons = {}
        for name, title in ((self.REGION, "Region"), (self.EXCLUDE, "Excluded polygons")):
            layer = self.parameterAsVectorLayer(parameters, name, context)
            if layer is not None:
                check_vector(layer, title)
                polygons[name] = layer
        nodata = imagery_nodata([raster])
        copies = {}
        try:
            executable = find_executable(configured_executable())
            with tempfile.TemporaryDirectory(prefix="geosscl-qgis-") as scratch:
                scene = raster_file(raster, scratch, context, feedback)
                if scene.startswith(scratch):
                    copies[scene] = raster.name()
                options = []
                if labels is not None:
                    options, label_copies = label_files(labels, scratch, context, feedback, with_classes=False)
                    copies.update(label_copies)
                files = {}
                for name, layer in polygons.items():
                    files[name] = vector_file(layer, scratch, name.lower(), context)
                    copies[files[name]] = layer.name()
                command = suggest_command(
                    executable, scene, model, output, count=self.parameterAsInt(parameters, self.COUNT, context),
                    tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context) or None,
                    spacing=self.parameterAsInt(parameters, self.SPACING, context), labels=options,
                    region=files.get(self.REGION), exclude=files.get(self.EXCLUDE),
                    device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)], nodata=nodata,
                    bfloat16=self.parameterAsBool(parameters, self.BFLOAT16, context),
                )
                feedback.pushCommandInfo(" ".join(command))
                result = run(command, feedback.setProgress, reporter(feedback, lambda line: named_after_layers(line, copies)),
                             feedback.isCanceled)
        except Cancelled as exc:
            raise QgsProcessingException(str(exc)) from None
        except RunError as exc:
            raise QgsProcessingException(f"geosscl: {named_after_layers(str(exc), copies)}") from None
        if context.willLoadLayerOnCompletion(output):
            style_on_load(context, output, style_tiles)
        return {self.OUTPUT: output, "TILES": result.get("tiles")}
