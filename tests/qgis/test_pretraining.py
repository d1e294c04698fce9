"""The "Pretrain encoder on unlabelled rasters" algorithm in real QGIS (headless): geosscl pretrain, its progress,
Cancel, and its checkpoint as the encoder of "Train model from labels"."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsRasterLayer

from conftest import SCENE, TUTORIAL_2002, TUTORIAL_POLYGONS, TUTORIAL_STACK, geosscl

PRETRAIN = "geosscl:pretrain"
#: A run of a few small steps on the CPU.
SHORT = {"CROP_SIZE": 64, "BATCH_SIZE": 4, "DEVICE": 1, "MINUTES": 5}


def test_pretrain_algorithm_is_registered(provider):
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().algorithmById(PRETRAIN)
    assert algorithm is not None and algorithm.displayName() == "Pretrain encoder on unlabelled rasters"
    assert {p.name() for p in algorithm.parameterDefinitions()} >= {
        "INPUT", "MINUTES", "STEPS", "CROP_SIZE", "BATCH_SIZE", "ACROSS_DATES", "MAX_NODATA", "DEVICE", "OUTPUT"}
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


def test_views_from_two_dates_of_a_place(processing, in_project, tmp_path):
    """The tutorial tile in 1999 and 2002, two layers of one place: an 8-band run whose pairs span both dates."""
    import yaml

    layers = [in_project(QgsRasterLayer(str(path), name)) for path, name in ((TUTORIAL_STACK, "1999"), (TUTORIAL_2002, "2002"))]
    folder = tmp_path / "run"
    processing.run(PRETRAIN, {"INPUT": layers, "STEPS": 2, "ACROSS_DATES": True, "MAX_NODATA": 0.25, "OUTPUT": str(folder),
                              **SHORT})
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["across_dates"] is True and config["max_nodata"] == 0.25
    assert json.loads((folder / "band_stats.json").read_text())["bands"] == list(range(1, 9))
    with pytest.raises(QgsProcessingException, match="^geosscl: Views of a pair from two dates: no two of the rasters "
                                                     "cover the same ground"):
        processing.run(PRETRAIN, {"INPUT": layers[:1], "STEPS": 2, "ACROSS_DATES": True,
                                  "OUTPUT": str(tmp_path / "alone"), **SHORT})
    assert not (tmp_path / "alone").exists() or not any((tmp_path / "alone").iterdir())


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


def test_continues_a_run_in_its_folder_with_its_settings(processing, tmp_path):
    folder = tmp_path / "run"
    processing.run(PRETRAIN, {"INPUT": [str(TUTORIAL_STACK)], "STEPS": 2, "OUTPUT": str(folder), **SHORT})
    last = folder / "last.ckpt"
    feedback, seen = QgsProcessingFeedback(), []
    feedback.progressChanged.connect(seen.append)
    # Another view side in the dialog: the run keeps its own (64), as it keeps its folder.
    result = processing.run(PRETRAIN, {"INPUT": [str(TUTORIAL_STACK)], **SHORT, "CROP_SIZE": 128, "STEPS": 4,
                                       "RESUME": str(last)}, feedback=feedback)
    assert result == {"OUTPUT": str(folder), "CHECKPOINT": str(last)}
    assert [round(v * 4 / 100) for v in seen if v > 0] == [3, 4]  # steps of the whole run
    with open(folder / "metrics.csv") as f:
        steps = {int(row["step"]) for row in csv.DictReader(f) if row.get("loss")}
    assert steps == {0, 1, 2, 3}
    assert "crop_size: 64" in (folder / "config.yaml").read_text()
    saved = last.read_bytes()
    with pytest.raises(QgsProcessingException, match=f"^geosscl: {last}: the run is at step 4 and Steps of training count "
                                                     "all of its steps; set more than 4$"):
        processing.run(PRETRAIN, {"INPUT": [str(TUTORIAL_STACK)], **SHORT, "STEPS": 4, "RESUME": str(last)})
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(QgsProcessingException, match=f"^Run folder: a continued run stays in its own folder, {folder}; "):
        processing.run(PRETRAIN, {"INPUT": [str(TUTORIAL_STACK)], **SHORT, "STEPS": 6, "RESUME": str(last),
                                  "OUTPUT": str(elsewhere)})
    assert last.read_bytes() == saved and not elsewhere.exists()


def test_a_run_continues_on_its_own_rasters_while_they_are_there(processing, tmp_path):
    """Continuing needed the rasters chosen again; without layers, the run's config.yaml names them."""
    stack = tmp_path / "stack.tif"
    shutil.copy(TUTORIAL_STACK, stack)
    folder = tmp_path / "run"
    processing.run(PRETRAIN, {"INPUT": [str(stack)], "STEPS": 2, "OUTPUT": str(folder), **SHORT})
    last = folder / "last.ckpt"
    result = processing.run(PRETRAIN, {**SHORT, "STEPS": 3, "RESUME": str(last)})  # no layers
    assert result == {"OUTPUT": str(folder), "CHECKPOINT": str(last)}
    with open(folder / "metrics.csv") as f:
        assert {int(row["step"]) for row in csv.DictReader(f) if row.get("loss")} == {0, 1, 2}
    saved = last.read_bytes()
    stack.unlink()
    with pytest.raises(QgsProcessingException, match=f"^Unlabelled rasters: the run's own are gone \\({stack}\\); "
                                                     "choose the rasters it was started on again$"):
        processing.run(PRETRAIN, {**SHORT, "STEPS": 4, "RESUME": str(last)})
    assert last.read_bytes() == saved
    with pytest.raises(QgsProcessingException, match="^Unlabelled rasters: choose at least one raster layer$"):
        processing.run(PRETRAIN, {**SHORT, "OUTPUT": str(tmp_path / "new")})
    assert not (tmp_path / "new").exists()


def test_errors(processing, in_project, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    with pytest.raises(QgsProcessingException, match="used: the run folder is not empty; choose a new or empty one, or give its last.ckpt as the run to continue$"):
        processing.run(PRETRAIN, {"INPUT": [str(TUTORIAL_STACK)], "OUTPUT": str(used), **SHORT})
    assert [p.name for p in used.iterdir()] == ["notes.txt"]
    layers = [in_project(QgsRasterLayer(str(TUTORIAL_STACK), "eight bands")),
              in_project(QgsRasterLayer(str(SCENE), "six bands"))]
    with pytest.raises(QgsProcessingException, match=(
            "^geosscl: layer 'six bands': has 6 band\\(s\\) where layer 'eight bands' has 8; every place of a "
            "mosaic needs the same bands$")):
        processing.run(PRETRAIN, {"INPUT": layers, "OUTPUT": str(tmp_path / "mixed"), **SHORT})
    assert not (tmp_path / "mixed").exists() or not list((tmp_path / "mixed").iterdir())
