"""The geosscl Processing provider in real QGIS (headless): same output as geosscl predict, styling, cancel, errors."""

from __future__ import annotations

import gc
import json
import os

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProject,
    QgsRasterLayer,
    QgsRasterRange,
)

from conftest import MODEL, NAIP, SCENE, STRATA, geosscl, geosscl_predict, refused_bf16


ALG = "geosscl:segment_raster"


def read(path):
    dataset = gdal.Open(str(path))
    assert dataset is not None, path
    return dataset.GetRasterBand(1).ReadAsArray(), dataset.GetGeoTransform(), dataset.GetProjection()


def test_algorithm_is_registered_headless(provider):
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().algorithmById(ALG)
    assert algorithm is not None and algorithm.displayName() == "Segment raster"
    names = {p.name() for p in algorithm.parameterDefinitions()}
    assert names >= {"INPUT", "MODEL", "BANDS", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "DEVICE", "BFLOAT16", "OUTPUT",
                     "OUTPUT_PROBABILITIES", "OUTPUT_POLYGONS"}
    # The dialogs offer the formats geosscl writes, and nothing else.
    for name in ("OUTPUT", "OUTPUT_PROBABILITIES"):
        output = algorithm.parameterDefinition(name)
        assert output.defaultFileExtension() == "tif" and output.supportedOutputRasterLayerExtensions() == ["tif"]
    polygons = algorithm.parameterDefinition("OUTPUT_POLYGONS")
    assert polygons.defaultFileExtension() == "gpkg" and polygons.supportedOutputVectorLayerExtensions() == ["gpkg"]


def test_output_equals_geosscl_predict(processing, tmp_path):
    layer = QgsRasterLayer(str(SCENE), "nc")
    assert layer.isValid()
    out = tmp_path / "qgis.tif"
    polygons = tmp_path / "classes.gpkg"
    result = processing.run(ALG, {"INPUT": layer, "MODEL": str(MODEL), "OUTPUT": str(out),
                                  "OUTPUT_POLYGONS": str(polygons)})
    assert result["OUTPUT"] == str(out) and result["OUTPUT_POLYGONS"] == str(polygons)
    reference = tmp_path / "cli.tif"
    cli = geosscl_predict(str(SCENE), "-m", str(MODEL), "-o", str(reference), "-q")
    assert cli.returncode == 0, cli.stderr
    got, want = read(out), read(reference)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1] and got[2] == want[2]
    assert got[1] == gdal.Open(str(SCENE)).GetGeoTransform()
    assert len(np.unique(got[0])) >= 3
    assert polygons.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.gpkg", "cli.tif", "qgis.tif"]


def test_bfloat16_runs_geosscl_predict_in_bf16(processing, tmp_path):
    out, reference, float32 = tmp_path / "qgis.tif", tmp_path / "cli.tif", tmp_path / "float32.tif"
    parameters = {"INPUT": str(SCENE), "MODEL": str(MODEL), "BFLOAT16": True, "DEVICE": 1, "OUTPUT": str(out)}
    cli = geosscl_predict(str(SCENE), "-m", str(MODEL), "-o", str(reference), "--precision", "bf16", "--device",
                          "cpu", "-q")
    if refused_bf16(cli, lambda: processing.run(ALG, parameters)):
        assert not out.exists()
        return
    assert cli.returncode == 0, cli.stderr
    assert processing.run(ALG, parameters)["OUTPUT"] == str(out)
    cli = geosscl_predict(str(SCENE), "-m", str(MODEL), "-o", str(float32), "--device", "cpu", "-q")
    assert cli.returncode == 0, cli.stderr
    got, want, plain = read(out)[0], read(reference)[0], read(float32)[0]
    np.testing.assert_array_equal(got, want)
    assert (got != plain).any() and (got == plain).mean() > 0.99  # bfloat16, not the float32 run


