"""The "Train model from labels" algorithm in real QGIS (headless).

Its models must be the models the command line makes from the same files, from layers
that are not plain files too (a memory layer, as someone digitising has; an ENVI class
raster), with what the QGIS layer says of its labels (a paletted style's class names and
colours, an additional no-data value); it reports progress, can be cancelled, and names
the layer in geosscl's errors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from osgeo import gdal, ogr
from qgis.core import (
    QgsFeatureRequest,
    QgsGeometry,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProject,
    QgsRasterLayer,
    QgsRasterRange,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from conftest import (
    ATLANTA,
    BUILDINGS,
    FLOODS_LABELS,
    FLOODS_S2,
    SCENE,
    STRATA,
    TUTORIAL_2002,
    TUTORIAL_POLYGONS,
    TUTORIAL_STACK,
    elsewhere,
    geosscl,
    geosscl_predict,
)

TRAIN = "geosscl:train_model"
#: What the algorithm's classifier is, as command-line options (README: with few labels, every label trains).
CLASSIFIER = ("--stages", "1", "--weight-decay", "0.001", "--val-fraction", "0")


def read(path):
    """Band 1 of ``path`` and its class names (None for a file without)."""
    dataset = gdal.Open(str(path))
    assert dataset is not None, path
    names = dataset.GetMetadataItem("class_names")
    return dataset.GetRasterBand(1).ReadAsArray(), json.loads(names) if names else None


def digitised(path, name="digitised"):
    """The polygons of ``path`` in a memory layer: what a layer being digitised in QGIS is."""
    layer = QgsVectorLayer(str(path), "source", "ogr")
    assert layer.isValid()
    memory = layer.materialize(QgsFeatureRequest())
    memory.setName(name)
    assert memory.providerType() == "memory" and memory.featureCount() == layer.featureCount()
    return memory


def polygon_classes(path, like):
    """The class name of every pixel inside a polygon of ``path`` on the grid of raster ``like`` (None elsewhere)."""
    grid = gdal.Open(str(like))
    source = ogr.Open(str(path))  # kept: its layer dies with it
    names = sorted({f.GetField("class") for f in source.GetLayer()})
    target = gdal.GetDriverByName("MEM").Create("", grid.RasterXSize, grid.RasterYSize, 1, gdal.GDT_Int16)
    target.SetGeoTransform(grid.GetGeoTransform())
    target.SetProjection(grid.GetProjection())
    target.GetRasterBand(1).Fill(-1)
    for value, name in enumerate(names):
        gdal.Rasterize(target, str(path), burnValues=[value], where=f"class = '{name}'")
    ids = target.GetRasterBand(1).ReadAsArray()
    return np.where(ids >= 0, np.array(names, dtype=object)[ids], None)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A (very short) geosscl pretraining run on the tutorial stack."""
    run = tmp_path_factory.mktemp("pretrain") / "run"
    made = geosscl("pretrain", str(TUTORIAL_STACK), "--out", str(run), "--crop-size", "64", "--batch-size", "4",
                   "--max-steps", "3", "--num-workers", "0", "-q")
    assert made.returncode == 0, made.stderr
    return run / "last.ckpt"


def test_train_algorithm_is_registered(provider):
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().algorithmById(TRAIN)
    assert algorithm is not None and algorithm.displayName() == "Train model from labels"
    assert {p.name() for p in algorithm.parameterDefinitions()} >= {
        "INPUT", "OTHER_DATES", "LABELS", "CLASS_FIELD", "LABEL_RASTER", "BACKGROUND_CLASS", "LABEL_AREA", "INIT", "METHOD", "STEPS", "CROP_SIZE",
        "BALANCE", "DEVICE", "OUTPUT", "CLASS_MAP"}


