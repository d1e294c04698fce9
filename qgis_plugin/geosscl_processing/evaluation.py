"""Processing algorithm "Evaluate model on labels": ``geosscl evaluate`` on a polygon layer or a class raster."""

from __future__ import annotations

import os
import tempfile

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
)

from .algorithm import DEVICES, bfloat16_parameter
from .base import GeossclAlgorithm
from .layers import (check_raster, check_vector, configured_executable, imagery_nodata, label_files, named_after_layers,
                     raster_file, vector_file)
from .runner import EXECUTABLE_SETTING, Cancelled, RunError, evaluate_command, find_executable, reporter, run

#: Summary scores: Processing output name -> key of geosscl's JSON.
SCORES = {"MIOU": "miou", "OVERALL_ACCURACY": "overall_accuracy", "KAPPA": "kappa", "MEAN_F1": "mean_f1"}


class EvaluateModelAlgorithm(GeossclAlgorithm):
    INPUT = "INPUT"
    OTHER_DATES = "OTHER_DATES"
    MODEL = "MODEL"
    REGION = "REGION"
    HELD_OUT = "HELD_OUT"
    DEVICE = "DEVICE"
    BFLOAT16 = "BFLOAT16"
    OUTPUT_JSON = "OUTPUT_JSON"
    OUTPUT_CONFUSION = "OUTPUT_CONFUSION"

    def name(self):
        return "evaluate_model"

    def displayName(self):  # noqa: N802
        return "Evaluate model on labels"

    def shortHelpString(self):  # noqa: N802
        return (
            "Scores a geosscl model on reference labels kept out of training: polygons whose field names or numbers "
            "their class (test polygons you digitised), or a class raster (one band of the model's class ids; no-data "
            "pixels are not scored). The raster is segmented tile by tile, as Segment raster does, and compared with "
            "the labels pixel by pixel. Gives mIoU, overall accuracy, Cohen's kappa and mean "
            "F1 (0 to 1), per-class IoU and F1 in the log, and optionally the scores as JSON and the confusion matrix "
            "as PNG. The polygons' class names must be the model's. A model made by geosscl records where its "
            "labels were (training and validation); the log warns where scored labels lie there, and 'Score only "
            "labels the model never met' leaves them out. With other dates of the input raster (rasters of "
            "its ground, with its bands), where the labels hold too, each date is scored, and the summary scores are "
            "those of all dates pooled (each labelled pixel once per date); the log gives each date's. Runs the "
            f"geosscl executable (Processing options > Providers > geosscl, or {EXECUTABLE_SETTING}, or PATH)."
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.OTHER_DATES, "Other dates of the input raster, where the labels hold too (each date scored)",
            QgsProcessing.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "geosscl model", behavior=QgsProcessingParameterFile.File,
            fileFilter="geosscl models (*.safetensors *.onnx)"))
        self.add_label_parameters("Reference labels", "not scored")
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.REGION, "Score only inside these polygons (e.g. a test region)", [QgsProcessing.TypeVectorPolygon],
            optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            self.HELD_OUT, "Score only labels the model never met (outside its training and validation ground)",
            defaultValue=False))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES, defaultValue=0))
        self.addParameter(bfloat16_parameter(self.BFLOAT16))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_JSON, "Scores (JSON)", fileFilter="JSON files (*.json)", optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_CONFUSION, "Confusion matrix (PNG)", fileFilter="PNG files (*.png)", optional=True,
            createByDefault=False))
        for name, label in (("MIOU", "mIoU"), ("OVERALL_ACCURACY", "Overall accuracy"), ("KAPPA", "Cohen's kappa"),
                            ("MEAN_F1", "Mean F1")):
            self.addOutput(QgsProcessingOutputNumber(name, label))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        raster = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        check_raster(raster)
        others = self.parameterAsLayerList(parameters, self.OTHER_DATES, context) or []
        for layer in others:
            check_raster(layer, "Other dates")
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if not model or not os.path.isfile(model):
            raise QgsProcessingException(f"model file {model or '(none)'} does not exist")
        nodata = imagery_nodata([raster, *others])
        labels = self.label_parameters(parameters, context, model=True)
        region = self.parameterAsVectorLayer(parameters, self.REGION, context)
        if region is not None:
            check_vector(region, "Region")
        outputs = {name: self._optional_file(parameters, name, context) for name in (self.OUTPUT_JSON, self.OUTPUT_CONFUSION)}
        copies = {}
        try:
            executable = find_executable(configured_executable())
            with tempfile.TemporaryDirectory(prefix="geosscl-qgis-") as scratch:
                scene = raster_file(raster, scratch, context, feedback)
                label_options, copies = label_files(labels, scratch, context, feedback, with_classes=False)
                region_file = None
                if region is not None:
                    region_file = vector_file(region, scratch, "region", context)
                    copies[region_file] = region.name()
                if scene.startswith(scratch):
                    copies[scene] = raster.name()
                names = {scene: raster.name()}  # the table of dates names every raster by its layer
                dates = []
                for index, layer in enumerate(others):
                    dates.append(raster_file(layer, scratch, context, feedback, name=f"date{index}"))
                    names[dates[-1]] = layer.name()
                    if dates[-1].startswith(scratch):
                        copies[dates[-1]] = layer.name()
                command = evaluate_command(
                    executable, scene, model, label_options, region=region_file,
                    json_path=outputs[self.OUTPUT_JSON], png_path=outputs[self.OUTPUT_CONFUSION],
                    device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)], other_dates=dates,
                    bfloat16=self.parameterAsBool(parameters, self.BFLOAT16, context),
                    nodata=nodata, held_out=self.parameterAsBoolean(parameters, self.HELD_OUT, context),
                )
                feedback.pushCommandInfo(" ".join(command))
                scores = run(command, feedback.setProgress, reporter(feedback, lambda line: named_after_layers(line, copies)),
                             feedback.isCanceled)
        except Cancelled as exc:
            raise QgsProcessingException(str(exc)) from None
        except RunError as exc:
            raise QgsProcessingException(f"geosscl: {named_after_layers(str(exc), copies)}") from None
        feedback.pushInfo(named_after_layers(scores["table"], {**copies, **names}))
        return {**outputs, **{name: scores.get(key) for name, key in SCORES.items()}}

    def _optional_file(self, parameters, name, context):
        if parameters.get(name) in (None, ""):
            return None
        return self.parameterAsFileOutput(parameters, name, context) or None

