"""The "Evaluate model on labels" algorithm in real QGIS (headless): the scores of geosscl evaluate, on polygons or
a class raster."""

from __future__ import annotations

import json

import pytest
from osgeo import gdal
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

from conftest import (ATLANTA, BUILDINGS, MODEL, SCENE, STRATA, TUTORIAL_2002, TUTORIAL_POLYGONS, TUTORIAL_STACK,
                      elsewhere, geosscl, refused_bf16)

EVALUATE = "geosscl:evaluate_model"


@pytest.fixture(scope="module")
def tutorial_model(tmp_path_factory):
    """A classifier of the tutorial's polygons, made on the command line."""
    model = tmp_path_factory.mktemp("models") / "tutorial.safetensors"
    made = geosscl("probe", str(TUTORIAL_STACK), "--labels", str(TUTORIAL_POLYGONS), "--class-column", "class",
                   "--weight-decay", "0.001", "--val-fraction", "0", "-o", str(model), "-q")
    assert made.returncode == 0, made.stderr
    return model


def cli_scores(tmp_path, *args):
    out = tmp_path / "cli.json"
    scored = geosscl("evaluate", *args, "--json", str(out), "-q")
    assert scored.returncode == 0, scored.stderr
    return json.loads(out.read_text())


def test_evaluate_algorithm_is_registered(provider):
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().algorithmById(EVALUATE)
    assert algorithm is not None and algorithm.displayName() == "Evaluate model on labels"
    assert {p.name() for p in algorithm.parameterDefinitions()} >= {
        "INPUT", "OTHER_DATES", "MODEL", "LABELS", "CLASS_FIELD", "LABEL_RASTER", "BACKGROUND_CLASS", "LABEL_AREA", "REGION", "HELD_OUT", "DEVICE",
        "BFLOAT16", "OUTPUT_JSON", "OUTPUT_CONFUSION"}
    assert {o.name() for o in algorithm.outputDefinitions()} >= {"MIOU", "OVERALL_ACCURACY", "KAPPA", "MEAN_F1"}


def test_bfloat16_runs_geosscl_evaluate_in_bf16(processing, tutorial_model, tmp_path):
    """BFLOAT16 is geosscl evaluate's ``--precision bf16``: its scores, or where the CPU has no bfloat16 arithmetic
    its refusal, with nothing written."""
    scores, cli = tmp_path / "qgis.json", tmp_path / "cli.json"
    made = geosscl("evaluate", str(tutorial_model), str(TUTORIAL_STACK), "--labels", str(TUTORIAL_POLYGONS),
                   "--class-column", "class", "--precision", "bf16", "--device", "cpu", "--json", str(cli), "-q")
    parameters = {"INPUT": str(TUTORIAL_STACK), "MODEL": str(tutorial_model), "CLASS_FIELD": "class",
                  "LABELS": str(TUTORIAL_POLYGONS), "BFLOAT16": True, "DEVICE": 1,
                  "OUTPUT_JSON": str(scores)}
    if refused_bf16(made, lambda: processing.run(EVALUATE, parameters)):
        assert not scores.exists()
        return
    assert made.returncode == 0, made.stderr
    assert processing.run(EVALUATE, parameters)["MIOU"] == json.loads(cli.read_text())["miou"]
    assert json.loads(scores.read_text()) == json.loads(cli.read_text())