def test_classifier_from_digitised_polygons_is_the_command_lines(processing, checkpoint, tmp_path):
    model, classes = tmp_path / "qgis.safetensors", tmp_path / "qgis.tif"
    result = processing.run(TRAIN, {"INPUT": str(TUTORIAL_STACK), "LABELS": digitised(TUTORIAL_POLYGONS),
                                    "CLASS_FIELD": "class", "INIT": str(checkpoint), "OUTPUT": str(model),
                                    "CLASS_MAP": str(classes)})
    assert result == {"OUTPUT": str(model), "CLASS_MAP": str(classes)}
    reference, reference_map = tmp_path / "cli.safetensors", tmp_path / "cli.tif"
    made = geosscl("probe", str(TUTORIAL_STACK), "--labels", str(TUTORIAL_POLYGONS), "--class-column", "class",
                   "--init", str(checkpoint), "--crop-size", "128", *CLASSIFIER, "-o", str(reference), "-q")
    assert made.returncode == 0, made.stderr
    assert geosscl_predict(str(TUTORIAL_STACK), "-m", str(reference), "-o", str(reference_map), "-q").returncode == 0
    (got, names), (want, want_names) = read(classes), read(reference_map)
    np.testing.assert_array_equal(got, want)
    assert names == want_names == ["barren", "forest", "herbaceous", "urban", "water"]
    # The map says what the polygons say, where they are (the classifier fits its 718 labelled pixels).
    truth = polygon_classes(TUTORIAL_POLYGONS, TUTORIAL_STACK)
    labelled = truth != None  # noqa: E711 (an object array)
    assert 700 <= labelled.sum() <= 740
    agree = np.array(names, dtype=object)[got[labelled]] == truth[labelled]
    assert agree.mean() > 0.95
    assert len(np.unique(got)) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.safetensors", "cli.tif", "qgis.safetensors", "qgis.tif"]

    # Without a class field from a pretraining checkpoint: refused, it knows no labels (from a model, below).
    again = tmp_path / "again.safetensors"
    with pytest.raises(QgsProcessingException, match="^Class field: choose the field of the polygons"):
        processing.run(TRAIN, {"INPUT": str(TUTORIAL_STACK), "LABELS": str(TUTORIAL_POLYGONS), "INIT": str(checkpoint),
                               "OUTPUT": str(again)})
    assert not again.exists()


def test_other_dates_of_the_input_train_on_every_date(processing, in_project, tmp_path):
    """The tutorial tile of 1999 with its 2002 layer as another date: the command line's --every-date classifier."""
    late = in_project(QgsRasterLayer(str(TUTORIAL_2002), "2002"))
    model, classes = tmp_path / "qgis.safetensors", tmp_path / "qgis.tif"
    processing.run(TRAIN, {"INPUT": str(TUTORIAL_STACK), "OTHER_DATES": [late], "LABELS": str(TUTORIAL_POLYGONS),
                           "CLASS_FIELD": "class", "OUTPUT": str(model), "CLASS_MAP": str(classes)})
    info = json.loads(geosscl("info", str(model)).stdout)
    assert info["provenance"]["every_date"] is True
    assert sorted(info["provenance"]["imagery"]) == sorted([str(TUTORIAL_STACK), str(TUTORIAL_2002)])
    reference, reference_map = tmp_path / "cli.safetensors", tmp_path / "cli.tif"
    made = geosscl("probe", str(TUTORIAL_STACK), str(TUTORIAL_2002), "--every-date", "--labels", str(TUTORIAL_POLYGONS),
                   "--class-column", "class", "--crop-size", "128", *CLASSIFIER, "-o", str(reference), "-q")
    assert made.returncode == 0, made.stderr
    assert geosscl_predict(str(TUTORIAL_STACK), "-m", str(reference), "-o", str(reference_map), "-q").returncode == 0
    np.testing.assert_array_equal(read(classes)[0], read(reference_map)[0])  # the map is of the input raster
    # A raster of another place is no other date: refused in the dialog's words, no model written.
    away = elsewhere(tmp_path / "away.tif")
    with pytest.raises(QgsProcessingException, match="^geosscl: Other dates: no two of the rasters cover the same ground"):
        processing.run(TRAIN, {"INPUT": str(TUTORIAL_STACK), "OTHER_DATES": [in_project(QgsRasterLayer(str(away), "away"))],
                               "LABELS": str(TUTORIAL_POLYGONS), "CLASS_FIELD": "class",
                               "OUTPUT": str(tmp_path / "refused.safetensors")})
    assert not (tmp_path / "refused.safetensors").exists()


