"""Class rasters coded as land-cover products code them (ESA WorldCover 10, 20, … 100; NLCD 11 … 95): the
model has the classes listed, not one for every value up to the largest, and its maps keep the product's codes.

The coded labels are the NC land-use raster, strata.tif (values 1-7), with every value times ten: training on
them must be training on strata.tif under other names, and everything a model writes must carry the codes.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
import yaml

from geosscl.data.categories import category_names
from geosscl.errors import GeossclError
from geosscl.evaluation import evaluate
from geosscl.finetuning import FinetuneConfig, finetune, prepare
from geosscl.modelfile import load_model
from geosscl.prediction import predict, segment
from conftest import NC_BANDS, SAMPLES, TUTORIAL, TUTORIAL_POLYGONS, TUTORIAL_STACK

NC = SAMPLES / "nc_landsat"
STRATA, CLASSES, TEST_REGION = NC / "strata.tif", NC / "classes.yaml", NC / "test_region.geojson"
SCENE = NC / "lsat7_2000.vrt"
CODES = [10, 20, 30, 40, 50, 60, 70]
RUN = dict(crop_size=64, batch_size=4, max_steps=2, num_workers=0, quiet=True, seed=0)


@pytest.fixture(scope="module")
def coded(tmp_path_factory) -> tuple[Path, Path]:
    """strata.tif with its values times ten (nodata kept), and NC's classes file keyed by those codes."""
    folder = tmp_path_factory.mktemp("coded")
    labels = folder / "coded.tif"
    with rasterio.open(STRATA) as src:
        values, profile = src.read(1), src.profile
        with rasterio.open(labels, "w", **profile) as dst:
            dst.write(np.where(values == src.nodata, src.nodata, values * 10).astype(values.dtype), 1)
    entries = yaml.safe_load(CLASSES.read_text())
    classes = folder / "coded.yaml"
    classes.write_text(yaml.safe_dump({value * 10: entry for value, entry in entries.items()}))
    return labels, classes


@pytest.fixture(scope="module")
def models(coded, tmp_path_factory) -> tuple[Path, Path]:
    """The same fine-tuning run on strata.tif and on its coded copy."""
    folder = tmp_path_factory.mktemp("models")
    made = []
    for name, labels, classes in [("plain", STRATA, CLASSES), ("coded", *coded)]:
        out = folder / f"{name}.safetensors"
        finetune(FinetuneConfig(imagery=[str(p) for p in NC_BANDS], labels=[str(labels)], classes=str(classes),
                                out=str(out), **RUN))
        made.append(out)
    return made[0], made[1]


def test_a_classes_file_of_codes_makes_a_model_of_the_classes_listed(models):
    (plain_net, plain), (coded_net, coded) = load_model(models[0]), load_model(models[1])
    names = [entry["name"] for entry in yaml.safe_load(CLASSES.read_text()).values()]
    assert coded.class_names == plain.class_names == names  # 7 classes, not 71 (nor 8, with a "class 0")
    assert coded.class_values == CODES and plain.class_values == [1, 2, 3, 4, 5, 6, 7]
    assert coded.class_colors == plain.class_colors
    # The codes only rename the classes: the two runs trained the same weights.
    coded_state = coded_net.state_dict()
    assert all(torch.equal(value, coded_state[key]) for key, value in plain_net.state_dict().items())


def test_class_maps_keep_the_codes(models, tmp_path):
    outputs = {}
    for model in models:
        out = tmp_path / f"{model.stem}.tif"
        predict(str(SCENE), str(model), str(out), vector=str(tmp_path / f"{model.stem}.gpkg"))
        outputs[model.stem] = out
    with rasterio.open(outputs["plain"]) as a, rasterio.open(outputs["coded"]) as b:
        plain, coded = a.read(1), b.read(1)
        plain_colours, coded_colours = a.colormap(1), b.colormap(1)
        assert json.loads(b.tags()["class_values"]) == CODES and "class_values" in a.tags()
    assert (plain != 255).sum() > 100_000 and len(np.unique(plain)) > 2
    assert np.array_equal(coded, np.where(plain == 255, 255, plain * 10))
    assert all(coded_colours[v * 10] == plain_colours[v] for v in range(1, 8))
    names = category_names(outputs["plain"])
    assert category_names(outputs["coded"]) == {v * 10: name for v, name in names.items()}
    polygons = gpd.read_file(tmp_path / "coded.gpkg", layer="classes")
    assert set(polygons["class_id"]) == set(np.unique(coded).tolist()) - {255}
    assert {(i, n) for i, n in zip(polygons["class_id"], polygons["class_name"])} <= {(v * 10, n) for v, n in names.items()}
    # segment() returns what predict writes.
    window, _ = segment(str(SCENE), str(models[1]))
    assert np.array_equal(window, coded)