@pytest.mark.parametrize("run", ["first", "second"])
def test_output_layer_is_paletted_with_class_names(processing, tmp_path, run):
    """Every run styles its output: QGIS deletes a run's post-processor with the run's context (a single shared one
    was gone after the first run, and the second failed), so each run in a session, here a test, needs its own."""
    out = tmp_path / "styled.tif"
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    context.setProject(QgsProject.instance())
    definition = QgsProcessingOutputLayerDefinition(str(out), QgsProject.instance())
    processing.run(ALG, {"INPUT": str(SCENE), "MODEL": str(MODEL), "OUTPUT": definition}, context=context,
                   feedback=feedback)
    gc.collect()  # nothing but the context may keep the post-processor
    details = context.layerToLoadOnCompletionDetails(str(out))
    assert details.postProcessor() is not None  # set when the result is loaded into a project
    layer = QgsRasterLayer(str(out), "classes")
    details.postProcessor().postProcessLayer(layer, context, feedback)
    renderer = layer.renderer()
    assert renderer.type() == "paletted"
    labels = {c.value: c.label for c in renderer.classes()}
    assert labels[1] == "developed" and labels[5] == "forest" and labels[6] == "water"
    colour = {c.value: c.color for c in renderer.classes()}[1]
    assert (colour.red(), colour.green(), colour.blue()) == (230, 25, 75)
    del details, context
    gc.collect()


def test_cancel_stops_geosscl_and_leaves_no_file(processing, tmp_path):
    source = gdal.Open(str(SCENE))
    big = tmp_path / "big.tif"
    # A bigger real scene: the NC bands tiled 3 × 3.
    data = np.tile(source.ReadAsArray(), (1, 3, 3))
    target = gdal.GetDriverByName("GTiff").Create(str(big), data.shape[2], data.shape[1], data.shape[0], gdal.GDT_Float32)
    target.SetGeoTransform(source.GetGeoTransform())
    target.SetProjection(source.GetProjection())
    for i in range(data.shape[0]):
        target.GetRasterBand(i + 1).WriteArray(data[i])
        target.GetRasterBand(i + 1).SetNoDataValue(-99999)
    target = None
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    feedback = QgsProcessingFeedback()
    seen = []

    def cancel_on_progress(value):
        seen.append(value)
        if value > 0:
            feedback.cancel()

    feedback.progressChanged.connect(cancel_on_progress)
    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run(ALG, {"INPUT": str(big), "MODEL": str(MODEL), "OUTPUT": str(out_dir / "c.tif"),
                             "TILE_SIZE": 64, "OVERLAP": 16}, feedback=feedback)
    assert seen and 0 < max(seen) < 100
    assert list(out_dir.iterdir()) == []


def test_clear_errors(processing, tmp_path, monkeypatch):
    out = tmp_path / "o.tif"

    def fails(message, **parameters):
        with pytest.raises(QgsProcessingException, match=message):
            processing.run(ALG, {"INPUT": str(SCENE), "MODEL": str(MODEL), "OUTPUT": str(out), **parameters})
        assert not out.exists()

    fails("model file .*missing.safetensors does not exist", MODEL=str(tmp_path / "missing.safetensors"))
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_text("not a model")
    fails("geosscl: .*bogus.safetensors: not a geosscl model file", MODEL=str(bogus))
    fails("geosscl: .*has 4 band\\(s\\); the model reads bands 1,2,3,4,5,6", INPUT=str(NAIP))
    fails("--bidx picks 2 band\\(s\\); the model takes 6", BANDS=[1, 2])
    no_crs = tmp_path / "nocrs.tif"
    gdal.GetDriverByName("GTiff").Create(str(no_crs), 64, 64, 6, gdal.GDT_Float32).FlushCache()
    fails("has no CRS", INPUT=str(no_crs))
    fails("geosscl: .*o.img: the class map is a Cloud-Optimised GeoTIFF; name it .tif", OUTPUT=str(tmp_path / "o.img"))
    assert not (tmp_path / "o.img").exists()
    executable = os.environ["GEOSSCL_EXECUTABLE"]
    monkeypatch.setenv("GEOSSCL_EXECUTABLE", str(tmp_path / "nowhere" / "geosscl"))
    fails("geosscl: geosscl executable .*nowhere/geosscl \\(from the GEOSSCL_EXECUTABLE\\) does not exist")
    monkeypatch.delenv("GEOSSCL_EXECUTABLE")
    monkeypatch.setenv("PATH", str(tmp_path))
    fails("geosscl: geosscl not found: install it")
    # The provider's Processing setting comes first.
    from processing.core.ProcessingConfig import ProcessingConfig

    from geosscl_processing.runner import EXECUTABLE_SETTING

    not_a_program = tmp_path / "geosscl.txt"
    not_a_program.write_text("")
    ProcessingConfig.setSettingValue(EXECUTABLE_SETTING, str(not_a_program))
    try:
        fails("geosscl executable .*geosscl.txt \\(from the Processing setting\\) does not exist or cannot be run")
        ProcessingConfig.setSettingValue(EXECUTABLE_SETTING, executable)
        processing.run(ALG, {"INPUT": str(SCENE), "MODEL": str(MODEL), "OUTPUT": str(out)})  # no PATH, no variable
        assert out.exists()
    finally:
        ProcessingConfig.setSettingValue(EXECUTABLE_SETTING, "")


