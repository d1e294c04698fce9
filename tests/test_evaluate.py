"""Tiled inference and ``geosscl evaluate`` on real labelled imagery."""

from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch

from geosscl import GeossclError, Mosaic
from geosscl.evaluation import evaluate
from geosscl.finetuning import FinetuneConfig, finetune
from geosscl.inference import TiledSegmenter, weight_window
from geosscl.modelfile import load_model
from conftest import NAIP, TUTORIAL, TUTORIAL_POLYGONS, TUTORIAL_STACK

STACK, POLYGONS = str(TUTORIAL_STACK), str(TUTORIAL_POLYGONS)
LABELLED_PIXELS = 383 + 16 + 145 + 106 + 68  # training_data.gtif, classes 1..5


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("model") / "model.safetensors"
    return finetune(FinetuneConfig(imagery=[STACK], labels=[POLYGONS], class_column="id", out=str(out), crop_size=64,
                                   batch_size=8, max_steps=6, num_workers=0, quiet=True))


def test_single_tile_equals_a_direct_forward_pass(model):
    network, info = load_model(model)
    mosaic = Mosaic(STACK, bands=info.bands)
    x0, _, _, y1 = mosaic.index.total_bounds
    area = (x0, y1 - 192 * 30, x0 + 192 * 30, y1)
    engine = TiledSegmenter(network, info, tile_size=192, overlap=0, block_size=192)
    probabilities, valid = engine.probabilities(mosaic, area)
    image = torch.from_numpy(mosaic.read(area)[0])[None]
    with torch.no_grad():
        direct = torch.softmax(network(engine.normalise(image)[0]), dim=1)[0]
    torch.testing.assert_close(probabilities, direct)
    assert valid.all()


def test_blocks_cover_the_area_exactly(model):
    network, info = load_model(model)
    mosaic = Mosaic(STACK, bands=info.bands)
    engine = TiledSegmenter(network, info, tile_size=64, overlap=16, block_size=100)
    blocks = list(engine.blocks(mosaic, tuple(mosaic.index.total_bounds)))
    assert sum(b.classes.numel() for b in blocks) == 250 * 250
    assert shapely.union_all([shapely.box(*b.bounds) for b in blocks]).area == pytest.approx(7500.0 * 7500.0)
    for block in blocks:
        height, width = block.classes.shape
        assert (block.bounds[2] - block.bounds[0], block.bounds[3] - block.bounds[1]) == (width * 30.0, height * 30.0)
        torch.testing.assert_close(block.probabilities.sum(0), torch.ones(height, width))


def test_weight_window_blends_without_zeros():
    w = weight_window(64, 16)
    assert w.min() > 0 and w[16:48, 16:48].eq(1).all()
    assert w[0, 32] < w[8, 32] < w[16, 32]


def test_evaluate_counts_every_labelled_pixel_once(model, tmp_path):
    scores, info = evaluate(model, [STACK], [POLYGONS], class_column="id")
    assert np.sum(scores.confusion) == LABELLED_PIXELS
    assert [sum(row) for row in scores.confusion][1:] == [383, 16, 145, 106, 68]
    assert 0 <= scores.miou <= 1 and 0 <= scores.overall_accuracy <= 1
    # Inside a region: only the labelled pixels there.
    frame = gpd.read_file(POLYGONS)
    west = shapely.box(*frame.total_bounds).bounds
    half = shapely.box(west[0], west[1], (west[0] + west[2]) / 2, west[3])
    region = tmp_path / "west.gpkg"
    gpd.GeoDataFrame(geometry=[half], crs=frame.crs).to_file(region)
    inside, _ = evaluate(model, [STACK], [POLYGONS], class_column="id", region=str(region))
    assert 0 < np.sum(inside.confusion) < LABELLED_PIXELS


def test_evaluate_cli_writes_table_json_and_png(model, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "geosscl", "evaluate", model, STACK, "--labels", str(TUTORIAL / "training_data.gtif"),
         "--json", str(tmp_path / "m.json"), "--png", str(tmp_path / "cm.png")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mIoU" in result.stdout and "kappa" in result.stdout
    data = json.loads((tmp_path / "m.json").read_text())
    assert np.sum(data["confusion"]) == LABELLED_PIXELS
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"
    info = subprocess.run([sys.executable, "-m", "geosscl", "info", model], capture_output=True, text=True, timeout=120)
    assert json.loads(info.stdout)["bands"] == list(range(1, 9))


def test_evaluate_bad_input(model, tmp_path):
    with pytest.raises(GeossclError, match="has 4 band\\(s\\); the model reads bands 1,2,3,4,5,6,7,8"):
        evaluate(model, [str(NAIP)], [POLYGONS], class_column="id")
    not_model = tmp_path / "x.safetensors"
    not_model.write_text("nope")
    with pytest.raises(GeossclError, match="not a geosscl model file"):
        evaluate(str(not_model), [STACK], [POLYGONS], class_column="id")