def test_evaluate_reads_the_codes_as_the_model_s_classes(models, coded, tmp_path):
    plain, _ = evaluate(str(models[0]), [str(p) for p in NC_BANDS], [str(STRATA)], region=str(TEST_REGION))
    scores, info = evaluate(str(models[1]), [str(p) for p in NC_BANDS], [str(coded[0])], region=str(TEST_REGION))
    assert scores.confusion == plain.confusion and sum(map(sum, scores.confusion)) > 10_000
    # The JSON of the command line names each row's value, and so does its printed table.
    out = tmp_path / "scores.json"
    run = subprocess.run([sys.executable, "-m", "geosscl", "evaluate", str(models[1]), *map(str, NC_BANDS), "--labels",
                          str(coded[0]), "--region", str(TEST_REGION), "--json", str(out), "--progress", "jsonl"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["class_values"] == CODES and data["classes"] == info.class_names and data["confusion"] == plain.confusion
    table = json.loads(run.stdout.splitlines()[-1])["table"].splitlines()
    assert table[0].split()[:2] == ["value", "class"] and table[-1].startswith("mIoU ")
    rows = [line.split() for line in table[1:-1]]
    held = [i for i, row in enumerate(plain.confusion) if sum(row) or plain.iou[i] == plain.iou[i]]  # as listed
    assert [(int(r[0]), r[1]) for r in rows] == [(CODES[i], info.class_names[i]) for i in held]
    # The model of values 1-7 does not take the coded labels for its classes.
    with pytest.raises(GeossclError, match=r"coded\.tif: class id 10 is outside the model's 7 classes "
                                           r"\(values 1, 2, 3, 4, 5, 6, 7\)"):
        evaluate(str(models[0]), [str(p) for p in NC_BANDS], [str(coded[0])], region=str(TEST_REGION))


def test_fine_tuning_a_coded_model_further_keeps_its_codes(models, coded, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        setup = prepare(FinetuneConfig(imagery=[str(p) for p in NC_BANDS], labels=[str(coded[0])], init=str(models[1]),
                                       out=str(tmp_path / "more.safetensors"), crop_size=64))
    assert setup.class_values == CODES and setup.init_model.keep_head
    assert "head starts anew" not in caplog.text
    # Without a classes file, the codes the raster holds are the classes.
    bare = prepare(FinetuneConfig(imagery=[str(p) for p in NC_BANDS], labels=[str(coded[0])],
                                  out=str(tmp_path / "bare.safetensors"), crop_size=64))
    assert bare.class_values == CODES and bare.class_names == [f"class {v}" for v in CODES]


def test_values_a_classes_file_does_not_list_or_a_class_map_cannot_hold_are_refused(coded, tmp_path):
    imagery = [str(p) for p in NC_BANDS]

    def setup(labels, text):
        classes = tmp_path / "classes.yaml"
        classes.write_text(text)
        return prepare(FinetuneConfig(imagery=imagery, labels=[str(labels)], classes=str(classes),
                                      out=str(tmp_path / "m.safetensors"), crop_size=64))

    with pytest.raises(GeossclError, match=r"coded\.tif: class id\(s\) \[30, 40, 50, 60, 70\] are outside the 2 classes "
                                           r"of .*classes\.yaml$"):
        setup(coded[0], "10: developed\n20: agriculture\n")
    with pytest.raises(GeossclError, match=r"strata\.tif: class value 300 does not fit the class maps geosscl writes "
                                           r"\(uint8, 255 = no data: values 0-254\)$"):
        setup(STRATA, "".join(f"{v}: c{v}\n" for v in [1, 2, 3, 4, 5, 6, 7, 300]))
    # An undeclared 255 (a common "unlabelled") is not a class a map can hold: the hint says what to pass.
    stray = tmp_path / "stray.tif"
    shutil.copy(TUTORIAL / "training_data.gtif", stray)
    with rasterio.open(stray, "r+") as dst:
        values = dst.read(1)
        values[:5, :5] = 255
        dst.write(values, 1)
    with pytest.raises(GeossclError, match=r"stray\.tif: class value 255 does not fit .*; if 255 means unlabelled, "
                                           r"pass --label-nodata 255$"):
        prepare(FinetuneConfig(imagery=[str(TUTORIAL_STACK)], labels=[str(stray)], out=str(tmp_path / "s.safetensors"),
                               crop_size=64))


def test_a_vector_layer_s_numeric_codes_are_coded_too(tmp_path):
    """Polygons whose class column holds codes (here 10 × the tutorial's ids 1-5) burn their codes, and the
    masks training reads hold the class ids those codes stand for."""
    layer = gpd.read_file(TUTORIAL_POLYGONS)
    layer["code"] = layer["id"] * 10
    path = tmp_path / "coded.gpkg"
    layer.to_file(path)
    setup = prepare(FinetuneConfig(imagery=[str(TUTORIAL_STACK)], labels=[str(path)], class_column="code",
                                   out=str(tmp_path / "m.safetensors"), crop_size=64))
    assert setup.class_values == [10, 20, 30, 40, 50] and setup.num_classes == 5
    plain = prepare(FinetuneConfig(imagery=[str(TUTORIAL_STACK)], labels=[str(TUTORIAL_POLYGONS)], class_column="id",
                                   out=str(tmp_path / "p.safetensors"), crop_size=64))
    x0, y0, x1, y1 = setup.area.bounds
    query = slice(x0, x1, 30.0), slice(y0, y1, 30.0)
    mask = setup.labels[query]["mask"]
    assert (mask >= 0).sum() > 500 and int(mask.max()) == 4
    assert torch.equal(mask, plain.labels[query]["mask"])
    # A background named in a classes file is its code there (90), not its place in the list (the 6th: code 60).
    classes = tmp_path / "classes.yaml"
    classes.write_text("10: forest\n20: water\n30: herbaceous\n40: barren\n50: urban\n90: ground\n")
    grounded = prepare(FinetuneConfig(imagery=[str(TUTORIAL_STACK)], labels=[str(path)], class_column="code",
                                      classes=str(classes), background_class="ground", out=str(tmp_path / "g.safetensors"),
                                      crop_size=64))
    assert grounded.labels.background == 90 and grounded.background_class == "ground"
    ground = grounded.labels[query]["mask"]
    assert torch.equal(ground[mask >= 0], mask[mask >= 0]) and set(ground[mask < 0].unique().tolist()) == {5}  # id of 90


def test_the_cli_model_and_its_map_carry_the_codes(coded, tmp_path):
    model, out = tmp_path / "m.safetensors", tmp_path / "map.tif"
    run = [sys.executable, "-m", "geosscl"]
    train = subprocess.run([*run, "finetune", *map(str, NC_BANDS), "--labels", str(coded[0]), "--classes", str(coded[1]),
                            "--out", str(model), "--crop-size", "64", "--batch-size", "4", "--max-steps", "1",
                            "--num-workers", "0", "-q"], capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-2000:]
    info = json.loads(subprocess.run([*run, "info", str(model)], capture_output=True, text=True, check=True).stdout)
    assert info["class_values"] == CODES
    subprocess.run([*run, "predict", str(SCENE), "-m", str(model), "-o", str(out), "-q"], check=True, timeout=600)
    with rasterio.open(out) as src:
        assert set(np.unique(src.read(1)).tolist()) <= {*CODES, 255}


def test_labels_of_one_class_are_refused(tmp_path):
    """A mask of buildings alone (1, nodata elsewhere) would make a one-output model, which learns nothing."""
    with rasterio.open(TUTORIAL / "training_data.gtif") as src:
        values, profile = src.read(1), src.profile
    forest = tmp_path / "forest.tif"
    with rasterio.open(forest, "w", **profile) as dst:
        dst.write(np.where(values == 1, 1, 0).astype(values.dtype), 1)  # 0 is the file's nodata
    with pytest.raises(GeossclError, match=r"forest\.tif: the labels hold one class \('class 1', value 1\); a segmenter "
                                           r"needs two or more: label the other pixels too"):
        prepare(FinetuneConfig(imagery=[str(TUTORIAL_STACK)], labels=[str(forest)], out=str(tmp_path / "m.safetensors"),
                               crop_size=64))
    layer = gpd.read_file(TUTORIAL_POLYGONS)
    forests = tmp_path / "forests.gpkg"
    layer[layer["class"] == "forest"].to_file(forests)
    with pytest.raises(GeossclError, match=r"forests\.gpkg: the labels hold one class \('forest', value 0\); .*"
                                           r"give --background-class"):
        prepare(FinetuneConfig(imagery=[str(TUTORIAL_STACK)], labels=[str(forests)], class_column="class",
                               out=str(tmp_path / "f.safetensors"), crop_size=64))
    # With the background class the same polygons make two classes.
    setup = prepare(FinetuneConfig(imagery=[str(TUTORIAL_STACK)], labels=[str(forests)], class_column="class",
                                   background_class="other", out=str(tmp_path / "b.safetensors"), crop_size=64))
    assert setup.class_names == ["other", "forest"] and setup.background_class == "other"
    assert list(tmp_path.iterdir()) != [] and not any(p.suffix == ".safetensors" for p in tmp_path.iterdir())
