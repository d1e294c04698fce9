"""Class names a class raster carries itself (GDAL category names, raster attribute tables), both ways:
read from labels into the model, written with every class map ``predict`` makes."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from rasterio.windows import Window

from geosscl import GeossclError
from geosscl.data.categories import category_names, legend, write_category_names
from geosscl.evaluation import evaluate
from geosscl.finetuning import FinetuneConfig, prepare
from geosscl.modelfile import read_info
from geosscl.output import atomic_output, sidecar
from geosscl.prediction import predict
from conftest import NC_BANDS, SAMPLES, TUTORIAL, TUTORIAL_STACK

FIXTURES = Path(__file__).parent / "data"  # sidecars written by GDAL 3.6 itself (see its README)
LABELS = TUTORIAL / "training_data.gtif"  # ids 1-5, nodata 0, colour table none
NAMES = ["forest", "water", "herbaceous", "barren", "urban"]  # of the values 1-5
VALUES = [1, 2, 3, 4, 5]
NC_MODEL = SAMPLES / "models" / "nc_landuse.safetensors"
NC_SCENE = SAMPLES / "nc_landsat" / "lsat7_2000.vrt"
STRATA = SAMPLES / "nc_landsat" / "strata.tif"
TEST_REGION = SAMPLES / "nc_landsat" / "test_region.geojson"


def labelled(folder: Path, fixture: str | None, name: str = "labels.tif", source: Path = LABELS) -> Path:
    """A copy of ``source`` with a GDAL sidecar fixture beside it."""
    path = folder / name
    shutil.copy(source, path)
    if fixture:
        shutil.copy(FIXTURES / fixture, sidecar(path))
    return path


def setup_of(labels: list[Path], tmp_path: Path, **options):
    return prepare(FinetuneConfig(imagery=[str(TUTORIAL_STACK)], labels=[str(p) for p in labels],
                                  out=str(tmp_path / "m.safetensors"), crop_size=64, **options))


@pytest.mark.parametrize("fixture", ["training_data_categories.aux.xml", "training_data_rat.aux.xml"])
def test_names_gdal_wrote_name_the_model_s_classes(tmp_path, fixture, caplog):
    """Category names, or a raster attribute table's name column (rows in any order), as GDAL writes them."""
    labels = labelled(tmp_path, fixture)
    assert category_names(labels) == dict(zip(VALUES, NAMES))
    setup = setup_of([labels], tmp_path)
    # The classes are the values named (0 is the file's nodata: no class of its own).
    assert setup.class_names == NAMES and setup.num_classes == 5 and setup.class_values == VALUES
    # Without the sidecar, the same raster gives placeholders; a classes file still decides when given.
    bare = setup_of([labelled(tmp_path, None, "bare.tif")], tmp_path)
    assert bare.class_names == [f"class {i}" for i in VALUES] and bare.class_values == VALUES
    classes = tmp_path / "classes.yaml"
    classes.write_text("1: cloud\n2: water\n3: herbaceous\n4: barren\n5: snow\n")
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        assert setup_of([labels], tmp_path, classes=str(classes)).class_names == ["cloud", *NAMES[1:4], "snow"]
    # The labels are coded as the raster names them: a classes file naming the ids otherwise is said to.
    assert (f"labels.tif: names class 1 'forest' where {classes} has 'cloud' (and 1 more); that is only right if the "
            f"labels use {classes}'s class ids") in caplog.text


def test_the_fine_tuned_model_file_carries_the_names(tmp_path):
    labels = labelled(tmp_path, "training_data_rat.aux.xml")
    out = tmp_path / "model.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "geosscl", "finetune", str(TUTORIAL_STACK), "--labels", str(labels), "--out", str(out),
         "--crop-size", "64", "--batch-size", "4", "--max-steps", "2", "--num-workers", "0", "-q"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    info = read_info(out)
    assert info.class_names == NAMES and info.class_values == VALUES


def test_tiles_that_each_list_their_own_values_merge_and_contradictions_are_refused(tmp_path):
    """A tile's attribute table lists the values it holds (ArcGIS builds them so): the west and east halves of
    the labels, each naming its own values, name all five classes together, though the first file, the west
    half, holds no class 5."""
    with rasterio.open(LABELS) as src:
        profile, ids = src.profile, src.read(1)
    tiles = []
    for name, window in {"a_west": Window(0, 0, 125, 250), "b_east": Window(125, 0, 125, 250)}.items():
        path = tmp_path / f"{name}.tif"
        with rasterio.open(LABELS) as src, rasterio.open(path, "w", **{**profile, "width": 125,
                                                                        "transform": src.window_transform(window)}) as dst:
            dst.write(src.read(1, window=window), 1)
        present = sorted(set(np.unique(ids[:, window.col_off:window.col_off + 125]).tolist()) - {0})
        write_category_names(path, [NAMES[i - 1] if i in present else "" for i in range(max(present) + 1)])
        tiles.append((path, present))
    assert (tiles[0][1], tiles[1][1]) == ([1, 2, 3, 4], [1, 2, 3, 4, 5])
    assert setup_of([p for p, _ in tiles], tmp_path).class_names == NAMES
    write_category_names(tiles[1][0], ["", "water"])  # the east tile calls class 1 otherwise
    with pytest.raises(GeossclError, match=r"b_east\.tif: names class 1 'water', .*a_west\.tif names it 'forest'$"):
        setup_of([p for p, _ in tiles], tmp_path)