def test_footprints_with_background_label_area_and_weights(processing, tmp_path):
    """Building footprints: background outside them, labels complete only in an area drawn in another CRS, and the
    rare class weighed up: the same model as the command line's from the same files."""
    tile = gdal.Open(str(ATLANTA))
    x0, dx, _, y0, _, dy = tile.GetGeoTransform()
    west = ogr.CreateGeometryFromWkt(QgsGeometry.fromRect(QgsRectangle(
        x0, y0 + dy * tile.RasterYSize, x0 + dx * tile.RasterXSize / 2, y0)).asWkt())
    utm, wgs84 = ogr.osr.SpatialReference(), ogr.osr.SpatialReference()
    utm.ImportFromEPSG(32616)
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(ogr.osr.OAMS_TRADITIONAL_GIS_ORDER)
    utm.SetAxisMappingStrategy(ogr.osr.OAMS_TRADITIONAL_GIS_ORDER)
    west.Transform(ogr.osr.CoordinateTransformation(utm, wgs84))
    area_file = tmp_path / "west.geojson"
    source = ogr.GetDriverByName("GeoJSON").CreateDataSource(str(area_file))
    layer = source.CreateLayer("west", wgs84, ogr.wkbPolygon)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(west)
    layer.CreateFeature(feature)
    source = layer = feature = None
    area = QgsVectorLayer(str(area_file), "west half", "ogr")
    assert area.isValid() and area.crs().authid() == "EPSG:4326"

    model, classes = tmp_path / "qgis.safetensors", tmp_path / "qgis.tif"
    processing.run(TRAIN, {"INPUT": str(ATLANTA), "LABELS": str(BUILDINGS), "CLASS_FIELD": "class",
                           "BACKGROUND_CLASS": "background", "LABEL_AREA": area, "BALANCE": True, "CROP_SIZE": 64,
                           "OUTPUT": str(model), "CLASS_MAP": str(classes)})
    info = json.loads(geosscl("info", str(model)).stdout)
    assert info["class_names"] == ["background", "building"]
    weights = info["provenance"]["class_weights"]
    assert weights[1] > 5 * weights[0]  # buildings are a few % of the pixels
    reference, reference_map = tmp_path / "cli.safetensors", tmp_path / "cli.tif"
    made = geosscl("probe", str(ATLANTA), "--labels", str(BUILDINGS), "--class-column", "class", "--background-class",
                   "background", "--label-area", str(area_file), "--class-weights", "auto", "--crop-size", "64",
                   *CLASSIFIER, "-o", str(reference), "-q")
    assert made.returncode == 0, made.stderr
    assert json.loads(geosscl("info", str(reference)).stdout)["provenance"]["class_weights"] == weights
    assert geosscl_predict(str(ATLANTA), "-m", str(reference), "-o", str(reference_map), "-q").returncode == 0
    got, want = read(classes)[0], read(reference_map)[0]
    np.testing.assert_array_equal(got, want)
    assert 0.01 < (got == 1).mean() < 0.5  # it finds buildings, weighted; unweighted, a band classifier finds none


def test_fine_tuning_reports_progress(processing, tmp_path):
    feedback, seen = QgsProcessingFeedback(), []
    feedback.progressChanged.connect(seen.append)
    model = tmp_path / "finetuned.safetensors"
    processing.run(TRAIN, {"INPUT": str(TUTORIAL_STACK), "LABELS": str(TUTORIAL_POLYGONS), "CLASS_FIELD": "class",
                           "METHOD": 1, "STEPS": 6, "CROP_SIZE": 64, "DEVICE": 1, "OUTPUT": str(model)},
                   feedback=feedback)
    steps = [round(v * 6 / 100) for v in seen if v > 0]
    assert steps == [1, 2, 3, 4, 5, 6], seen
    info = json.loads(geosscl("info", str(model)).stdout)
    assert info["arch"] == "unet" and info["provenance"]["steps"] == 6 and info["tile_size"] == 64
    assert info["class_names"] == ["barren", "forest", "herbaceous", "urban", "water"]
    # Trained further from that model, on polygons digitised since (here: the same, in a memory layer), with
    # no class field given: the model's, which it records, is read.
    further, feedback = tmp_path / "further.safetensors", QgsProcessingFeedback()
    processing.run(TRAIN, {"INPUT": str(TUTORIAL_STACK), "LABELS": digitised(TUTORIAL_POLYGONS),
                           "METHOD": 1, "STEPS": 2, "CROP_SIZE": 64, "DEVICE": 1, "INIT": str(model),
                           "OUTPUT": str(further)}, feedback=feedback)
    assert "classes read from its column 'class', the one the model's labels came from" in feedback.textLog()
    again = json.loads(geosscl("info", str(further)).stdout)
    assert again["provenance"]["init"] == str(model) and again["provenance"]["steps"] == 2
    assert again["class_names"] == info["class_names"] and again["band_mean"] == info["band_mean"]