def test_scores_are_geosscl_evaluates(processing, tutorial_model, tmp_path):
    feedback, seen = QgsProcessingFeedback(), []
    feedback.progressChanged.connect(seen.append)
    scores, confusion = tmp_path / "scores.json", tmp_path / "confusion.png"
    result = processing.run(EVALUATE, {"INPUT": str(TUTORIAL_STACK), "MODEL": str(tutorial_model),
                                       "LABELS": QgsVectorLayer(str(TUTORIAL_POLYGONS), "reference", "ogr"),
                                       "CLASS_FIELD": "class", "OUTPUT_JSON": str(scores),
                                       "OUTPUT_CONFUSION": str(confusion)}, feedback=feedback)
    want = cli_scores(tmp_path, str(tutorial_model), str(TUTORIAL_STACK), "--labels", str(TUTORIAL_POLYGONS),
                      "--class-column", "class")
    got = json.loads(scores.read_text())
    assert got == want
    assert sum(map(sum, got["confusion"])) == 718  # every labelled pixel of the polygons, once
    assert result["MIOU"] == want["miou"] > 0.9 and result["OVERALL_ACCURACY"] == want["overall_accuracy"]
    assert result["KAPPA"] == want["kappa"] and result["MEAN_F1"] == want["mean_f1"]
    assert result["OUTPUT_JSON"] == str(scores) and result["OUTPUT_CONFUSION"] == str(confusion)
    assert confusion.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen and max(seen) == 100
    assert "mIoU" in feedback.textLog() and "forest" in feedback.textLog()
    # The model learnt from these very labels (no validation blocks): the log warns, the JSON counts them,
    # and scoring only the labels it never met is refused, with nothing written.
    assert got["ground"] == {"trained": 718, "validated": 0, "held_out": 0}
    assert "100.0 % lie where the model was trained" in feedback.textLog()
    scores.unlink()
    with pytest.raises(QgsProcessingException, match="^geosscl: .*every label here lies where the model was trained or "
                                                      "validated; nothing is held out"):
        processing.run(EVALUATE, {"INPUT": str(TUTORIAL_STACK), "MODEL": str(tutorial_model), "HELD_OUT": True,
                                  "LABELS": str(TUTORIAL_POLYGONS), "CLASS_FIELD": "class", "OUTPUT_JSON": str(scores)})
    assert not scores.exists()


def test_without_a_class_field_the_model_s_is_read(processing, tutorial_model, tmp_path):
    """The model learnt from the polygons' field 'class' (it records it): CLASS_FIELD left empty scores what
    --class-column class does, the log saying which field was read. A layer without that field is refused in
    words that name the layer, its fields and the model's, with nothing written."""
    feedback, scores = QgsProcessingFeedback(), tmp_path / "scores.json"
    processing.run(EVALUATE, {"INPUT": str(TUTORIAL_STACK), "MODEL": str(tutorial_model),
                              "LABELS": str(TUTORIAL_POLYGONS), "OUTPUT_JSON": str(scores)}, feedback=feedback)
    assert json.loads(scores.read_text()) == cli_scores(tmp_path, str(tutorial_model), str(TUTORIAL_STACK),
                                                        "--labels", str(TUTORIAL_POLYGONS), "--class-column", "class")
    assert "classes read from its column 'class', the one the model's labels came from" in feedback.textLog()

    layer = QgsVectorLayer(str(TUTORIAL_POLYGONS), "source", "ogr").materialize(QgsFeatureRequest())
    layer.setName("digitised")
    layer.startEditing()
    assert layer.renameAttribute(layer.fields().indexOf("class"), "kind")
    assert layer.commitChanges()
    refused = tmp_path / "refused.json"
    with pytest.raises(QgsProcessingException, match="^geosscl: layer 'digitised': vector labels need --class-column,"
                                                      " .*the model's labels came from a column 'class'; the layer has"
                                                      " .*kind"):
        processing.run(EVALUATE, {"INPUT": str(TUTORIAL_STACK), "MODEL": str(tutorial_model), "LABELS": layer,
                                  "OUTPUT_JSON": str(refused)})
    assert not refused.exists()


def test_other_dates_of_the_input_are_each_scored_and_pooled(processing, in_project, tutorial_model, tmp_path):
    """The tutorial tile of 1999 with its 2002 layer: the command line's --every-date scores, each date in the log."""
    feedback, scores = QgsProcessingFeedback(), tmp_path / "scores.json"
    late = in_project(QgsRasterLayer(str(TUTORIAL_2002), "spring 2002"))
    result = processing.run(EVALUATE, {"INPUT": str(TUTORIAL_STACK), "OTHER_DATES": [late], "MODEL": str(tutorial_model),
                                       "LABELS": str(TUTORIAL_POLYGONS), "CLASS_FIELD": "class",
                                       "OUTPUT_JSON": str(scores)}, feedback=feedback)
    want = cli_scores(tmp_path, str(tutorial_model), str(TUTORIAL_STACK), str(TUTORIAL_2002), "--every-date",
                      "--labels", str(TUTORIAL_POLYGONS), "--class-column", "class")
    got = json.loads(scores.read_text())
    assert got == want and len(got["dates"]) == 2
    assert sum(map(sum, got["confusion"])) == 2 * 718  # each labelled pixel on both dates
    assert result["MIOU"] == got["miou"] != got["dates"][0]["miou"]
    lines = feedback.textLog().splitlines()  # a line per date, named after its layer, with its mIoU
    assert any(line.startswith("layer 'spring 2002'") and f"{100 * got['dates'][1]['miou']:.1f}" in line for line in lines)
    assert any(line.startswith("every date, pooled") and f"{100 * got['miou']:.1f}" in line for line in lines)
    away = elsewhere(tmp_path / "away.tif")
    refused = tmp_path / "refused.json"
    with pytest.raises(QgsProcessingException, match="^geosscl: Other dates: no two of the rasters cover the same ground"):
        processing.run(EVALUATE, {"INPUT": str(TUTORIAL_STACK), "OTHER_DATES": [in_project(QgsRasterLayer(str(away), "away"))],
                                  "MODEL": str(tutorial_model), "LABELS": str(TUTORIAL_POLYGONS), "CLASS_FIELD": "class",
                                  "OUTPUT_JSON": str(refused)})
    assert not refused.exists()


