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
from conftest import ATLANTA, BUILDINGS, BUNDLED_MODEL, NAIP, NC_BANDS, S2_CHIP, S2_WATER, SAMPLES, TUTORIAL, TUTORIAL_POLYGONS, TUTORIAL_STACK, needs_bf16_cpu

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
    # The classes of the column's values 1-5, in order.
    assert info.class_values == [1, 2, 3, 4, 5] and [sum(row) for row in scores.confusion] == [383, 16, 145, 106, 68]
    assert 0 <= scores.miou <= 1 and 0 <= scores.overall_accuracy <= 1
    # Inside a region: only the labelled pixels there.
    frame = gpd.read_file(POLYGONS)
    west = shapely.box(*frame.total_bounds).bounds
    half = shapely.box(west[0], west[1], (west[0] + west[2]) / 2, west[3])
    region = tmp_path / "west.gpkg"
    gpd.GeoDataFrame(geometry=[half], crs=frame.crs).to_file(region)
    inside, _ = evaluate(model, [STACK], [POLYGONS], class_column="id", region=str(region))
    assert 0 < np.sum(inside.confusion) < LABELLED_PIXELS
    # A label area limits what is scored the same way, for vector layers and class rasters alike.
    limited, _ = evaluate(model, [STACK], [POLYGONS], class_column="id", label_area=str(region))
    assert limited.confusion == inside.confusion
    mask = str(TUTORIAL / "training_data.gtif")
    assert evaluate(model, [STACK], [mask], label_area=str(region))[0].confusion == evaluate(model, [STACK], [mask], region=str(region))[0].confusion
    assert np.sum(evaluate(model, [STACK], [mask], label_area=str(region))[0].confusion) < np.sum(evaluate(model, [STACK], [mask])[0].confusion)


def test_evaluation_runs_the_model_only_where_the_labels_are(model):
    from geosscl.evaluation import _Scene, open_truth
    from geosscl.prediction import open_scene

    # The tutorial's polygons cover 1 % of its scene; in blocks of 32 px about half hold none.
    network, info = load_model(model)
    mosaic = open_scene([STACK], info)
    scene = _Scene(mosaic, info, [POLYGONS], *open_truth(mosaic, info, [POLYGONS], "id"))
    engine = TiledSegmenter(network, info, tile_size=32, overlap=8, block_size=32)
    plan, whole = scene.plan(engine), engine.plan(mosaic, scene.area)
    assert set(plan) < set(whole) and len(plan) <= 0.6 * len(whole)
    ran = []
    scored = scene.score(engine, lambda: ran.append(1), plan)
    assert len(ran) == len(plan)
    # The blocks left out hold no label: the scores are those of every block.
    assert torch.equal(scored.counts, scene.score(engine, lambda: None, whole).counts)
    assert int(scored.counts.sum()) == LABELLED_PIXELS


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
    shown = json.loads(info.stdout)
    assert shown["bands"] == list(range(1, 9)) and shown["provenance"]["ground"]["training"]["area_km2"] > 0
    # Reading the metadata and its ground record needs neither torch nor TorchGeo (seconds to import): `info`
    # prints the same, and none of them is loaded.
    code = ("import sys; from geosscl.cli.main import cli; cli(['info', sys.argv[1]], standalone_mode=False); "
            "print(sorted(m for m in ('torch', 'torchgeo', 'lightning', 'segmentation_models_pytorch') if m in sys.modules))")
    bare = subprocess.run([sys.executable, "-c", code, model], capture_output=True, text=True, timeout=120)
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout == info.stdout + "[]\n"