def test_cancelled_fine_tuning_writes_no_model(processing, tmp_path):
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda value: value > 0 and feedback.cancel())
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run(TRAIN, {"INPUT": str(TUTORIAL_STACK), "LABELS": str(TUTORIAL_POLYGONS), "CLASS_FIELD": "class",
                               "METHOD": 1, "STEPS": 500, "CROP_SIZE": 64, "OUTPUT": str(out / "m.safetensors")},
                       feedback=feedback)
    assert list(out.iterdir()) == []


def test_polygons_not_yet_classed_are_left_out_and_said(processing, tmp_path):
    polygons = digitised(TUTORIAL_POLYGONS, "being digitised")
    polygons.startEditing()
    first = next(polygons.getFeatures())
    assert polygons.changeAttributeValue(first.id(), polygons.fields().indexOf("class"), None)
    assert polygons.commitChanges()
    feedback = QgsProcessingFeedback()
    processing.run(TRAIN, {"INPUT": str(TUTORIAL_STACK), "LABELS": polygons, "CLASS_FIELD": "class",
                           "OUTPUT": str(tmp_path / "m.safetensors")}, feedback=feedback)
    assert ("WARNING: layer 'being digitised': 1 polygon(s) without a value in column 'class' left unlabelled"
            in feedback.textLog())
    # A warning in the Processing log (highlighted there), not a line of information.
    assert '<span style="color:#b85a20;">WARNING: layer' in feedback.htmlLog()
    info = json.loads(geosscl("info", str(tmp_path / "m.safetensors")).stdout)
    assert info["class_names"] == ["barren", "forest", "herbaceous", "urban", "water"]


def test_clear_errors_name_the_layer(processing, checkpoint, tmp_path):
    out = tmp_path / "m.safetensors"
    polygons = digitised(TUTORIAL_POLYGONS, "my labels")

    def fails(message, **parameters):
        with pytest.raises(QgsProcessingException, match=message):
            processing.run(TRAIN, {"INPUT": str(TUTORIAL_STACK), "LABELS": polygons, "CLASS_FIELD": "class",
                                   "OUTPUT": str(out), **parameters})
        assert not out.exists()

    fails("geosscl: layer 'buildings': labels do not overlap the imagery", LABELS=digitised(BUILDINGS, "buildings"))
    fails("geosscl: layer 'my labels': no column 'klass'; the layer has id, class$", CLASS_FIELD="klass")
    fails("Start from: .*missing.ckpt does not exist", INIT=str(tmp_path / "missing.ckpt"))
    fails("m.tif: geosscl models are .safetensors files", OUTPUT=str(tmp_path / "m.tif"))
    empty = QgsVectorLayer("Polygon?crs=EPSG:32615&field=class:string", "nothing yet", "memory")
    fails("nothing yet: the layer has no features", LABELS=empty)
    fails("geosscl: .*last.ckpt: checkpoint has 8 bands, the imagery 1", INIT=str(checkpoint), INPUT=str(ATLANTA),
          LABELS=str(BUILDINGS))


#: A QGIS user's style for the NC land-use raster: names and colours of their own (not the bundled classes.yaml's).
STRATA_STYLE = {1: ("built-up", (200, 0, 0)), 2: ("crops", (250, 220, 0)), 3: ("grass", (150, 240, 100)),
                4: ("scrub", (160, 100, 40)), 5: ("woods", (0, 100, 40)), 6: ("open water", (0, 80, 220)),
                7: ("sand", (220, 220, 200))}


def paletted(path, name, style):
    """A raster layer of ``path`` with a paletted style: ``{value: (label, (r, g, b))}``."""
    layer = QgsRasterLayer(str(path), name)
    assert layer.isValid()
    classes = [QgsPalettedRasterRenderer.Class(value, QColor(*rgb), label) for value, (label, rgb) in style.items()]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    return layer


