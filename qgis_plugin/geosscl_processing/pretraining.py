"""Processing algorithm "Pretrain encoder on unlabelled rasters": ``geosscl pretrain``."""

from __future__ import annotations

import os
import shutil
import tempfile

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
)

from .algorithm import DEVICES
from .base import GeossclAlgorithm
from .layers import check_raster, configured_executable, named_after_layers, raster_file
from .runner import EXECUTABLE_SETTING, Cancelled, RunError, find_executable, pretrain_command, run


class PretrainAlgorithm(GeossclAlgorithm):
    INPUT = "INPUT"
    MINUTES = "MINUTES"
    STEPS = "STEPS"
    CROP_SIZE = "CROP_SIZE"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    OUTPUT = "OUTPUT"
    CHECKPOINT = "CHECKPOINT"

    def name(self):
        return "pretrain"

    def displayName(self):  # noqa: N802
        return "Pretrain encoder on unlabelled rasters"

    def shortHelpString(self):  # noqa: N802
        return (
            "Teaches a segmentation network (encoder and decoder) to read your imagery without labels, by SSCCL "
            "self-supervised learning on pairs of overlapping views drawn from the rasters (read as one mosaic: "
            "same bands, any CRS). The run folder's last.ckpt is the pretrained encoder that Train model from labels "
            "starts from. Pretraining pays after hours on a GPU rather than minutes on a CPU (see geosscl's README); "
            "Cancel stops it at its last checkpoint, which stays usable, and geosscl pretrain --resume continues it. "
            f"Runs the geosscl executable (Processing options > Providers > geosscl, or {EXECUTABLE_SETTING}, or PATH)."
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.INPUT, "Unlabelled rasters (one mosaic: the same bands)", QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterNumber(
            self.MINUTES, "Minutes of training", QgsProcessingParameterNumber.Double, 60.0, False, 0.01))
        self.addParameter(QgsProcessingParameterNumber(
            self.STEPS, "Steps of training (0: as many as the minutes allow)", QgsProcessingParameterNumber.Integer, 0,
            False, 0))
        self.addParameter(QgsProcessingParameterNumber(
            self.CROP_SIZE, "View side, pixels (a multiple of 32)", QgsProcessingParameterNumber.Integer, 128, False, 32))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Pairs of views per step", QgsProcessingParameterNumber.Integer, 32, False, 2))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Run folder (new or empty)"))
        self.addOutput(QgsProcessingOutputFile(self.CHECKPOINT, "Pretrained encoder (last.ckpt)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layers = self.parameterAsLayerList(parameters, self.INPUT, context)
        if not layers:
            raise QgsProcessingException("Unlabelled rasters: choose at least one raster layer")
        for layer in layers:
            check_raster(layer, "Unlabelled rasters")
        folder = self.parameterAsString(parameters, self.OUTPUT, context)
        existed = os.path.isdir(folder)
        if existed and os.listdir(folder):
            raise QgsProcessingException(f"{folder}: the run folder is not empty; choose a new or empty one")
        checkpoint = os.path.join(folder, "last.ckpt")
        copies = {}
        try:
            executable = find_executable(configured_executable())
            with tempfile.TemporaryDirectory(prefix="geosscl-qgis-") as scratch:
                scenes = []
                for index, layer in enumerate(layers):
                    scenes.append(raster_file(layer, scratch, context, feedback, name=f"input{index}"))
                    copies[scenes[-1]] = layer.name()
                command = pretrain_command(
                    executable, scenes, folder, minutes=self.parameterAsDouble(parameters, self.MINUTES, context),
                    steps=self.parameterAsInt(parameters, self.STEPS, context) or None,
                    crop_size=self.parameterAsInt(parameters, self.CROP_SIZE, context),
                    batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
                    device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                )
                feedback.pushCommandInfo(" ".join(command))
                run(command, feedback.setProgress, lambda line: feedback.pushInfo(named_after_layers(line, copies)),
                    feedback.isCanceled)
        except Cancelled:
            if os.path.isfile(checkpoint):
                raise QgsProcessingException(
                    f"cancelled: the run stopped at its last checkpoint, {checkpoint}; it is a pretrained encoder for "
                    f"Train model from labels, and geosscl pretrain --resume {checkpoint} continues it") from None
            _clear(folder, keep_folder=existed)  # it was new or empty: nothing of the run is worth keeping
            raise QgsProcessingException("cancelled before the first checkpoint: nothing was kept") from None
        except RunError as exc:
            raise QgsProcessingException(f"geosscl: {named_after_layers(str(exc), copies)}") from None
        return {self.OUTPUT: folder, self.CHECKPOINT: checkpoint}


def _clear(folder: str, keep_folder: bool) -> None:
    """Remove what a run wrote to ``folder`` (and the folder itself unless ``keep_folder``)."""
    if not keep_folder:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for entry in os.scandir(folder) if os.path.isdir(folder) else ():
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.remove(entry.path)
