"""Processing algorithm "Train model from labels": ``geosscl probe -o`` or ``geosscl finetune``."""

from __future__ import annotations

import os
import tempfile

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .algorithm import DEVICES, palette_on_load
from .base import GeossclAlgorithm
from .layers import check_raster, configured_executable, imagery_nodata, label_files, named_after_layers, raster_file
from .runner import (EXECUTABLE_SETTING, TRAIN_METHODS, Cancelled, RunError, find_executable, predict_command, reporter, run,
                     train_command)

METHOD_NAMES = [
    "Linear classifier of the encoder's first stage (few labels; seconds to minutes)",
    "Fine-tune the whole network (many labels; minutes to hours)",
]
#: Share of the progress bar for training when a class map is made afterwards.
TRAINING_SHARE = 0.8


class TrainModelAlgorithm(GeossclAlgorithm):
    INPUT = "INPUT"
    OTHER_DATES = "OTHER_DATES"
    INIT = "INIT"
    METHOD = "METHOD"
    STEPS = "STEPS"
    CROP_SIZE = "CROP_SIZE"
    BALANCE = "BALANCE"
    DEVICE = "DEVICE"
    OUTPUT = "OUTPUT"
    CLASS_MAP = "CLASS_MAP"

    def name(self):
        return "train_model"

    def displayName(self):  # noqa: N802
        return "Train model from labels"

    def shortHelpString(self):  # noqa: N802
        return (
            "Makes a geosscl model file from a raster and its labels: polygons whose field names or numbers their "
            "class (polygons you digitised: pixels outside every polygon are unlabelled, unless a background class is "
            "given), or a class raster (one band of class ids, in any CRS and resolution; its no-data value, or the "
            "additional no-data value set in Layer Properties > Transparency, marks unlabelled pixels; a paletted "
            "style gives the model its class names and colours). "
            "The encoder comes from a geosscl pretraining run on unlabelled imagery (its last.ckpt), or is random; "
            "or start from a model this algorithm made by fine-tuning, to train it further on labels added since or "
            "on another place (it keeps the model's classes where the labels use them). "
            "With few labels the linear classifier of the encoder's first stage is the better model (and fitted in "
            "seconds); fine-tuning the whole network needs more labels and time. Optionally segments the raster with "
            "the new model. Other dates of the input raster (rasters of its ground, with its bands), where the "
            "labels hold too (stable land cover), train the model on every date: it then holds on each of them. "
            "Runs the geosscl executable (Processing options > Providers > geosscl, "
            f"or {EXECUTABLE_SETTING}, or PATH)."
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.OTHER_DATES, "Other dates of the input raster, where the labels hold too (trained on every date)",
            QgsProcessing.TypeRaster, optional=True))
        self.add_label_parameters("Labels", "unlabelled")
        self.addParameter(QgsProcessingParameterFile(
            self.INIT, "Start from: last.ckpt of a geosscl pretraining run, or a fine-tuned model file (empty: random "
            "weights)", behavior=QgsProcessingParameterFile.File,
            fileFilter="geosscl pretraining checkpoints and models (*.ckpt *.safetensors)",
            optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.METHOD, "Model", options=METHOD_NAMES, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.STEPS, "Fine-tuning steps", QgsProcessingParameterNumber.Integer, 500, False, 1))
        self.addParameter(QgsProcessingParameterNumber(
            self.CROP_SIZE, "Crop and label block side, pixels (a multiple of 32)", QgsProcessingParameterNumber.Integer,
            128, False, 32))
        self.addParameter(QgsProcessingParameterBoolean(
            self.BALANCE, "Weigh rare classes up (for classes of very different sizes, such as buildings)", False))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, "Model file", fileFilter="geosscl models (*.safetensors)"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.CLASS_MAP, "Class map of the input raster, made with the new model", optional=True,
            createByDefault=False))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        raster = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        check_raster(raster)
        others = self.parameterAsLayerList(parameters, self.OTHER_DATES, context) or []
        for layer in others:
            check_raster(layer, "Other dates")
        nodata = imagery_nodata([raster, *others])
        init = self.parameterAsFile(parameters, self.INIT, context) or None
        labels = self.label_parameters(parameters, context, model=bool(init) and init.lower().endswith(".safetensors"))
        if init and not os.path.isfile(init):
            raise QgsProcessingException(f"Start from: {init} does not exist")
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        if not output.lower().endswith(".safetensors"):
            raise QgsProcessingException(f"{output}: geosscl models are .safetensors files; choose such a name")
        class_map = None
        if parameters.get(self.CLASS_MAP) not in (None, ""):
            class_map = self.parameterAsOutputLayer(parameters, self.CLASS_MAP, context) or None
        device = DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]
        share = TRAINING_SHARE if class_map else 1.0
        copies = {}  # temporary file -> the layer it holds, to name the layer in geosscl's errors
        try:
            executable = find_executable(configured_executable())
            with tempfile.TemporaryDirectory(prefix="geosscl-qgis-") as scratch:
                scene = raster_file(raster, scratch, context, feedback)
                label_options, copies = label_files(labels, scratch, context, feedback)
                if scene.startswith(scratch):
                    copies[scene] = raster.name()
                dates = []
                for index, layer in enumerate(others):
                    dates.append(raster_file(layer, scratch, context, feedback, name=f"date{index}"))
                    if dates[-1].startswith(scratch):
                        copies[dates[-1]] = layer.name()
                command = train_command(
                    executable, scene, label_options, output,
                    method=TRAIN_METHODS[self.parameterAsEnum(parameters, self.METHOD, context)],
                    init=init, steps=self.parameterAsInt(parameters, self.STEPS, context),
                    crop_size=self.parameterAsInt(parameters, self.CROP_SIZE, context),
                    balance=self.parameterAsBool(parameters, self.BALANCE, context), device=device, other_dates=dates,
                    nodata=nodata,
                )
                feedback.pushCommandInfo(" ".join(command))
                run(command, lambda value: feedback.setProgress(share * value),
                    reporter(feedback, lambda line: named_after_layers(line, copies)), feedback.isCanceled)
                if class_map:
                    command = predict_command(executable, scene, output, class_map, device=device)
                    feedback.pushCommandInfo(" ".join(command))
                    try:
                        run(command, lambda value: feedback.setProgress(100 * share + (1 - share) * value),
                            reporter(feedback), feedback.isCanceled)
                    except Cancelled:
                        raise Cancelled(f"cancelled: the model {output} was written, the class map was not") from None
        except Cancelled as exc:
            raise QgsProcessingException(str(exc)) from None
        except RunError as exc:
            raise QgsProcessingException(f"geosscl: {named_after_layers(str(exc), copies)}") from None
        if class_map and context.willLoadLayerOnCompletion(class_map):
            palette_on_load(context, class_map)
        return {self.OUTPUT: output, self.CLASS_MAP: class_map}