def test_layer_that_is_not_a_plain_raster_file(processing, tmp_path):
    envi = tmp_path / "scene.dat"
    gdal.Translate(str(envi), str(SCENE), format="ENVI")
    layer = QgsRasterLayer(str(envi), "envi")
    assert layer.isValid()
    out = tmp_path / "from_envi.tif"
    processing.run(ALG, {"INPUT": layer, "MODEL": str(MODEL), "OUTPUT": str(out)})
    # The reference reads the ENVI file itself (ENVI holds one nodata value for all bands,
    # so its pixels are not exactly the VRT's): the GeoTIFF copy must not change a thing.
    reference = tmp_path / "cli.tif"
    cli = geosscl_predict(str(envi), "-m", str(MODEL), "-o", str(reference), "-q")
    assert cli.returncode == 0, cli.stderr
    np.testing.assert_array_equal(read(out)[0], read(reference)[0])
    assert read(out)[1] == read(reference)[1]


def collared(path):
    """The NC scene as one GeoTIFF, its western 60 columns zeroed (a collar outside the image) and no nodata declared."""
    source = gdal.Open(str(SCENE))
    data = source.ReadAsArray()
    data[:, :, :60] = 0
    target = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[2], data.shape[1], data.shape[0],
                                                  gdal.GDT_Float32)
    target.SetGeoTransform(source.GetGeoTransform())
    target.SetProjection(source.GetProjection())
    for i in range(data.shape[0]):
        target.GetRasterBand(i + 1).WriteArray(data[i])
    target = None
    return path


