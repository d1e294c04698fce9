"""The "Pretrain encoder on unlabelled rasters" algorithm in real QGIS (headless): geosscl pretrain, its progress,
Cancel, and its checkpoint as the encoder of "Train model from labels"."""

from __future__ import annotations

import json

import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsRasterLayer

from conftest import SCENE, TUTORIAL_POLYGONS, TUTORIAL_STACK, geosscl

PRETRAIN = "geosscl:pretrain"
#: A run of a few small steps on the CPU.
SHORT = {"CROP_SIZE": 64, "BATCH_SIZE": 4, "DEVICE": 1, "MINUTES": 5}


def test_pretrain_algorithm_is_registered(provider):
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().algorithmById(PRETRAIN)
    assert algorithm is not None and algorithm.displayName() == "Pretrain encoder on unlabelled rasters"
    assert {p.name() for p in algorithm.parameterDefinitions()} >= {
        "INPUT", "MINUTES", "STEPS", "CROP_SIZE", "BATCH_SIZE", "DEVICE", "OUTPUT"}
    assert {o.name() for o in algorithm.outputDefinitions()} >= {"CHECKPOINT"}


def test_pretrains_and_its_checkpoint_is_the_encoder_of_a_model(processing, tmp_path):
    feedback, seen = QgsProcessingFeedback(), []
    feedback.progressChanged.connect(seen.append)
    folder = tmp_path / "run"
    result = processing.run(PRETRAIN, {"INPUT": [QgsRasterLayer(str(TUTORIAL_STACK), "scene")], "STEPS": 3,
                                       "OUTPUT": str(folder), **SHORT}, feedback=feedback)
    assert result == {"OUTPUT": str(folder), "CHECKPOINT": str(folder / "last.ckpt")}
    assert [round(v * 3 / 100) for v in seen if v > 0] == [1, 2, 3]
    assert {"last.ckpt", "config.yaml", "band_stats.json", "metrics.csv"} <= {p.name for p in folder.iterdir()}
    model = tmp_path / "m.safetensors"
    processing.run("geosscl:train_model", {"INPUT": str(TUTORIAL_STACK), "LABELS": str(TUTORIAL_POLYGONS),
                                           "CLASS_FIELD": "class", "INIT": result["CHECKPOINT"], "OUTPUT": str(model)})
    info = json.loads(geosscl("info", str(model)).stdout)
    assert info["provenance"]["init"] == str(folder / "last.ckpt") and info["encoder"] == "resnet18"


def test_cancel_keeps_the_last_checkpoint(processing, tmp_path):
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda value: value > 0 and feedback.cancel())
    folder = tmp_path / "run"
    with pytest.raises(QgsProcessingException, match=f"^cancelled: the run stopped at its last checkpoint, {folder}/last.ckpt; "
                                                       "it is a pretrained encoder for Train model from labels"):
        processing.run(PRETRAIN, {"INPUT": [str(TUTORIAL_STACK)], "STEPS": 500, "OUTPUT": str(folder), **SHORT},
                       feedback=feedback)
    made = geosscl("probe", str(TUTORIAL_STACK), "--labels", str(TUTORIAL_POLYGONS), "--class-column", "class",
                   "--init", str(folder / "last.ckpt"), "--val-fraction", "0", "--weight-decay", "0.001", "-q")
    assert made.returncode == 0, made.stderr


def test_errors(processing, in_project, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    with pytest.raises(QgsProcessingException, match="used: the run folder is not empty; choose a new or empty one$"):
        processing.run(PRETRAIN, {"INPUT": [str(TUTORIAL_STACK)], "OUTPUT": str(used), **SHORT})
    assert [p.name for p in used.iterdir()] == ["notes.txt"]
    layers = [in_project(QgsRasterLayer(str(TUTORIAL_STACK), "eight bands")),
              in_project(QgsRasterLayer(str(SCENE), "six bands"))]
    with pytest.raises(QgsProcessingException, match=(
            "^geosscl: layer 'six bands': has 6 band\\(s\\) where layer 'eight bands' has 8; every place of a "
            "mosaic needs the same bands$")):
        processing.run(PRETRAIN, {"INPUT": layers, "OUTPUT": str(tmp_path / "mixed"), **SHORT})
    assert not (tmp_path / "mixed").exists() or not list((tmp_path / "mixed").iterdir())