def test_classifier_from_a_paletted_class_raster_takes_its_names_and_colours(processing, tmp_path):
    model, classes = tmp_path / "qgis.safetensors", tmp_path / "qgis.tif"
    feedback = QgsProcessingFeedback()
    processing.run(TRAIN, {"INPUT": str(SCENE), "LABEL_RASTER": paletted(STRATA, "land use", STRATA_STYLE),
                           "CROP_SIZE": 64, "OUTPUT": str(model), "CLASS_MAP": str(classes)}, feedback=feedback)
    assert "land use: class names and colours from its paletted style: 1 built-up, 2 crops" in feedback.textLog()
    info = json.loads(geosscl("info", str(model)).stdout)
    assert info["class_names"] == [label for label, _ in STRATA_STYLE.values()]
    assert info["class_colors"] == [list(rgb) for _, rgb in STRATA_STYLE.values()]
    assert info["class_values"] == list(STRATA_STYLE)
    # The command line with the same names and colours as a classes file makes the same model.
    style_file = tmp_path / "style.json"
    style_file.write_text(json.dumps({v: {"name": label, "color": rgb} for v, (label, rgb) in STRATA_STYLE.items()}))
    reference, reference_map = tmp_path / "cli.safetensors", tmp_path / "cli.tif"
    made = geosscl("probe", str(SCENE), "--labels", str(STRATA), "--classes", str(style_file), "--crop-size", "64",
                   *CLASSIFIER, "-o", str(reference), "-q")
    assert made.returncode == 0, made.stderr
    assert geosscl_predict(str(SCENE), "-m", str(reference), "-o", str(reference_map), "-q").returncode == 0
    (got, names), (want, want_names) = read(classes), read(reference_map)
    np.testing.assert_array_equal(got, want)
    assert names == want_names == info["class_names"]
    # It is a land-use map that follows the labels (strata's nodata, -99999, left out, and the pixels that are
    # nodata in the scene's band 6, 255 in the map): 0.73 measured, against forest's share of 0.48.
    truth = read(STRATA)[0]
    labelled = (truth > 0) & (got != 255)
    assert (got[labelled] == truth[labelled]).mean() > 0.65
    assert len(np.unique(got)) >= 4
    dataset = gdal.Open(str(classes))
    assert dataset.GetRasterBand(1).GetColorTable().GetColorEntry(6)[:3] == (0, 80, 220)


def test_class_raster_with_a_colour_table_keeps_the_classes_it_holds(processing, tmp_path):
    """A byte class raster with a colour table (as NLCD and many land-cover products are) opens in QGIS with a
    256-entry palette, labelled by value: the model takes the classes the raster holds, not 256 classes. Coded
    as products code their classes (here 10 … 70, strata.tif's 1 … 7 times ten), the model has those 7 classes,
    and its class map keeps the codes, styled in QGIS by them."""
    source = gdal.Open(str(STRATA))
    ids = source.GetRasterBand(1).ReadAsArray()
    coded = tmp_path / "land_cover.tif"
    target = gdal.GetDriverByName("GTiff").Create(str(coded), source.RasterXSize, source.RasterYSize, 1, gdal.GDT_Byte)
    target.SetGeoTransform(source.GetGeoTransform())
    target.SetProjection(source.GetProjection())
    band = target.GetRasterBand(1)
    band.WriteArray(np.where(ids > 0, ids * 10, 0).astype(np.uint8))
    band.SetNoDataValue(0)
    table = gdal.ColorTable()
    for value in range(256):
        table.SetColorEntry(value, (value, 255 - value, 128, 255))
    band.SetColorTable(table)
    target = band = None
    layer = QgsRasterLayer(str(coded), "land cover")
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer) and len(layer.renderer().classes()) == 256
    model, class_map = tmp_path / "m.safetensors", tmp_path / "classes.tif"
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    context.setProject(QgsProject.instance())
    processing.run(TRAIN, {"INPUT": str(SCENE), "LABEL_RASTER": layer, "CROP_SIZE": 64, "OUTPUT": str(model),
                           "CLASS_MAP": QgsProcessingOutputLayerDefinition(str(class_map), QgsProject.instance())},
                   context=context, feedback=feedback)
    info = json.loads(geosscl("info", str(model)).stdout)
    codes = [10 * v for v in range(1, 8)]
    assert info["class_names"] == [f"class {v}" for v in codes] and info["class_values"] == codes
    assert info["class_colors"] == [[v, 255 - v, 128] for v in codes]
    got = read(class_map)[0]
    assert set(np.unique(got).tolist()) <= {*codes, 255} and len(np.unique(got)) >= 4
    styled = QgsRasterLayer(str(class_map), "classes")
    context.layerToLoadOnCompletionDetails(str(class_map)).postProcessor().postProcessLayer(styled, context, feedback)
    entries = {int(c.value): (c.label, c.color.red()) for c in styled.renderer().classes()}
    assert entries == {v: (f"class {v}", v) for v in codes}