def test_additional_no_data_value_of_the_layer_is_geosscl_nodata(processing, in_project, tmp_path):
    """A collar the file does not declare, which the QGIS user has made transparent: the map leaves it out, as
    `geosscl predict --nodata` does, and a model trained from the layer keeps it out with no setting."""
    scene = collared(tmp_path / "collar.tif")
    layer = in_project(QgsRasterLayer(str(scene), "collared scene"))
    plain = tmp_path / "plain.tif"
    processing.run(ALG, {"INPUT": layer, "MODEL": str(MODEL), "OUTPUT": str(plain)})
    assert (read(plain)[0][:, :60] != 255).all()  # nothing set: the collar is classified as ground

    for band in range(1, layer.bandCount() + 1):  # what Layer Properties > Transparency does
        layer.dataProvider().setUserNoDataValue(band, [QgsRasterRange(0, 0)])
    out, feedback = tmp_path / "qgis.tif", QgsProcessingFeedback()
    processing.run(ALG, {"INPUT": layer, "MODEL": str(MODEL), "OUTPUT": str(out)}, feedback=feedback)
    assert "--nodata 0.0" in feedback.textLog()
    reference = tmp_path / "cli.tif"
    cli = geosscl_predict(str(scene), "-m", str(MODEL), "-o", str(reference), "--nodata", "0", "-q")
    assert cli.returncode == 0, cli.stderr
    got = read(out)[0]
    np.testing.assert_array_equal(got, read(reference)[0])
    assert (got[:, :60] == 255).all() and (got[:, 60:] != 255).all()

    # A model trained from the layer keeps its no-data value: geosscl's map of it, no option given, leaves the collar out.
    model, class_map = tmp_path / "collar.safetensors", tmp_path / "collar_map.tif"
    feedback = QgsProcessingFeedback()
    processing.run("geosscl:train_model", {"INPUT": layer, "LABEL_RASTER": str(STRATA), "CROP_SIZE": 64,
                                           "OUTPUT": str(model), "CLASS_MAP": str(class_map)}, feedback=feedback)
    assert "--nodata 0.0" in feedback.textLog()
    mapped = read(class_map)[0]
    assert (mapped[:, :60] == 255).all() and (mapped[:, 60:] != 255).all()
    again = tmp_path / "again.tif"
    assert geosscl_predict(str(scene), "-m", str(model), "-o", str(again), "-q").returncode == 0
    np.testing.assert_array_equal(read(again)[0], mapped)

    # Scored as geosscl evaluate --nodata scores it: the collar's pixels are not counted.
    scores = tmp_path / "scores.json"
    processing.run("geosscl:evaluate_model", {"INPUT": layer, "MODEL": str(MODEL), "LABEL_RASTER": str(STRATA),
                                              "OUTPUT_JSON": str(scores)})
    counted = {}
    for name, nodata in (("cli", ["--nodata", "0"]), ("all", [])):
        counted[name] = tmp_path / f"{name}.json"
        cli = geosscl("evaluate", str(MODEL), str(scene), "--labels", str(STRATA), *nodata, "--json", str(counted[name]),
                      "-q")
        assert cli.returncode == 0, cli.stderr
    got, want, whole = (json.loads(p.read_text()) for p in (scores, counted["cli"], counted["all"]))
    assert got == want and sum(map(sum, got["confusion"])) < sum(map(sum, whole["confusion"]))

    # A pretraining run on the layer keeps it as its no-data value.
    run = tmp_path / "run"
    processing.run("geosscl:pretrain", {"INPUT": [layer], "STEPS": 1, "CROP_SIZE": 64, "BATCH_SIZE": 4, "DEVICE": 1,
                                        "MINUTES": 5, "OUTPUT": str(run)})
    assert "nodata: 0.0" in (run / "config.yaml").read_text().splitlines()


def test_additional_no_data_value_besides_the_file_s_own_is_refused(processing, in_project, tmp_path):
    """geosscl masks one value per band: the NC bands declare -99999 and -32768 (shown transparent by QGIS too), so a
    further 0 cannot be passed on without reading those values as ground; the user is told what to untick."""
    layer = in_project(QgsRasterLayer(str(SCENE), "nc"))
    for band in range(1, layer.bandCount() + 1):
        layer.dataProvider().setUserNoDataValue(band, [QgsRasterRange(0, 0)])
    out = tmp_path / "o.tif"
    with pytest.raises(QgsProcessingException, match=(
            r"^nc: band 1 has its file's no-data value -99999 and the additional 0; geosscl takes one no-data value per "
            r"band: untick the file's 'No data value' \(Layer Properties > Transparency\) to use 0 alone")):
        processing.run(ALG, {"INPUT": layer, "MODEL": str(MODEL), "OUTPUT": str(out)})
    assert not out.exists()
    # Unticked: 0 alone is the no-data value, as asked.
    for band in range(1, layer.bandCount() + 1):
        layer.dataProvider().setUseSourceNoDataValue(band, False)
    feedback = QgsProcessingFeedback()
    processing.run(ALG, {"INPUT": layer, "MODEL": str(MODEL), "OUTPUT": str(out)}, feedback=feedback)
    assert "--nodata 0.0" in feedback.textLog() and out.exists()
    # A range of values cannot be handed on as one value.
    layer.dataProvider().setUserNoDataValue(1, [QgsRasterRange(0, 10)])
    with pytest.raises(QgsProcessingException, match=r"^nc: additional no-data values 0-10; geosscl takes one"):
        processing.run(ALG, {"INPUT": layer, "MODEL": str(MODEL), "OUTPUT": str(tmp_path / "p.tif")})
    assert not (tmp_path / "p.tif").exists()