def test_an_arcgis_value_attribute_table_names_the_classes(tmp_path):
    """ArcGIS keeps a file raster's table in FILE.vat.dbf: VALUE, COUNT, then e.g. CLASSVALUE (a number, not the
    name) and CLASSNAME, colours as RED/GREEN/BLUE in 0-1 (GDAL scales them to 0-255). Written here with GDAL's Shapefile driver, read by the
    rules GDAL 3.11 reads such a table by. A value without a name keeps a placeholder."""
    labels = labelled(tmp_path, None)
    table = pd.DataFrame({"VALUE": [1, 2, 3, 4, 5], "COUNT": [383, 16, 145, 106, 68], "CLASSVALUE": [1, 2, 3, 4, 5],
                          "CLASSNAME": ["forest", "water", None, "barren", "urban"],
                          "RED": [0.0, 0.0, 0.5, 0.6, 1.0], "GREEN": [0.4, 0.3, 0.9, 0.4, 0.0], "BLUE": [0.1, 1.0, 0.3, 0.2, 0.0]})
    pyogrio.write_dataframe(table, f"{labels}.vat.dbf", driver="ESRI Shapefile")
    assert category_names(labels) == {1: "forest", 2: "water", 4: "barren", 5: "urban"}
    setup = setup_of([labels], tmp_path)
    assert setup.class_names == ["forest", "water", "class 3", "barren", "urban"]
    # The raster has no colour table: the table's colours colour the classes.
    assert setup.class_colors == [[0, 102, 26], [0, 77, 255], [128, 230, 77], [153, 102, 51], [255, 0, 0]]
    # A row without a colour keeps its name.
    other = labelled(tmp_path, None, "other.tif")
    pyogrio.write_dataframe(table.assign(RED=[0.0, None, 0.5, 0.6, 1.0]), f"{other}.vat.dbf", driver="ESRI Shapefile")
    found = legend(other)
    assert found.names == category_names(labels) and sorted(found.colors) == [1, 3, 4, 5]
    # A table GDAL's PAM sidecar holds comes first.
    shutil.copy(FIXTURES / "training_data_categories.aux.xml", sidecar(labels))
    assert category_names(labels)[3] == "herbaceous"


def test_values_the_raster_does_not_name_are_classes_named_by_value_and_said_so(tmp_path, caplog):
    labels = labelled(tmp_path, None)
    write_category_names(labels, ["", "forest", "water", "herbaceous"])
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        setup = setup_of([labels], tmp_path)
    assert setup.class_names == [*NAMES[:3], "class 4", "class 5"] and setup.class_values == VALUES
    assert "labels.tif: the raster names no class for value(s) 4, 5 it holds" in caplog.text


def test_sidecars_gdal_would_not_read_are_ignored(tmp_path, caplog, monkeypatch):
    broken = labelled(tmp_path, None)
    Path(sidecar(broken)).write_text("<PAMDataset><PAMRasterBand band='1'>")
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        assert category_names(broken) == {}
    assert "labels.tif.aux.xml: not read" in caplog.text
    # Ranges (a table of min/max per row) name no class id; nor do values GDAL_PAM_ENABLED=NO hides.
    ranged = labelled(tmp_path, "training_data_rat.aux.xml", "ranged.tif")
    Path(sidecar(ranged)).write_text(Path(sidecar(ranged)).read_text().replace("<F>3</F>", "<F>2.5</F>", 1))
    assert category_names(ranged) == {}
    named = labelled(tmp_path, "training_data_categories.aux.xml", "named.tif")
    monkeypatch.setenv("GDAL_PAM_ENABLED", "NO")
    assert category_names(named) == {} and write_category_names(named, ["x"]) is None


def test_a_vrt_of_the_labels_keeps_its_categories_in_itself(tmp_path):
    vrt = tmp_path / "labels.vrt"
    with rasterio.open(LABELS) as src:
        width, height, transform = src.width, src.height, src.transform
    vrt.write_text(f"""<VRTDataset rasterXSize="{width}" rasterYSize="{height}">
  <GeoTransform>{", ".join(str(v) for v in transform.to_gdal())}</GeoTransform>
  <VRTRasterBand dataType="Byte" band="1">
    <NoDataValue>0</NoDataValue>
    <CategoryNames><Category/><Category>forest</Category><Category>water</Category><Category>herbaceous</Category>
      <Category>barren</Category><Category>urban</Category></CategoryNames>
    <SimpleSource><SourceFilename relativeToVRT="0">{LABELS}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>
  </VRTRasterBand>
</VRTDataset>""")
    assert category_names(vrt) == dict(zip(VALUES, NAMES))


