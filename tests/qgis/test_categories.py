"""Class names through GDAL itself, both ways: category names GDAL wrote name a model's classes, and the class
maps geosscl writes open in plain QGIS (no plugin styling) with the model's class names."""

from __future__ import annotations

import json
import shutil

import pytest
from osgeo import gdal
from qgis.core import QgsPalettedRasterRenderer, QgsRasterLayer

from conftest import TUTORIAL_STACK, geosscl

LABELS = TUTORIAL_STACK.parent / "training_data.gtif"  # ids 1-5, nodata 0
NAMES = ["forêt", "water", "herbaceous", "barren", "urban"]


@pytest.fixture
def pam(monkeypatch, tmp_path):
    """GDAL's PAM sidecars on, in QGIS and in the geosscl it runs, and the imagery copied to ``tmp_path`` (the
    suite turns them off so that QGIS leaves no statistics beside the bundled rasters): the copy's path."""
    stack = tmp_path / TUTORIAL_STACK.name
    shutil.copy(TUTORIAL_STACK, stack)
    monkeypatch.setenv("GDAL_PAM_ENABLED", "YES")
    gdal.SetConfigOption("GDAL_PAM_ENABLED", "YES")
    yield str(stack)
    gdal.SetConfigOption("GDAL_PAM_ENABLED", None)


def test_names_gdal_gave_the_labels_name_the_model_and_its_class_map_in_qgis(pam, tmp_path):
    labels = tmp_path / "labels.tif"
    shutil.copy(LABELS, labels)
    dataset = gdal.Open(str(labels), gdal.GA_Update)
    dataset.GetRasterBand(1).SetCategoryNames(["", *NAMES])
    dataset = None  # GDAL writes the sidecar on closing
    assert (tmp_path / "labels.tif.aux.xml").exists()

    model = tmp_path / "model.safetensors"
    run = geosscl("finetune", pam, "--labels", str(labels), "--out", str(model), "--crop-size", "64",
                  "--batch-size", "4", "--max-steps", "2", "--num-workers", "0", "-q")
    assert run.returncode == 0, run.stderr[-2000:]
    info = geosscl("info", str(model))
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["class_names"] == NAMES and json.loads(info.stdout)["class_values"] == [1, 2, 3, 4, 5]

    out = tmp_path / "classes.tif"
    run = geosscl("predict", pam, "-m", str(model), "-o", str(out), "-q")
    assert run.returncode == 0, run.stderr[-2000:]
    assert gdal.Info(str(out), format="json")["bands"][0]["categories"] == ["", *NAMES]  # as gdalinfo lists them
    layer = QgsRasterLayer(str(out), "classes")  # QGIS's own default rendering, not the plugin's
    assert layer.isValid()
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    labels = {int(c.value): c.label for c in renderer.classes()}
    assert [labels[value] for value in range(1, 6)] == NAMES


def test_a_raster_attribute_table_gdal_wrote_names_the_model_also_from_the_toolbox(pam, processing, tmp_path):
    """A class raster with a colour table and a RAT (as ArcGIS and GDAL tools make them): QGIS 3.22 shows its
    palette labelled by value, not the table's names; *Train model from labels* leaves the names to geosscl,
    which reads the table, as the command line does."""
    labels = tmp_path / "labels.tif"
    shutil.copy(LABELS, labels)
    table = gdal.RasterAttributeTable()
    table.CreateColumn("Value", gdal.GFT_Integer, gdal.GFU_MinMax)
    table.CreateColumn("Class_Name", gdal.GFT_String, gdal.GFU_Name)
    for row, value in enumerate([5, 3, 1, 4, 2]):
        table.SetValueAsInt(row, 0, value)
        table.SetValueAsString(row, 1, NAMES[value - 1])
    colours = gdal.ColorTable()
    for value in range(6):
        colours.SetColorEntry(value, (40 * value, 255 - 40 * value, 90, 255))
    dataset = gdal.Open(str(labels), gdal.GA_Update)
    dataset.GetRasterBand(1).SetDefaultRAT(table)
    dataset.GetRasterBand(1).SetColorTable(colours)
    dataset = None
    model = tmp_path / "model.safetensors"
    run = geosscl("finetune", pam, "--labels", str(labels), "--out", str(model), "--crop-size", "64",
                  "--batch-size", "4", "--max-steps", "2", "--num-workers", "0", "-q")
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(geosscl("info", str(model)).stdout)["class_names"] == NAMES

    layer = QgsRasterLayer(str(labels), "labels")
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    assert [c.label for c in layer.renderer().classes()[:3]] == ["0", "1", "2"]
    from_qgis = tmp_path / "qgis.safetensors"
    processing.run("geosscl:train_model", {"INPUT": pam, "LABEL_RASTER": layer, "CROP_SIZE": 64,
                                           "OUTPUT": str(from_qgis)})
    info = json.loads(geosscl("info", str(from_qgis)).stdout)
    assert info["class_names"] == NAMES and info["class_values"] == [1, 2, 3, 4, 5]
    assert info["class_colors"] == [[40 * v, 255 - 40 * v, 90] for v in range(1, 6)]