def test_scores_on_a_class_raster_in_a_test_region(processing, tmp_path):
    """The bundled land-use model on the NC scene's class raster (nodata -99999 not scored), in the test region."""
    region = STRATA.parent / "test_region.geojson"
    scores = tmp_path / "scores.json"
    result = processing.run(EVALUATE, {"INPUT": str(SCENE), "MODEL": str(MODEL),
                                       "LABEL_RASTER": QgsRasterLayer(str(STRATA), "land use"),
                                       "REGION": QgsVectorLayer(str(region), "test region", "ogr"),
                                       "OUTPUT_JSON": str(scores)})
    got = json.loads(scores.read_text())
    assert got == cli_scores(tmp_path, str(MODEL), str(SCENE), "--labels", str(STRATA), "--region", str(region))
    whole = cli_scores(tmp_path, str(MODEL), str(SCENE), "--labels", str(STRATA))
    assert 0 < sum(map(sum, got["confusion"])) < sum(map(sum, whole["confusion"]))
    assert result["MIOU"] == got["miou"] and result["OVERALL_ACCURACY"] == got["overall_accuracy"] > 0.5


def test_footprints_in_a_region_drawn_in_another_crs(processing, tmp_path):
    model = tmp_path / "buildings.safetensors"
    made = geosscl("probe", str(ATLANTA), "--labels", str(BUILDINGS), "--class-column", "class", "--background-class",
                   "background", "--class-weights", "auto", "--crop-size", "64", "--weight-decay", "0.001",
                   "--val-fraction", "0", "-o", str(model), "-q")
    assert made.returncode == 0, made.stderr
    tile = gdal.Open(str(ATLANTA))
    x0, dx, _, y0, _, dy = tile.GetGeoTransform()
    north = QgsGeometry.fromRect(QgsRectangle(x0, y0 + dy * tile.RasterYSize / 2, x0 + dx * tile.RasterXSize, y0))
    north.transform(QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32616"),
                                           QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance()))
    region = QgsVectorLayer("Polygon?crs=EPSG:4326", "north half", "memory")
    feature = QgsFeature()
    feature.setGeometry(north)
    assert region.dataProvider().addFeatures([feature])[0]
    region.updateExtents()
    result = processing.run(EVALUATE, {"INPUT": str(ATLANTA), "MODEL": str(model), "LABELS": str(BUILDINGS),
                                       "CLASS_FIELD": "class", "BACKGROUND_CLASS": "background", "REGION": region,
                                       "OUTPUT_JSON": str(tmp_path / "north.json")})
    got = json.loads((tmp_path / "north.json").read_text())
    assert sum(map(sum, got["confusion"])) == 900 * 450  # the north half, every pixel background or building
    whole = cli_scores(tmp_path, str(model), str(ATLANTA), "--labels", str(BUILDINGS), "--class-column", "class",
                       "--background-class", "background")
    assert sum(map(sum, whole["confusion"])) == 900 * 900
    assert result["MIOU"] == got["miou"] != whole["miou"]

    # The model's background class is taken unless refused: then only the polygons' pixels are scored.
    processing.run(EVALUATE, {"INPUT": str(ATLANTA), "MODEL": str(model), "LABELS": str(BUILDINGS),
                              "CLASS_FIELD": "class", "NO_BACKGROUND": True,
                              "OUTPUT_JSON": str(tmp_path / "polygons.json")})
    polygons = json.loads((tmp_path / "polygons.json").read_text())
    assert polygons == cli_scores(tmp_path, str(model), str(ATLANTA), "--labels", str(BUILDINGS),
                                  "--no-background-class")
    assert [sum(row) for row in polygons["confusion"]] == [0, sum(whole["confusion"][1])]
    with pytest.raises(QgsProcessingException, match="^Background class: 'background' given, and no background "
                                                     "class asked for; give one of them$"):
        processing.run(EVALUATE, {"INPUT": str(ATLANTA), "MODEL": str(model), "LABELS": str(BUILDINGS),
                                  "CLASS_FIELD": "class", "BACKGROUND_CLASS": "background", "NO_BACKGROUND": True,
                                  "OUTPUT_JSON": str(tmp_path / "refused.json")})