def test_class_raster_unlabelled_value_set_in_qgis(processing, in_project, tmp_path):
    """Sen1Floods11 marks unlabelled pixels -1 without declaring it: the layer's additional no-data value says so.
    The raster is ENVI here, so the algorithm reads it through a GeoTIFF copy of its own."""
    envi = tmp_path / "hand_labels.dat"
    gdal.Translate(str(envi), str(FLOODS_LABELS), format="ENVI")
    labels = in_project(QgsRasterLayer(str(envi), "hand labels"))
    assert labels.isValid() and labels.bandCount() == 1
    model, classes = tmp_path / "qgis.safetensors", tmp_path / "qgis.tif"
    parameters = {"INPUT": str(FLOODS_S2), "LABEL_RASTER": labels, "CROP_SIZE": 64, "OUTPUT": str(model),
                  "CLASS_MAP": str(classes)}
    with pytest.raises(QgsProcessingException, match=(
            r"^geosscl: layer 'hand labels': value\(s\) -1 are not class ids \(class ids are 0 or more\); if -1 means "
            r"unlabelled, set -1 as the class raster's additional no-data value \(Layer Properties > Transparency\)$")):
        processing.run(TRAIN, parameters)
    assert not model.exists() and not classes.exists()

    labels.dataProvider().setUserNoDataValue(1, [QgsRasterRange(-1, -1)])
    feedback = QgsProcessingFeedback()
    processing.run(TRAIN, parameters, feedback=feedback)
    assert "--label-nodata -1" in feedback.textLog()
    reference, reference_map = tmp_path / "cli.safetensors", tmp_path / "cli.tif"
    made = geosscl("probe", str(FLOODS_S2), "--labels", str(FLOODS_LABELS), "--label-nodata", "-1", "--crop-size",
                   "64", *CLASSIFIER, "-o", str(reference), "-q")
    assert made.returncode == 0, made.stderr
    assert geosscl_predict(str(FLOODS_S2), "-m", str(reference), "-o", str(reference_map), "-q").returncode == 0
    (got, names), (want, want_names) = read(classes), read(reference_map)
    np.testing.assert_array_equal(got, want)
    assert names == want_names == ["class 0", "class 1"]
    truth = read(FLOODS_LABELS)[0]
    labelled = truth >= 0
    assert (got[labelled] == truth[labelled]).mean() > 0.9  # water is in the bands


def test_label_choice_errors(processing, in_project, tmp_path):
    out = tmp_path / "m.safetensors"
    strata = in_project(QgsRasterLayer(str(STRATA), "land use"))

    def fails(message, **parameters):
        with pytest.raises(QgsProcessingException, match=message):
            processing.run(TRAIN, {"INPUT": str(SCENE), "OUTPUT": str(out), **parameters})
        assert not out.exists()

    fails(r"^Labels: give a polygon layer \(and its class field\) or a class raster$")
    fails(r"^Labels: give polygons or a class raster, not both \(tutorial, land use\)$",
          LABELS=in_project(QgsVectorLayer(str(TUTORIAL_POLYGONS), "tutorial", "ogr")), CLASS_FIELD="class",
          LABEL_RASTER=strata)
    fails("^Background class: for polygon labels; the class raster land use holds its background class itself$",
          LABEL_RASTER=strata, BACKGROUND_CLASS="1")
    fails("^scene: 8 bands; a class raster has one band of class ids$",
          LABEL_RASTER=in_project(QgsRasterLayer(str(TUTORIAL_STACK), "scene")))
    two = in_project(QgsRasterLayer(str(STRATA), "two values"))
    two.dataProvider().setUserNoDataValue(1, [QgsRasterRange(0, 0), QgsRasterRange(255, 255)])
    fails("^two values: additional no-data values 0, 255; geosscl takes one value that means unlabelled$",
          LABEL_RASTER=two)
    fails("^geosscl: layer 'land use': labels do not overlap the imagery", INPUT=str(ATLANTA), LABEL_RASTER=strata)
