"""Processing algorithm "Pretrain encoder on unlabelled rasters": ``geosscl pretrain``."""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
)

from .algorithm import DEVICES
from .base import GeossclAlgorithm
from .layers import check_raster, configured_executable, imagery_nodata, named_after_layers, raster_file
from .runner import EXECUTABLE_SETTING, Cancelled, RunError, find_executable, pretrain_command, reporter, run


class PretrainAlgorithm(GeossclAlgorithm):
    INPUT = "INPUT"
    MINUTES = "MINUTES"
    STEPS = "STEPS"
    CROP_SIZE = "CROP_SIZE"
    BATCH_SIZE = "BATCH_SIZE"
    ACROSS_DATES = "ACROSS_DATES"
    MAX_NODATA = "MAX_NODATA"
    DEVICE = "DEVICE"
    RESUME = "RESUME"
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
            "same bands, any CRS; rasters of several bands over the same ground are dates of one place, and every "
            "date is drawn). The run folder's last.ckpt is the pretrained encoder that Train model from labels "
            "starts from. Pretraining pays after hours on a GPU rather than minutes on a CPU (see geosscl's README); "
            "Cancel stops it at its last checkpoint, which stays usable; to go on, give that last.ckpt as the run to "
            "continue (minutes and steps then count the whole run, earlier ones included; it keeps its own view side "
            "and pairs per step, and its folder). With views from two dates, the two views of a pair come from two "
            "rasters that cover the same ground (one place on two dates), so the network learns to see one place "
            "alike across seasons and light. A largest no-data share below 1 rejects views with more no-data than "
            "that, each raster judged by its own (clouds masked on one date reject only that date's views). "
            f"Runs the geosscl executable (Processing options > Providers > geosscl, or {EXECUTABLE_SETTING}, or PATH)."
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.INPUT, "Unlabelled rasters (one mosaic: the same bands; a continued run: none, its own)",
            QgsProcessing.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.MINUTES, "Minutes of training (a continued run: in all)", QgsProcessingParameterNumber.Double, 60.0,
            False, 0.01))
        self.addParameter(QgsProcessingParameterNumber(
            self.STEPS, "Steps of training (0: as many as the minutes allow; a continued run: in all)",
            QgsProcessingParameterNumber.Integer, 0, False, 0))
        self.addParameter(QgsProcessingParameterNumber(
            self.CROP_SIZE, "View side, pixels (a multiple of 32)", QgsProcessingParameterNumber.Integer, 128, False, 32))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Pairs of views per step", QgsProcessingParameterNumber.Integer, 32, False, 2))
        self.addParameter(QgsProcessingParameterBoolean(
            self.ACROSS_DATES, "Views of a pair from two dates (rasters that cover the same ground)", False))
        self.addParameter(QgsProcessingParameterNumber(
            self.MAX_NODATA, "Largest no-data share of a view (swath edges, clouds masked on one date; 1: keep every view)",
            QgsProcessingParameterNumber.Double, 1.0, False, 0.0, 1.0))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterFile(
            self.RESUME, "Continue this run (its last.ckpt; empty: a new run)", extension="ckpt", optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.OUTPUT, "Run folder (new or empty; a continued run stays in its own)", optional=True))
        self.addOutput(QgsProcessingOutputFile(self.CHECKPOINT, "Pretrained encoder (last.ckpt)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layers = self.parameterAsLayerList(parameters, self.INPUT, context) or []
        resume = self.parameterAsFile(parameters, self.RESUME, context) or None
        if not layers and not resume:
            raise QgsProcessingException("Unlabelled rasters: choose at least one raster layer")
        for layer in layers:
            check_raster(layer, "Unlabelled rasters")
        nodata = None if resume else imagery_nodata(layers)  # a continued run keeps its own
        if resume:
            folder = _continued_folder(resume, parameters.get(self.OUTPUT),
                                       self.parameterAsString(parameters, self.OUTPUT, context))
            existed = True
        else:
            folder = self.parameterAsString(parameters, self.OUTPUT, context)
            if not folder:
                raise QgsProcessingException("Run folder: choose a new or empty folder for the run")
            existed = os.path.isdir(folder)
            if existed and os.listdir(folder):
                raise QgsProcessingException(f"{folder}: the run folder is not empty; choose a new or empty one, or "
                                             "give its last.ckpt as the run to continue")
        checkpoint = os.path.join(folder, "last.ckpt")
        max_nodata = self.parameterAsDouble(parameters, self.MAX_NODATA, context)
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
                    device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)], resume=resume,
                    across_dates=self.parameterAsBool(parameters, self.ACROSS_DATES, context),
                    max_nodata=max_nodata if max_nodata < 1 else None, nodata=nodata,
                )
                feedback.pushCommandInfo(" ".join(command))
                run(command, feedback.setProgress, reporter(feedback, lambda line: named_after_layers(line, copies)),
                    feedback.isCanceled)
        except Cancelled:
            if os.path.isfile(checkpoint):
                raise QgsProcessingException(
                    f"cancelled: the run stopped at its last checkpoint, {checkpoint}; it is a pretrained encoder for "
                    f"Train model from labels, and giving it as the run to continue goes on from there") from None
            _clear(folder, keep_folder=existed)  # it was new or empty: nothing of the run is worth keeping
            raise QgsProcessingException("cancelled before the first checkpoint: nothing was kept") from None
        except RunError as exc:
            message = named_after_layers(str(exc), copies)
            gone = re.fullmatch(r"(.+): no such file or directory", message)
            if resume and not layers and gone:
                # Without layers geosscl reads the rasters the run's config.yaml names, and stops on one that is gone
                # (a layer QGIS had copied for it, a web or memory layer, was a temporary file).
                raise QgsProcessingException(f"Unlabelled rasters: the run's own are gone ({gone.group(1)}); choose the "
                                             "rasters it was started on again") from None
            raise QgsProcessingException(f"geosscl: {_in_qgis_words(message)}") from None
        return {self.OUTPUT: folder, self.CHECKPOINT: checkpoint}


def _continued_folder(resume: str, given, chosen: str) -> str:
    """The folder of the run ``resume`` continues; a run folder given besides (``given``: the parameter's raw value,
    ``chosen``: the path it resolved to) must be that one."""
    if not os.path.isfile(resume):
        raise QgsProcessingException(f"{resume}: no such checkpoint file")
    folder = os.path.dirname(os.path.abspath(resume))
    if isinstance(given, QgsProcessingOutputLayerDefinition):  # what the dialog passes
        given = given.sink.staticValue()
    if given not in (None, "", QgsProcessing.TEMPORARY_OUTPUT) and os.path.realpath(chosen) != os.path.realpath(folder):
        raise QgsProcessingException(f"Run folder: a continued run stays in its own folder, {folder}; leave Run folder "
                                     "empty or choose that folder")
    return folder


def _in_qgis_words(message: str) -> str:
    """geosscl's advice on a run's limits and views, as the dialog names them."""
    return (message.replace("--max-steps counts all of its steps; give more", "Steps of training count all of its "
                            "steps; set more")
            .replace("--max-time counts all of them; give more", "Minutes of training count all of them; set more")
            .replace("across-dates: no two files of the imagery cover", "Views of a pair from two dates: no two of the "
                     "rasters cover"))


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