def test_errors_name_the_layer(processing, tutorial_model, tmp_path):
    def edited(name, change):
        layer = QgsVectorLayer(str(TUTORIAL_POLYGONS), "source", "ogr").materialize(QgsFeatureRequest())
        layer.setName(name)
        layer.startEditing()
        change(layer)
        assert layer.commitChanges()
        return layer

    def renamed(layer):
        first = next(layer.getFeatures())
        layer.changeAttributeValue(first.id(), layer.fields().indexOf("class"), "woodland")

    def moved(layer):
        for feature in layer.getFeatures():
            geometry = feature.geometry()
            geometry.translate(100_000, 0)
            layer.changeGeometry(feature.id(), geometry)

    def fails(message, **parameters):
        with pytest.raises(QgsProcessingException, match=message):
            processing.run(EVALUATE, {"INPUT": str(TUTORIAL_STACK), "MODEL": str(tutorial_model), "CLASS_FIELD": "class",
                                      **parameters})

    fails("geosscl: layer 'other names': class\\(es\\) woodland in column 'class' are not among the classes "
          "\\(barren, forest, herbaceous, urban, water\\)$", LABELS=edited("other names", renamed))
    fails("geosscl: layer 'elsewhere': labels do not overlap the imagery", LABELS=edited("elsewhere", moved))
    fails("model file .*missing.safetensors does not exist", MODEL=str(tmp_path / "missing.safetensors"),
          LABELS=str(TUTORIAL_POLYGONS))


def test_bands_in_another_order_are_refused_in_the_dialog_s_words(processing, tutorial_model, tmp_path):
    """The tutorial stack with its bands reversed (GDAL keeps their descriptions): Segment raster names its Bands
    parameter, Evaluate (which has none) GDAL's Rearrange bands; with the Bands set, the map is the stack's."""
    reversed_stack = tmp_path / "reversed.tif"
    gdal.Translate(str(reversed_stack), str(TUTORIAL_STACK), bandList=list(range(8, 0, -1)))
    assert gdal.Open(str(reversed_stack)).GetRasterBand(8).GetDescription() == "band 1 reflectance"
    order = "8,7,6,5,4,3,2,1"  # the last band, unnamed, found as the one unnamed band left
    with pytest.raises(QgsProcessingException, match=rf"reversed\.tif: the model's band 1 is 'band 1 reflectance', "
                                                     rf"which is band 8 here .*: set 'Bands fed to the model' to {order}$"):
        processing.run("geosscl:segment_raster", {"INPUT": str(reversed_stack), "MODEL": str(tutorial_model),
                                                  "OUTPUT": str(tmp_path / "refused.tif")})
    assert not (tmp_path / "refused.tif").exists()
    out = tmp_path / "classes.tif"
    processing.run("geosscl:segment_raster", {"INPUT": str(reversed_stack), "MODEL": str(tutorial_model),
                                              "BANDS": list(range(8, 0, -1)), "OUTPUT": str(out)})
    reference = tmp_path / "reference.tif"
    assert geosscl("predict", str(TUTORIAL_STACK), "-m", str(tutorial_model), "-o", str(reference), "-q").returncode == 0
    assert gdal.Open(str(out)).ReadAsArray().tolist() == gdal.Open(str(reference)).ReadAsArray().tolist()
    with pytest.raises(QgsProcessingException, match=rf"the model's band 1 is 'band 1 reflectance'.*: rearrange the "
                                                     rf"layer's bands as {order} first \(Processing Toolbox > GDAL > "
                                                     r"Raster conversion > Rearrange bands\)$"):
        processing.run(EVALUATE, {"INPUT": str(reversed_stack), "MODEL": str(tutorial_model),
                                  "LABELS": str(TUTORIAL_POLYGONS), "CLASS_FIELD": "class"})
