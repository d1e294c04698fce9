"""The "Suggest tiles to label" algorithm in real QGIS (headless): geosscl suggest's tiles, with labels being
digitised (a memory layer) kept free, and errors in the dialog's words."""

from __future__ import annotations

import gc

import pytest
from qgis.core import (QgsFeatureRequest, QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback,
                       QgsProcessingOutputLayerDefinition, QgsProject, QgsVectorLayer)

from conftest import MODEL, NAIP, SCENE, STRATA, geosscl, refused_bf16

SUGGEST = "geosscl:suggest_tiles"
TEST_REGION = STRATA.parent / "test_region.geojson"


def tiles(path):
    """``(rank, uncertainty, predicted, geometry WKT)`` of each tile of a suggestions GeoPackage, by rank."""
    layer = QgsVectorLayer(f"{path}|layername=suggestions", "tiles", "ogr")
    assert layer.isValid()
    return sorted((f["rank"], f["uncertainty"], f["predicted"], f.geometry().asWkt(0)) for f in layer.getFeatures())


def test_suggest_algorithm_is_registered(provider):
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().algorithmById(SUGGEST)
    assert algorithm is not None and algorithm.displayName() == "Suggest tiles to label"
    assert {p.name() for p in algorithm.parameterDefinitions()} >= {
        "INPUT", "MODEL", "COUNT", "TILE_SIZE", "SPACING", "LABELS", "CLASS_FIELD", "LABEL_RASTER", "REGION", "EXCLUDE",
        "DEVICE", "BFLOAT16", "OUTPUT"}


def test_bfloat16_runs_geosscl_suggest_in_bf16(processing, tmp_path):
    """BFLOAT16 is geosscl suggest's ``--precision bf16``: its tiles, or where the CPU has no bfloat16 arithmetic its
    refusal, with nothing written."""
    out, cli = tmp_path / "qgis.gpkg", tmp_path / "cli.gpkg"
    made = geosscl("suggest", str(MODEL), str(SCENE), "-o", str(cli), "-n", "4", "--tile-size", "32", "--precision",
                   "bf16", "--device", "cpu", "-q")
    parameters = {"INPUT": str(SCENE), "MODEL": str(MODEL), "COUNT": 4, "TILE_SIZE": 32, "BFLOAT16": True, "DEVICE": 1,
                  "OUTPUT": str(out)}
    if refused_bf16(made, lambda: processing.run(SUGGEST, parameters)):
        assert not out.exists()
        return
    assert made.returncode == 0, made.stderr
    assert processing.run(SUGGEST, parameters)["TILES"] == 4
    assert tiles(out) == tiles(cli)


def test_tiles_are_geosscl_suggests_and_skip_the_labels_being_drawn(processing, tmp_path):
    first = tmp_path / "first.gpkg"
    result = processing.run(SUGGEST, {"INPUT": str(SCENE), "MODEL": str(MODEL), "COUNT": 4, "TILE_SIZE": 32,
                                      "EXCLUDE": QgsVectorLayer(str(TEST_REGION), "test region", "ogr"),
                                      "OUTPUT": str(first)})
    assert result["OUTPUT"] == str(first) and result["TILES"] == 4
    cli = tmp_path / "cli.gpkg"
    made = geosscl("suggest", str(MODEL), str(SCENE), "-o", str(cli), "-n", "4", "--tile-size", "32", "--exclude",
                   str(TEST_REGION), "-q")
    assert made.returncode == 0, made.stderr
    suggested = tiles(first)
    assert suggested == tiles(cli) and [t[0] for t in suggested] == [1, 2, 3, 4]
    # The first two labelled in a layer being digitised (a memory layer, with a class field): not suggested again.
    drawn = QgsVectorLayer(f"{first}|layername=suggestions", "tiles", "ogr").materialize(
        QgsFeatureRequest().setFilterExpression('"rank" <= 2'))
    drawn.setName("my labels")
    assert drawn.providerType() == "memory" and drawn.featureCount() == 2
    second = tmp_path / "second.gpkg"
    processing.run(SUGGEST, {"INPUT": str(SCENE), "MODEL": str(MODEL), "COUNT": 4, "TILE_SIZE": 32, "LABELS": drawn,
                             "CLASS_FIELD": "predicted", "EXCLUDE": str(TEST_REGION), "OUTPUT": str(second)})
    again = [t[3] for t in tiles(second)]
    assert len(again) == 4 and not {t[3] for t in suggested[:2]} & set(again)
    assert suggested[2][3] in again  # the third of the first run, a tile apart from the labels, comes back


def test_errors_name_the_layer_and_leave_no_output(processing, in_project, tmp_path):
    from qgis.core import QgsRasterLayer

    out = tmp_path / "tiles.gpkg"
    naip = in_project(QgsRasterLayer(str(NAIP), "naip"))
    with pytest.raises(QgsProcessingException, match=r"^geosscl: .*has 4 band\(s\); the model reads bands 1,2,3,4,5,6$"):
        processing.run(SUGGEST, {"INPUT": naip, "MODEL": str(MODEL), "OUTPUT": str(out)})
    everywhere = in_project(QgsRasterLayer(str(STRATA), "land use"))
    with pytest.raises(QgsProcessingException, match=r"^geosscl: .*no tile of 64 px is left to suggest .*labelled already"):
        processing.run(SUGGEST, {"INPUT": str(SCENE), "MODEL": str(MODEL), "LABEL_RASTER": everywhere, "OUTPUT": str(out)})
    with pytest.raises(QgsProcessingException, match=r"tiles\.shp: tiles to label are written as GeoPackage"):
        processing.run(SUGGEST, {"INPUT": str(SCENE), "MODEL": str(MODEL), "OUTPUT": str(tmp_path / "tiles.shp")})
    with pytest.raises(QgsProcessingException, match=r"^Labels: a background class or label area describes the labels"):
        processing.run(SUGGEST, {"INPUT": str(SCENE), "MODEL": str(MODEL), "LABEL_AREA": str(TEST_REGION), "OUTPUT": str(out)})
    assert not out.exists() and not (tmp_path / "tiles.shp").exists()


def test_loaded_tiles_are_outlines_labelled_by_rank(processing, tmp_path):
    """The imagery to label shows through the squares: no fill, an outline, the rank as label."""
    out = tmp_path / "tiles.gpkg"
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    context.setProject(QgsProject.instance())
    processing.run(SUGGEST, {"INPUT": str(SCENE), "MODEL": str(MODEL), "COUNT": 2,
                             "OUTPUT": QgsProcessingOutputLayerDefinition(str(out), QgsProject.instance())},
                   context=context, feedback=feedback)
    gc.collect()  # nothing but the context may keep the post-processor
    details = context.layerToLoadOnCompletionDetails(str(out))
    assert details.postProcessor() is not None
    layer = QgsVectorLayer(f"{out}|layername=suggestions", "tiles", "ogr")
    details.postProcessor().postProcessLayer(layer, context, feedback)
    fill = layer.renderer().symbol().symbolLayer(0)
    assert fill.brushStyle() == 0 and fill.strokeColor().getRgb()[:3] == (255, 0, 255)  # Qt.NoBrush
    assert layer.labelsEnabled() and layer.labeling().settings().fieldName == "rank"
    del details, context
    gc.collect()