def test_evaluate_progress_as_json_lines(model, tmp_path):
    """``--progress jsonl`` (the QGIS plugin reads it): a line per block of the tiled inference, then the scores."""
    result = subprocess.run(
        [sys.executable, "-m", "geosscl", "evaluate", model, STACK, "--labels", str(TUTORIAL / "training_data.gtif"),
         "--json", str(tmp_path / "m.json"), "--progress", "jsonl"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    blocks, final = lines[:-1], lines[-1]
    assert blocks == [{"done": i, "total": len(blocks)} for i in range(1, len(blocks) + 1)] and blocks
    written = json.loads((tmp_path / "m.json").read_text())
    assert {k: final[k] for k in written} == written and final["json"] == str(tmp_path / "m.json")
    assert final["table"].splitlines()[-1].startswith("mIoU ") and np.sum(final["confusion"]) == LABELLED_PIXELS


def test_imagery_in_another_crs_than_the_models(model, tmp_path):
    """The tutorial stack (UTM, where the model was made) warped to EPSG:4326: scored on its own grid in degrees, at
    the model's GSD in metres. It was read at the model's resolution in the imagery's units (30 degrees a pixel):
    nothing was scored and the scores came out empty, with status 0."""
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    warped = tmp_path / "stack_4326.tif"
    with rasterio.open(STACK) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        with rasterio.open(warped, "w", **{**src.profile, "crs": "EPSG:4326", "transform": transform, "width": width,
                                           "height": height}) as dst:
            for band in range(1, src.count + 1):
                reproject(rasterio.band(src, band), rasterio.band(dst, band), resampling=Resampling.nearest)
    scores, _ = evaluate(model, [str(warped)], [POLYGONS], class_column="id")
    # The polygons burnt on the 4326 grid (pixels of about 30 x 31 m at 17 N): about as many pixels as on UTM's.
    assert 0.85 * LABELLED_PIXELS < np.sum(scores.confusion) < 1.15 * LABELLED_PIXELS
    # The model's training and validation regions, warped from UTM too, hold them all.
    assert scores.ground["trained"] > 0 and scores.ground["validated"] > 0 and scores.ground["held_out"] == 0
    assert scores.overall_accuracy == scores.overall_accuracy  # a number, not NaN


def test_evaluation_counts_the_labels_the_model_was_trained_and_validated_on(model, tmp_path, caplog):
    """Scored on its own labels, a fine-tuned model scores labels it learnt from: the model file records its
    training and validation regions, and evaluation counts the scored pixels in each and says so."""
    import logging

    import rasterio
    import rasterio.features

    from geosscl.ground import model_ground
    from geosscl.modelfile import read_info

    ground = model_ground(read_info(model))
    assert ground.training.area > 0 and ground.validation.area > 0
    assert ground.training.intersection(ground.validation).area < 30 * 30 / 2  # not a pixel in both
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        scores, _ = evaluate(model, [STACK], [POLYGONS], class_column="id")
    # The reference: the tutorial's class raster (the same polygons on the same grid), each region burnt whole.
    with rasterio.open(TUTORIAL / "training_data.gtif") as src:
        labelled, shape, transform = src.read(1) != src.nodata, src.shape, src.transform
    inside = {name: ~rasterio.features.geometry_mask([region], shape, transform)
              for name, region in (("trained", ground.training), ("validated", ground.validation))}
    expected = {name: int((labelled & where).sum()) for name, where in inside.items()}
    assert scores.ground == {**expected, "held_out": 0} and min(expected.values()) > 0
    assert sum(expected.values()) == LABELLED_PIXELS
    trained = f"{100 * expected['trained'] / LABELLED_PIXELS:.1f} %"
    assert [r.getMessage() for r in caplog.records] == [
        f"{model}: of the {LABELLED_PIXELS} labelled pixels scored, {trained} lie where the model was trained and "
        f"{100 - float(trained[:-2]):.1f} % where it was validated: these scores are not of held-out ground; no "
        "label here lies elsewhere (fine-tune with --holdout-region to keep a test region)"]
    with pytest.raises(GeossclError, match="^.*training_data.shp: every label here lies where the model was trained "
                                           "or validated; nothing is held out"):
        evaluate(model, [STACK], [POLYGONS], class_column="id", held_out=True)


def test_held_out_scores_only_the_labels_a_model_never_met(tmp_path, caplog):
    """A model fine-tuned with a holdout region (the west half of the tutorial's labels): ``held_out`` scores
    exactly the labels of that region, and scores there carry no warning."""
    import logging

    frame = gpd.read_file(POLYGONS)
    x0, y0, x1, y1 = frame.total_bounds
    west = tmp_path / "west.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(x0, y0, (x0 + x1) / 2, y1)], crs=frame.crs).to_file(west)
    made = finetune(FinetuneConfig(imagery=[STACK], labels=[POLYGONS], class_column="id", out=str(tmp_path / "m.safetensors"),
                                   crop_size=32, batch_size=8, max_steps=4, num_workers=0, holdout_region=str(west),
                                   quiet=True))
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        inside, _ = evaluate(made, [STACK], [POLYGONS], class_column="id", region=str(west))
    assert not caplog.records
    held_out, _ = evaluate(made, [STACK], [POLYGONS], class_column="id", held_out=True)
    assert held_out.confusion == inside.confusion and 0 < np.sum(inside.confusion) < LABELLED_PIXELS
    assert held_out.ground == inside.ground == {"trained": 0, "validated": 0, "held_out": int(np.sum(inside.confusion))}
    everywhere, _ = evaluate(made, [STACK], [POLYGONS], class_column="id")
    assert everywhere.ground["held_out"] == np.sum(inside.confusion)
    assert sum(everywhere.ground.values()) == LABELLED_PIXELS and "trained" in caplog.text
    # Per date too: the second date of the tutorial's place holds the same labels, the same ground.
    from geosscl.evaluation import evaluate_each_date

    dates = [str(p) for p in sorted(TUTORIAL.glob("*_stack.gtif"))]
    pooled, each, _ = evaluate_each_date(made, dates, [POLYGONS], class_column="id", held_out=True)
    assert pooled.ground["held_out"] == 2 * np.sum(inside.confusion) and len(each) == 2


def test_held_out_through_the_cli(model, tmp_path):
    """The warning as one stderr line; --held-out with nothing held out, or with a model file that does not
    record its ground (the bundled one predates it), is a one-line error that writes nothing."""
    def geosscl(*args):
        return subprocess.run([sys.executable, "-m", "geosscl", "evaluate", *map(str, args)], capture_output=True,
                              text=True, timeout=300)

    scores = tmp_path / "scores.json"
    scored = geosscl(model, STACK, "--labels", POLYGONS, "--class-column", "id", "--json", scores, "-q")
    assert scored.returncode == 0 and scored.stderr == ""  # -q: errors only
    scored = geosscl(model, STACK, "--labels", POLYGONS, "--class-column", "id", "--json", scores)
    warnings = [line for line in scored.stderr.splitlines() if line.startswith("WARNING: ")]
    assert scored.returncode == 0 and len(warnings) == 1 and "lie where the model was trained" in warnings[0]
    assert sum(json.loads(scores.read_text())["ground"].values()) == LABELLED_PIXELS
    scores.unlink()
    refused = geosscl(model, STACK, "--labels", POLYGONS, "--class-column", "id", "--held-out", "--json", scores)
    assert refused.returncode == 1 and not scores.exists()
    assert refused.stderr.strip().splitlines() == [f"Error: {POLYGONS}: every label here lies where the model was "
                                                   "trained or validated; nothing is held out (fine-tune with "
                                                   "--holdout-region to keep a test region)"]
    bundled = geosscl(BUNDLED_MODEL, *NC_BANDS, "--labels", SAMPLES / "nc_landsat" / "strata.tif", "--held-out")
    assert bundled.returncode == 1 and bundled.stderr.strip().splitlines() == [
        f"Error: {BUNDLED_MODEL}: the model file does not record where it was trained (made by another program, or "
        "before geosscl recorded it), so --held-out cannot tell; give --region instead"]


@pytest.mark.parametrize("damage", ["cut", "dropped"])
def test_a_damaged_ground_record_is_a_one_line_error(model, tmp_path, damage):
    """A model file whose ground record was edited (its text cut short, or a region removed) stops evaluate,
    info and finetune --init with one line naming the file; finetune before it trains."""
    from geosscl.modelfile import save_model

    network, info = load_model(model)
    ground = dict(info.provenance["ground"])
    if damage == "cut":
        ground["training"] = ground["training"][:-12]
    else:
        del ground["validation"]
    info.provenance["ground"] = ground
    damaged = tmp_path / "damaged.safetensors"
    save_model(damaged, network, info)
    why = ("Error -5 while decompressing data: incomplete or truncated stream" if damage == "cut"
           else "no validation region")
    expected = [f"Error: {damaged}: its record of the ground it was trained on is damaged ({why}); fine-tune it "
                "again, or remove the provenance's 'ground' entry"]
    out = tmp_path / "out"
    out.mkdir()
    for args in (["evaluate", damaged, STACK, "--labels", POLYGONS, "--class-column", "id", "--json", out / "s.json"],
                 ["info", damaged],
                 ["finetune", STACK, "--labels", POLYGONS, "--class-column", "id", "--init", damaged, "--out",
                  out / "m.safetensors", "--crop-size", "64", "--max-steps", "2"]):
        result = subprocess.run([sys.executable, "-m", "geosscl", *map(str, args)], capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 1 and result.stdout.strip() == "", (args[0], result.stdout[-500:])
        assert result.stderr.strip().splitlines() == expected, (args[0], result.stderr[-2000:])
        assert not any(out.iterdir())


def test_no_labelled_pixel_is_an_error(model, tmp_path):
    import rasterio

    with rasterio.open(TUTORIAL / "training_data.gtif") as src:
        profile, shape = src.profile, src.shape
    empty = tmp_path / "unlabelled.tif"
    with rasterio.open(empty, "w", **profile) as dst:
        dst.write(np.zeros(shape, dtype=profile["dtype"]), 1)  # 0 is the file's nodata
    with pytest.raises(GeossclError, match=f"^{empty}: no labelled pixel where the model has input$"):
        evaluate(model, [STACK], [str(empty)])


def test_a_background_named_in_a_column_of_values_is_its_value(tmp_path):
    """Land-use polygons whose column holds the classes' values (GRASS codes 1-7), as the bundled model's
    classes are valued: ``--background-class forest`` is value 5, the same as ``--background-class 5``.
    It was read as the fifth value, 4 (shrubland), and scored the ground as the wrong class."""
    import rasterio
    import rasterio.features
    import rasterio.windows

    with rasterio.open(SAMPLES / "nc_landsat" / "strata.tif") as src:
        window = rasterio.windows.Window(300, 100, 120, 120)
        strata, transform, crs = src.read(1, window=window), src.window_transform(window), src.crs
        box = shapely.box(*rasterio.windows.bounds(window, src.transform))
    outlined = (strata == 1) | (strata == 6)  # developed and water; the rest of the box is mostly forest
    shapes = [(shapely.geometry.shape(g), int(v)) for g, v in rasterio.features.shapes(strata, mask=outlined, transform=transform)]
    layer, area = tmp_path / "developed_and_water.gpkg", tmp_path / "area.gpkg"
    gpd.GeoDataFrame({"code": [v for _, v in shapes]}, geometry=[g for g, _ in shapes], crs=crs).to_file(layer)
    gpd.GeoDataFrame(geometry=[box], crs=crs).to_file(area)
    imagery = [str(p) for p in NC_BANDS]
    by_name, info = evaluate(str(BUNDLED_MODEL), imagery, [str(layer)], class_column="code", background_class="forest",
                             label_area=str(area))
    by_value, _ = evaluate(str(BUNDLED_MODEL), imagery, [str(layer)], class_column="code", background_class="5",
                           label_area=str(area))
    assert info.class_names[4] == "forest" and info.class_values[4] == 5
    np.testing.assert_array_equal(by_name.confusion, by_value.confusion)
    rows = np.asarray(by_name.confusion).sum(axis=1)
    assert rows[4] == (~outlined).sum() and rows[0] == (strata == 1).sum() and rows[3] == 0


@needs_bf16_cpu
def test_bf16_scores_the_same_pixels_about_as_float32_does(tmp_path):
    """The bundled NC model on its land-use labels: ``--precision bf16`` scores every pixel float32 scores, and
    changes the scores by little (measured: mIoU 0.3907 and 0.3906)."""
    imagery, labels = [str(p) for p in NC_BANDS], [str(SAMPLES / "nc_landsat" / "strata.tif")]
    full, _ = evaluate(str(BUNDLED_MODEL), imagery, labels, device="cpu")
    result = subprocess.run([sys.executable, "-m", "geosscl", "evaluate", str(BUNDLED_MODEL), *imagery, "--labels",
                             *labels, "--precision", "bf16", "--device", "cpu", "--json", str(tmp_path / "bf16.json"),
                             "-q"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    half = json.loads((tmp_path / "bf16.json").read_text())
    assert np.sum(half["confusion"]) == np.sum(full.confusion) > 100_000
    assert abs(half["miou"] - full.miou) < 0.005 and abs(half["overall_accuracy"] - full.overall_accuracy) < 0.005
    assert np.abs(np.subtract(half["confusion"], full.confusion)).sum() < 0.01 * np.sum(full.confusion)


def test_evaluate_bad_input(model, tmp_path):
    with pytest.raises(GeossclError, match="has 4 band\\(s\\); the model reads bands 1,2,3,4,5,6,7,8"):
        evaluate(model, [str(NAIP)], [POLYGONS], class_column="id")
    not_model = tmp_path / "x.safetensors"
    not_model.write_text("nope")
    with pytest.raises(GeossclError, match="not a geosscl model file"):
        evaluate(str(not_model), [STACK], [POLYGONS], class_column="id")
    with pytest.raises(GeossclError, match="^precision: 'half' is not one of 32, bf16$"):
        evaluate(model, [STACK], [POLYGONS], class_column="id", precision="half")


def test_labels_with_an_undeclared_unlabelled_value_through_the_cli(tmp_path):
    """Sen1Floods11's water mask: -1 = unlabelled, not declared as the file's nodata."""
    out, scores = tmp_path / "water.safetensors", tmp_path / "scores.json"

    def geosscl(*args):
        return subprocess.run([sys.executable, "-m", "geosscl", *map(str, args)], capture_output=True, text=True,
                              timeout=300)

    common = ["--crop-size", "64", "--batch-size", "8", "--max-steps", "3", "--num-workers", "0", "-q"]
    refused = geosscl("finetune", S2_CHIP, "--labels", S2_WATER, "--out", out, *common)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        f"Error: {S2_WATER}: value(s) -1 are not class ids (class ids are 0 or more); "
        "if -1 means unlabelled, pass --label-nodata -1")
    assert not out.exists()

    made = geosscl("finetune", S2_CHIP, "--labels", S2_WATER, "--label-nodata", "-1", "--out", out, *common)
    assert made.returncode == 0, made.stderr[-2000:]
    info = load_model(str(out))[1]
    assert info.class_names == ["class 0", "class 1"]
    assert info.provenance["settings"]["label_nodata"] == -1

    assert geosscl("evaluate", out, S2_CHIP, "--labels", S2_WATER, "--json", scores).returncode == 1
    assert not scores.exists()
    scored = geosscl("evaluate", out, S2_CHIP, "--labels", S2_WATER, "--label-nodata", "-1", "--json", scores)
    assert scored.returncode == 0, scored.stderr[-2000:]
    # Every dry and water pixel of the file once, none of its 99 unlabelled ones.
    confusion = json.loads(scores.read_text())["confusion"]
    assert [sum(row) for row in confusion] == [192010, 70035]

    # The same labels with 255 for unlabelled (uint8): refused with the option to pass; then scored alike.
    import rasterio

    with rasterio.open(S2_WATER) as src:
        coded = tmp_path / "water255.tif"
        profile = dict(src.profile, dtype="uint8")
        with rasterio.open(coded, "w", **profile) as dst:
            dst.write(np.where(src.read(1) == -1, 255, src.read(1)).astype(np.uint8), 1)
    with pytest.raises(GeossclError, match=r"water255\.tif: class id 255 is outside the model's 2 classes; "
                                           r"if 255 means unlabelled, pass --label-nodata 255$"):
        evaluate(str(out), [str(S2_CHIP)], [str(coded)])
    assert evaluate(str(out), [str(S2_CHIP)], [str(coded)], label_nodata=255)[0].confusion == confusion

    # probe reads them the same way: water is plain in Sentinel-2's bands, so even 5 % of the labels separate it.
    probe = tmp_path / "probe.json"
    probed = geosscl("probe", S2_CHIP, "--labels", S2_WATER, "--label-nodata", "-1", "--bands-only", "--crop-size", "64",
                     "--label-fraction", "0.05", "--json", probe, "-q")
    assert probed.returncode == 0, probed.stderr[-2000:]
    assert json.loads(probe.read_text())["miou"] > 0.8


def test_vector_labels_default_to_the_column_the_model_learnt_from(tmp_path, caplog):
    """A model fine-tuned on the tutorial's polygons by their names (column ``class``) records that column;
    evaluate and further fine-tuning read the same layer without --class-column. A layer holding two of the
    five names still maps them to the model's ids (sorted alone they would be 0 and 1)."""
    made = finetune(FinetuneConfig(imagery=[STACK], labels=[POLYGONS], class_column="class",
                                   out=str(tmp_path / "names.safetensors"), crop_size=64, batch_size=8, max_steps=3,
                                   num_workers=0, quiet=True))
    info = load_model(made)[1]
    assert info.class_column == "class" and info.class_names == ["barren", "forest", "herbaceous", "urban", "water"]

    frame = gpd.read_file(POLYGONS)
    two = frame[frame["class"].isin(["urban", "water"])]
    layer = tmp_path / "urban_and_water.gpkg"
    two.to_file(layer)
    with caplog.at_level("INFO", logger="geosscl"):
        defaulted, _ = evaluate(made, [STACK], [str(layer)])
    assert "classes read from its column 'class', the one the model's labels came from" in caplog.text
    given, _ = evaluate(made, [STACK], [str(layer)], class_column="class")
    np.testing.assert_array_equal(defaulted.confusion, given.confusion)
    rows = np.asarray(defaulted.confusion).sum(axis=1)
    assert rows[3] > 0 and rows[4] > 0 and rows[:3].sum() == 0

    renamed = tmp_path / "renamed.gpkg"
    two.rename(columns={"class": "landcover"}).to_file(renamed)
    with pytest.raises(GeossclError, match=f"^{renamed}: vector labels need --class-column, the column of each "
                                           "polygon's class; the model's labels came from a column 'class'; "
                                           "the layer has id, landcover$"):
        evaluate(made, [STACK], [str(renamed)])

    further = finetune(FinetuneConfig(imagery=[STACK], labels=[str(layer)], init=made, out=str(tmp_path / "m2.safetensors"),
                                      crop_size=64, batch_size=8, max_steps=1, num_workers=0, quiet=True))
    assert load_model(further)[1].class_column == "class"


def test_no_background_class_leaves_the_ground_between_polygons_unscored(tmp_path):
    """A model of footprints has a background class, which evaluate takes for the pixels outside a layer's
    polygons; --no-background-class scores the polygons alone (sparse polygons of every class)."""
    from geosscl.data import RasterLabels, open_labels
    from geosscl.probing import linear_probe

    probe = tmp_path / "footprints.safetensors"
    linear_probe(FinetuneConfig(imagery=[str(ATLANTA)], labels=[str(BUILDINGS)], class_column="class",
                                background_class="background", class_weights="auto", crop_size=64, out=str(probe)),
                 features="bands")
    scores = tmp_path / "scores.json"

    def rows(*options):
        run = subprocess.run([sys.executable, "-m", "geosscl", "evaluate", probe, ATLANTA, "--labels", BUILDINGS,
                              "--json", scores, "-q", *options], capture_output=True, text=True,
                             timeout=300)
        return run, [sum(row) for row in json.loads(scores.read_text())["confusion"]] if run.returncode == 0 else None

    run, everything = rows()
    assert run.returncode == 0, run.stderr[-2000:]
    assert sum(everything) == 900 * 900 and 0 < everything[1] < 0.1 * everything[0]
    run, polygons = rows("--no-background-class")
    assert run.returncode == 0, run.stderr[-2000:]
    assert polygons == [0, everything[1]]
    by_python, _ = evaluate(str(probe), [str(ATLANTA)], [str(BUILDINGS)], background_class="")
    assert [sum(row) for row in by_python.confusion] == polygons

    for options in (["--no-background-class", "--background-class", "background"],
                    ["--background-class", "background", "--no-background-class"]):
        run, _ = rows(*options)
        assert run.returncode == 2
        assert run.stderr.strip().splitlines()[-1] == "Error: --background-class and --no-background-class: give one of them"
    # A class raster holds its background itself: "none" asks nothing of it.
    labels, ids = open_labels([str(SAMPLES / "nc_landsat" / "strata.tif")], background="")
    assert isinstance(labels, RasterLabels) and ids == set(range(1, 8))