def test_class_maps_name_their_classes_and_train_on_as_labels(tmp_path):
    """predict writes the model's class names where GDAL reads them; a stale sidecar of the file replaced goes.
    Such a class map (corrected by hand, say) then gives a new model the same classes without a classes file."""
    out = tmp_path / "classes.tif"
    out.write_bytes(b"old")
    Path(sidecar(out)).write_text("<PAMDataset><PAMRasterBand band='1'><Metadata><MDI key='STATISTICS_MEAN'>9</MDI>"
                                  "</Metadata></PAMRasterBand></PAMDataset>")
    predict(str(NC_SCENE), str(NC_MODEL), str(out), overwrite=True)
    info = read_info(NC_MODEL)
    names = info.class_names
    assert info.map_values == [1, 2, 3, 4, 5, 6, 7] and category_names(out) == dict(zip(info.map_values, names))
    assert "STATISTICS" not in Path(sidecar(out)).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif", "classes.tif.aux.xml"]
    setup = prepare(FinetuneConfig(imagery=[str(p) for p in NC_BANDS], labels=[str(out)],
                                   out=str(tmp_path / "again.safetensors"), crop_size=64))
    with rasterio.open(out) as src:
        colors = [list(src.colormap(1)[v][:3]) for v in info.map_values]
    assert setup.class_names == names and setup.class_colors == colors and setup.class_values == info.class_values


def test_evaluate_warns_where_the_labels_name_the_model_s_classes_otherwise(tmp_path, caplog):
    """strata.tif holds the bundled model's values (1-7); named in the model's order it scores silently, named in
    another order the scores are computed the same but a warning says the names disagree."""
    names = read_info(NC_MODEL).class_names
    agreeing = labelled(tmp_path, None, "agreeing.tif", STRATA)
    write_category_names(agreeing, ["", *(n.upper() for n in names)])  # case is no disagreement
    swapped = labelled(tmp_path, None, "swapped.tif", STRATA)
    write_category_names(swapped, ["", names[5], *names[1:5], names[0], names[6]])  # developed and water swapped
    imagery = [str(p) for p in NC_BANDS]
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        plain, _ = evaluate(str(NC_MODEL), imagery, [str(agreeing)], region=str(TEST_REGION))
        assert caplog.text == ""
        crossed, _ = evaluate(str(NC_MODEL), imagery, [str(swapped)], region=str(TEST_REGION))
    assert crossed.confusion == plain.confusion
    assert "swapped.tif: names class 1 'water' where the model has 'developed' (and 1 more)" in caplog.text
    # Fine-tuning the model further on them keeps its classes, and says the same.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        setup = prepare(FinetuneConfig(imagery=imagery, labels=[str(swapped)], init=str(NC_MODEL),
                                       out=str(tmp_path / "further.safetensors"), crop_size=64))
    assert setup.class_names == names
    assert f"swapped.tif: names class 1 'water' where {NC_MODEL} has 'developed' (and 1 more)" in caplog.text


def test_an_output_s_sidecar_moves_with_it_and_a_failed_one_leaves_nothing(tmp_path):
    out = tmp_path / "map.tif"
    out.write_text("before")
    Path(sidecar(out)).write_text("old statistics")
    with pytest.raises(KeyboardInterrupt), atomic_output(out, overwrite=True) as tmp:
        Path(tmp).write_text("half")
        Path(sidecar(tmp)).write_text("half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif", "map.tif.aux.xml"]
    assert out.read_text() == "before" and Path(sidecar(out)).read_text() == "old statistics"
    with atomic_output(out, overwrite=True) as tmp:
        Path(tmp).write_text("after")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"]  # the old file's sidecar went with it
    with atomic_output(out, overwrite=True) as tmp:
        Path(tmp).write_text("named")
        write_category_names(tmp, ["a", "b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif", "map.tif.aux.xml"]
    assert category_names(out) == {0: "a", 1: "b"}


def test_names_join_what_gdal_keeps_in_the_sidecar_and_replace_earlier_names(tmp_path):
    labels = labelled(tmp_path, "training_data_rat.aux.xml")
    write_category_names(labels, ["none", "one"])
    write_category_names(labels, ["zero", "one", "two"])
    text = Path(sidecar(labels)).read_text()
    assert text.count("<CategoryNames>") == 1 and "<GDALRasterAttributeTable" in text
    assert category_names(labels) == {0: "zero", 1: "one", 2: "two"}
