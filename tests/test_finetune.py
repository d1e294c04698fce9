"""Few-label fine-tuning on real labelled imagery, the model file, and segmentation metrics."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
from importlib import metadata

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import pytest
import shapely
import torch
from safetensors.torch import save_file

from geosscl import GeossclError
from geosscl.finetuning import FinetuneConfig, balanced_weights, finetune, load_init, prepare
from geosscl.metrics import ConfusionMatrix
from geosscl.modelfile import load_model, read_info, save_model
from geosscl.precision import cpu_has_bfloat16
from geosscl.tasks import SegmentationTask, SSCCLTask
from geosscl.training import PretrainConfig, load_checkpoint, pretrain
from conftest import ATLANTA, BUILDINGS, NAIP, NC_BANDS, S2_CHIP, S2_WATER, SAMPLES, TUTORIAL, TUTORIAL_POLYGONS, TUTORIAL_STACK, needs_bf16_cpu, run_distributed, write_raster

STACK, POLYGONS = str(TUTORIAL_STACK), str(TUTORIAL_POLYGONS)
FAST = dict(crop_size=64, batch_size=8, num_workers=0, quiet=True)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> str:
    # Dense features at stride 4 (not the default 16): three decoder blocks pretrained, two not.
    run = pretrain(PretrainConfig(imagery=[STACK], out=str(tmp_path_factory.mktemp("ssccl") / "run"), max_steps=3,
                                  queue_size=32, dense_stride=4, **FAST))
    return os.path.join(run, "last.ckpt")


def test_finetune_writes_a_self_describing_model(tmp_path, pretrained, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory but what was asked
    classes = tmp_path / "classes.yaml"
    classes.write_text("1: {name: forest, color: [0, 100, 0]}\n2: water\n3: herbaceous\n4: barren\n5: urban\n")
    out = tmp_path / "model.safetensors"
    finetune(FinetuneConfig(imagery=[STACK], labels=[POLYGONS], class_column="id", classes=str(classes), out=str(out),
                            init=pretrained, max_steps=20, val_fraction=0.3, **FAST))
    network, info = load_model(out)
    assert info.class_names == ["forest", "water", "herbaceous", "barren", "urban"]  # the classes listed
    assert info.class_values == [1, 2, 3, 4, 5] and info.class_colors[0] == [0, 100, 0]
    assert info.bands == list(range(1, 9)) and info.res == [30.0, 30.0]
    assert info.provenance["init"] == pretrained and info.provenance["steps"] == 20
    # A seed reproduces a run only with the same libraries: the model and its checkpoint name the installed ones.
    installed = {"kornia": metadata.version("kornia"), "torch": metadata.version("torch"), "gdal": rasterio.__gdal_version__}
    assert installed.items() <= info.provenance["software"].items()
    assert installed.items() <= load_checkpoint(pretrained)["geosscl"]["software"].items()
    assert (info.tile_size, info.tile_overlap) == (64, 16)  # predicts on what it was trained and validated on
    # Validated every 4 of the 20 steps; the weights kept are those of the best validation.
    validation = info.provenance["validation"]
    assert len(validation["history"]) == 5 and all(0 <= m <= 1 for m in validation["history"])
    assert validation["miou"] == pytest.approx(max(validation["history"]), abs=1e-6)
    with torch.no_grad():
        logits = network(torch.zeros(1, 8, 64, 64))
    assert logits.shape == (1, 5, 64, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.yaml", "model.safetensors"]  # no checkpoint, no temporary


def test_fine_tuning_starts_from_the_checkpoint_weights(pretrained):
    checkpoint = load_checkpoint(pretrained)
    hp = checkpoint["hyper_parameters"]
    ssccl = SSCCLTask(**hp)
    ssccl.load_state_dict(checkpoint["state_dict"])
    task = SegmentationTask(8, 6, hp["band_mean"], hp["band_std"])
    copied = task.load_pretrained(checkpoint["state_dict"], hp)
    assert copied > 100
    # Trained to stride 4: the encoder and the first three decoder blocks, not the finer ones or the head.
    blocks = {name.split(".")[2] for name in task.pretrained if name.startswith("decoder.blocks.")}
    assert blocks == {"0", "1", "2"}
    assert any(name.startswith("encoder.") for name in task.pretrained)
    assert not any(name.startswith("segmentation_head") for name in task.pretrained)
    x = torch.randn(2, 8, 64, 64)
    ssccl.eval(), task.eval()
    with torch.no_grad():
        torch.testing.assert_close(task.network.encode(x)[-1], ssccl.network.encode(x)[-1])
        torch.testing.assert_close(task.network.decode(task.network.encode(x), 4), ssccl.network.decode(ssccl.network.encode(x), 4))
    fresh = SegmentationTask(8, 6, hp["band_mean"], hp["band_std"]).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh.network.encode(x)[-1], ssccl.network.encode(x)[-1])


def test_a_model_file_fine_tunes_further_from_its_weights(tmp_path, caplog):
    """More labels, or another place: a finetune model is the start of the next run, head included."""
    first = tmp_path / "first.safetensors"
    finetune(FinetuneConfig(imagery=[STACK], labels=[POLYGONS], class_column="class", out=str(first), max_steps=3,
                            val_fraction=0.3, **FAST))
    network, info = load_model(first)
    again = FinetuneConfig(imagery=[STACK], labels=[POLYGONS], class_column="class", init=str(first), val_fraction=0.3,
                           **FAST)
    setup = prepare(again)
    assert setup.init_model.keep_head and setup.class_names == info.class_names and setup.class_colors == info.class_colors
    assert setup.band_mean == info.band_mean and (setup.arch, setup.encoder) == (info.arch, info.encoder)
    task = SegmentationTask(8, setup.num_classes, setup.band_mean, setup.band_std)
    load_init(task, setup)
    assert any(name.startswith("segmentation_head") for name in task.pretrained)
    x = torch.randn(2, 8, 64, 64)
    task.eval()
    with torch.no_grad():
        torch.testing.assert_close(task.network(x), network(x), rtol=0, atol=0)  # the first batch's logits
    # At a pretrained-layer rate of 0 nothing it learnt moves, head included: every layer counts as trained.
    frozen = tmp_path / "frozen.safetensors"
    finetune(FinetuneConfig(**{**again.__dict__, "out": str(frozen), "max_steps": 3, "pretrained_lr_factor": 0.0}))
    kept, kept_info = load_model(frozen)
    for name in ("net.encoder.conv1.weight", "net.decoder.blocks.4.conv2.0.weight", "net.segmentation_head.0.weight"):
        assert torch.equal(kept.state_dict()[name], network.state_dict()[name]), name
    assert kept_info.provenance["init"] == str(first) and kept_info.class_names == info.class_names
    # It carries the labels the first model learnt from: the first's validation blocks (this run's too, the
    # same seed) count as ground it was trained on, for evaluation to tell apart.
    from geosscl.ground import model_ground

    before, after = model_ground(info), model_ground(kept_info)
    assert before.validation.area > 0 and after.validation.area < 30 * 30 / 2
    assert before.seen.symmetric_difference(after.training).area < 30 * 30 / 2
    # Other classes: the rest carries over, the head starts anew, and the log says so.
    other = tmp_path / "other.yaml"
    other.write_text("[nothing, forest, water, herbaceous, barren, urban]\n")
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        moved = tmp_path / "moved.safetensors"
        finetune(FinetuneConfig(**{**again.__dict__, "out": str(moved), "max_steps": 1, "classes": str(other),
                                   "class_column": "id"}))
    assert "its segmentation head starts anew" in caplog.text
    assert load_model(moved)[1].class_names == ["nothing", "forest", "water", "herbaceous", "barren", "urban"]
    # What cannot be fine-tuned further, before anything is written.
    nc = [str(p) for p in NC_BANDS]
    probe_model = tmp_path / "probe.safetensors"
    from geosscl.probing import linear_probe
    linear_probe(FinetuneConfig(imagery=[STACK], labels=[POLYGONS], class_column="class", out=str(probe_model),
                                val_fraction=0, **FAST), stages=[1], weight_decay=1e-3)
    for init, message in ((probe_model, "a hypercolumn model .* cannot be fine-tuned; give a model made by geosscl finetune"),
                          (tmp_path / "first.onnx", "an ONNX export cannot be fine-tuned"),
                          (first, "the model reads 8 bands, the imagery has 6")):
        out = tmp_path / "never.safetensors"
        with pytest.raises(GeossclError, match=f"{re.escape(str(init))}: {message}"):
            finetune(FinetuneConfig(imagery=nc if init == first else [STACK], labels=[POLYGONS], class_column="class",
                                    init=str(init), out=str(out), max_steps=1, **FAST))
        assert not out.exists()


def test_instance_only_runs_count_their_encoder_only_as_pretrained(tmp_path):
    run = pretrain(PretrainConfig(imagery=[STACK], out=str(tmp_path / "run"), max_steps=1, queue_size=32,
                                  weights={"instance": 1, "spatial": 0, "semantic": 0}, **FAST))
    checkpoint = load_checkpoint(os.path.join(run, "last.ckpt"))
    hp = checkpoint["hyper_parameters"]
    task = SegmentationTask(8, 6, hp["band_mean"], hp["band_std"])
    task.load_pretrained(checkpoint["state_dict"], hp)
    assert task.pretrained and all(name.startswith("encoder.") for name in task.pretrained)


def test_pretrained_layers_train_at_their_own_rate(tmp_path, pretrained):
    state = load_checkpoint(pretrained)["state_dict"]
    moved = {}
    for factor in (0.0, 1.0):
        out = tmp_path / f"factor{factor:g}.safetensors"
        finetune(FinetuneConfig(imagery=[STACK], labels=[POLYGONS], class_column="id", out=str(out), init=pretrained,
                                pretrained_lr_factor=factor, max_steps=3, val_fraction=0.3, **FAST))
        network, info = load_model(out)
        assert info.provenance["settings"]["pretrained_lr_factor"] == factor
        weights = dict(network.net.named_parameters())
        moved[factor] = {name for name in ("encoder.conv1.weight", "decoder.blocks.2.conv2.0.weight")
                         if not torch.equal(weights[name], state["network.net." + name])}
        # The layers the run never trained are new: they learn at the full rate either way.
        assert not torch.equal(weights["decoder.blocks.3.conv1.0.weight"], state["network.net.decoder.blocks.3.conv1.0.weight"])
    assert moved == {0.0: set(), 1.0: {"encoder.conv1.weight", "decoder.blocks.2.conv2.0.weight"}}


def test_learning_rates_warm_up_linearly(pretrained):
    checkpoint = load_checkpoint(pretrained)
    hp = checkpoint["hyper_parameters"]
    task = SegmentationTask(8, 6, hp["band_mean"], hp["band_std"], lr=1e-3, pretrained_lr_factor=0.1, warmup_steps=4)
    task.load_pretrained(checkpoint["state_dict"], hp)
    configured = task.configure_optimizers()
    optimizer, ramp = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "step"
    seen = []
    for _ in range(6):
        seen.append([round(group["lr"], 8) for group in optimizer.param_groups])
        optimizer.step(), ramp.step()
    assert seen == [[2.5e-4, 2.5e-5], [5e-4, 5e-5], [7.5e-4, 7.5e-5], [1e-3, 1e-4], [1e-3, 1e-4], [1e-3, 1e-4]]


#: bf16 where this CPU runs it (elsewhere it is refused: tests/test_predict.py).
PRECISION = "bf16" if cpu_has_bfloat16() else "32"


def test_raster_labels_and_cli(tmp_path):
    out = tmp_path / "model.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "geosscl", "finetune", STACK, "--labels", str(TUTORIAL / "training_data.gtif"),
         "--out", str(out), "--crop-size", "64", "--batch-size", "8", "--max-steps", "4", "--num-workers", "0",
         "--val-label-fraction", "0.3", "--precision", PRECISION],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # Lightning's own lines stay (devices, the model's summary); its advertisement for a cloud service does not.
    assert "GPU available" in result.stdout + result.stderr and "litlogger" not in result.stdout + result.stderr
    # The last line: the model file and the validation score that chose its weights.
    validation = read_info(out).provenance["validation"]
    history = validation["history"]
    last = f"; the last scored {100 * history[-1]:.1f}" if f"{100 * history[-1]:.1f}" != f"{100 * validation['miou']:.1f}" else ""
    assert len(history) == 4 and validation["miou"] == max(history)  # one validation a step, of 4 steps
    assert result.stdout.splitlines()[-1] == (f"wrote {out} (validation mIoU {100 * validation['miou']:.1f}, "
                                              f"OA {100 * validation['overall_accuracy']:.1f}, the best of 4 "
                                              f"validations{last})")
    info = read_info(out)
    # training_data.gtif: 0 is its nodata, so the values 1..5 it holds are the classes.
    assert info.class_names == [f"class {v}" for v in range(1, 6)] and info.class_values == [1, 2, 3, 4, 5]
    # 0.3 of the validation blocks is one partial block, 45 px a side: narrower than a crop, TorchGeo's grid
    # yielded no crop over it (the run ended in an IndexError); it is validated on a crop around it.
    assert info.provenance["val_label_fraction"] == 0.3 and info.provenance["settings"]["precision"] == PRECISION
    assert len(info.provenance["validation"]["history"]) == 4 and info.provenance["validation"]["overall_accuracy"] > 0


def test_class_raster_colour_table_colours_the_classes(tmp_path):
    """A class raster's colour table (land-cover products carry their legend there) colours the model's classes;
    a classes file still decides when given, and ids without a colour (transparent: GDAL's filler) keep the
    default colours."""
    with rasterio.open(TUTORIAL / "training_data.gtif") as src:
        ids, profile = src.read(1), src.profile
    table = {1: (200, 0, 0, 255), 2: (0, 150, 0, 255), 3: (0, 0, 220, 255), 4: (90, 60, 30, 255), 5: (250, 250, 0, 255)}
    coloured = tmp_path / "coloured.tif"
    with rasterio.open(coloured, "w", **profile) as dst:
        dst.write(ids, 1)
        dst.write_colormap(1, table)
    config = FinetuneConfig(imagery=[STACK], labels=[str(coloured)], out=str(tmp_path / "m.safetensors"),
                            crop_size=64)
    setup = prepare(config)
    plain = prepare(FinetuneConfig(imagery=[STACK], labels=[str(TUTORIAL / "training_data.gtif")],
                                   out=str(tmp_path / "p.safetensors"), crop_size=64))
    assert setup.class_names == plain.class_names == [f"class {i}" for i in range(1, 6)]
    assert setup.class_colors == [[200, 0, 0], [0, 150, 0], [0, 0, 220], [90, 60, 30], [250, 250, 0]]
    classes = tmp_path / "classes.yaml"
    classes.write_text("1: {name: water, color: [1, 2, 3]}\n2: b\n3: c\n4: d\n5: cloud\n")
    named = prepare(FinetuneConfig(imagery=[STACK], labels=[str(coloured)], classes=str(classes),
                                   out=str(tmp_path / "n.safetensors"), crop_size=64))
    assert named.class_names[0] == "water" and named.class_colors[0] == [1, 2, 3]
    # Values the classes file colours not: the raster's colour table does not colour them either.
    assert named.class_colors[1] == [255, 127, 14]


def test_progress_as_json_lines_for_programs(tmp_path):
    """``--progress jsonl`` (the QGIS plugin reads it): one line per step, then the model file."""
    def run(out, *limit):
        result = subprocess.run(
            [sys.executable, "-m", "geosscl", "finetune", STACK, "--labels", str(TUTORIAL_POLYGONS), "--class-column",
             "class", "--out", str(out), "--crop-size", "64", "--batch-size", "4", *limit, "--num-workers", "0",
             "--progress", "jsonl"],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return [json.loads(line) for line in result.stdout.splitlines()]

    lines = run(tmp_path / "steps.safetensors", "--max-steps", "3")
    assert lines == [{"done": 1, "total": 3}, {"done": 2, "total": 3}, {"done": 3, "total": 3},
                     {"output": str(tmp_path / "steps.safetensors")}]
    assert read_info(tmp_path / "steps.safetensors").provenance["steps"] == 3
    # 9 seconds: a loaded CI machine took over 3 for the first step (one progress line, where two are asked)
    lines = run(tmp_path / "time.safetensors", "--max-time", "0.15")
    assert lines[-1] == {"output": str(tmp_path / "time.safetensors")} and len(lines) > 2
    done = [line["done"] for line in lines[:-1]]
    assert {line["total"] for line in lines[:-1]} == {9} and done == sorted(done) and 0 <= done[0] and done[-1] <= 9


def test_sigterm_stops_fine_tuning_with_an_error_and_no_model(tmp_path):
    """Lightning ends fit() on SIGTERM with a SystemExit of status 0: the CLI must not pass that off as success."""
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "geosscl", "finetune", STACK, "--labels", str(TUTORIAL_POLYGONS), "--class-column", "class",
         "--out", str(out / "m.safetensors"), "--crop-size", "64", "--batch-size", "4", "--max-steps", "10000",
         "--num-workers", "0", "--progress", "jsonl"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert json.loads(process.stdout.readline())["done"] == 1  # training has started
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert re.search(r"^Error: .*m\.safetensors: stopped by SIGTERM at step \d+; no model written$", stderr, re.M), stderr[-2000:]
    assert list(out.iterdir()) == []


def test_building_footprints_with_a_background_class(tmp_path):
    # Footprints outline buildings only: with --background-class every other pixel of the imagery
    # trains and scores as "background"; without it, only building pixels would.
    out, scores = tmp_path / "buildings.safetensors", tmp_path / "scores.json"
    common = ["--labels", str(BUILDINGS), "--class-column", "class", "--background-class", "background"]
    result = subprocess.run(
        [sys.executable, "-m", "geosscl", "finetune", str(ATLANTA), *common, "--out", str(out), "--crop-size", "64",
         "--batch-size", "8", "--max-steps", "3", "--num-workers", "0", "--label-fraction", "0.1", "--class-weights", "auto", "-q"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    info = read_info(out)
    assert info.class_names == ["background", "building"] and info.background_class == "background"
    assert info.provenance["settings"]["background_class"] == "background"
    # Median-frequency balancing of two classes: w_c = 0.5 / share_c, so 1/w0 + 1/w1 = 2; buildings are rare.
    w0, w1 = info.provenance["class_weights"]
    assert 1 / w0 + 1 / w1 == pytest.approx(2, rel=1e-4) and w1 > 5 > 1 > w0
    result = subprocess.run([sys.executable, "-m", "geosscl", "evaluate", str(out), str(ATLANTA), *common,
                             "--json", str(scores), "-q"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    matrix = np.array(json.loads(scores.read_text())["confusion"])
    assert matrix.sum() == 900 * 900 and matrix[1].sum() == 33_818  # every pixel; the buildings' (test_labels)
    # Without --background-class the model's own applies: it learnt that the ground between the footprints is
    # background, and scoring only the buildings' pixels would read as near-perfect (no background to confuse).
    result = subprocess.run([sys.executable, "-m", "geosscl", "evaluate", str(out), str(ATLANTA), "--labels", str(BUILDINGS),
                             "--class-column", "class", "--json", str(scores)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "taken as 'background', the model's background class" in result.stderr
    assert np.array_equal(np.array(json.loads(scores.read_text())["confusion"]), matrix)
    # So does fine-tuning it further, which keeps its classes.
    further = prepare(FinetuneConfig(imagery=[str(ATLANTA)], labels=[str(BUILDINGS)], class_column="class", init=str(out),
                                     out=str(tmp_path / "further.safetensors"), crop_size=64))
    assert further.background_class == "background" and further.labels.background == 0
    with rasterio.open(ATLANTA) as src:  # and a class raster of the same footprints holds it as its value 0
        profile = dict(src.profile, count=1, dtype="uint8", nodata=255)
        burnt = rasterio.features.rasterize(zip(gpd.read_file(BUILDINGS).to_crs(src.crs).geometry, [1] * 10**6),
                                            out_shape=src.shape, transform=src.transform, fill=0, dtype="uint8")
    with rasterio.open(tmp_path / "buildings.tif", "w", **profile) as dst:
        dst.write(burnt, 1)
    further = prepare(FinetuneConfig(imagery=[str(ATLANTA)], labels=[str(tmp_path / "buildings.tif")], init=str(out),
                                     out=str(tmp_path / "further.safetensors"), crop_size=64))
    assert further.background_class == "background" and further.class_names == ["background", "building"]
    # Its polygons are the buildings it finds, without the ground between them (one polygon as large as the map,
    # holed by every building). A model without a background class keeps every class (test_predict's polygons).
    classes, polygons = tmp_path / "classes.tif", tmp_path / "buildings.gpkg"
    result = subprocess.run([sys.executable, "-m", "geosscl", "predict", str(ATLANTA), "-m", str(out), "-o", str(classes),
                             "--vector", str(polygons), "--simplify", "0", "-q"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with rasterio.open(classes) as src:
        mapped = src.read(1)
        frame = gpd.read_file(polygons, layer="classes")
        burnt = rasterio.features.rasterize(zip(frame.geometry, frame.class_id), out_shape=mapped.shape,
                                            transform=src.transform, fill=0, dtype="uint8")
    assert set(np.unique(mapped)) == {0, 1}  # both classes are in the map (after 3 steps, most pixels are buildings)
    assert set(frame.class_name) == {"building"} and set(frame.class_id) == {1}
    np.testing.assert_array_equal(burnt, mapped)

    # A footprint layer mapped in the west half only, with --label-area saying so: the east's buildings are
    # not called background; what is scored is what the whole layer scores in the west.
    from geosscl.evaluation import evaluate

    with rasterio.open(ATLANTA) as src:
        x0, y0, x1, y1 = src.bounds
    west = shapely.box(x0, y0, (x0 + x1) / 2, y1)
    layer = gpd.read_file(BUILDINGS)
    partial, area = tmp_path / "west_buildings.geojson", tmp_path / "west.geojson"
    layer[layer.intersects(west)].to_file(partial)
    assert 0 < len(layer[layer.intersects(west)]) < len(layer)
    gpd.GeoSeries([west], crs=layer.crs).to_crs("EPSG:4326").to_file(area)  # in another CRS than the imagery
    gpd.GeoSeries([west], crs=layer.crs).to_file(tmp_path / "west_utm.geojson")
    kw = dict(class_column="class", background_class="background")
    limited, _ = evaluate(str(out), [str(ATLANTA)], [str(partial)], label_area=str(area), **kw)
    whole, _ = evaluate(str(out), [str(ATLANTA)], [str(BUILDINGS)], region=str(tmp_path / "west_utm.geojson"), **kw)
    unlimited, _ = evaluate(str(out), [str(ATLANTA)], [str(partial)], **kw)
    assert limited.confusion == whole.confusion
    assert np.sum(limited.confusion) == 450 * 900 and np.array(limited.confusion)[1].sum() > 0
    assert np.sum(unlimited.confusion) == 900 * 900 and np.array(unlimited.confusion)[1].sum() < 33_818
    result = subprocess.run([sys.executable, "-m", "geosscl", "evaluate", str(out), str(ATLANTA), "--labels", str(partial),
                             "--class-column", "class", "--background-class", "background", "--label-area", str(area),
                             "--json", str(scores), "-q"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(scores.read_text())["confusion"] == limited.confusion
    # Training regions and the class census stay inside the label area too.
    config = dict(imagery=[str(ATLANTA)], class_column="class", background_class="background", class_weights="auto", crop_size=64)
    setup = prepare(FinetuneConfig(labels=[str(partial)], label_area=str(area), **config))
    assert setup.area.difference(west.buffer(1.0)).is_empty and setup.area.area > 0.95 * west.area
    reference = prepare(FinetuneConfig(labels=[str(BUILDINGS)], label_area=str(tmp_path / "west_utm.geojson"), **config))
    assert setup.class_weights == pytest.approx(reference.class_weights, rel=0.02)
    far = tmp_path / "far.geojson"
    gpd.GeoSeries([shapely.box(10, 10, 10.1, 10.1)], crs="EPSG:4326").to_file(far)
    with pytest.raises(GeossclError, match="far.geojson: label area does not overlap the imagery"):
        prepare(FinetuneConfig(labels=[str(partial)], label_area=str(far), **config))


def test_class_weights():
    assert balanced_weights({0: 10, 1: 20, 3: 70}, 5) == [2.0, 1.0, 1.0, pytest.approx(2 / 7), 1.0]
    task = SegmentationTask(1, 2, [0.0], [1.0], class_weights=[0.5, 12.0])
    assert task.loss.weight.tolist() == [0.5, 12.0]
    logits, target = torch.tensor([[[[2.0]], [[0.0]]]]), torch.tensor([[[1]]])  # one pixel of class 1
    plain = torch.nn.functional.cross_entropy(logits, target)
    assert task.loss(logits, target) == pytest.approx(plain.item())  # one class in the batch: the mean cancels the weight
    both = torch.cat([logits, logits]), torch.tensor([[[1]], [[0]]])
    expected = (12 * torch.nn.functional.cross_entropy(logits, target) + 0.5 * torch.nn.functional.cross_entropy(logits, torch.tensor([[[0]]]))) / 12.5
    assert task.loss(*both) == pytest.approx(expected.item())
    with pytest.raises(GeossclError, match=r"class_weights: give 2 non-negative weights .*got 1,2,3"):
        prepare(FinetuneConfig(imagery=[str(ATLANTA)], labels=[str(BUILDINGS)], class_column="class",
                               background_class="background", class_weights=[1, 2, 3]))


def test_the_class_census_counts_each_pixel_once():
    from rasterio.features import geometry_mask

    from geosscl.data import Mosaic, open_labels
    from geosscl.splits import class_pixels

    mosaic = Mosaic([str(p) for p in NC_BANDS])
    labels, _ = open_labels([str(SAMPLES / "nc_landsat" / "strata.tif")], None, None)
    x, y, _ = mosaic.bounds
    rx, ry = mosaic.res
    px = lambda i, j: (x.start + i * rx, y.start + j * ry)  # noqa: E731
    # An L of blocks, and a block in its notch: inside the L's bounding box (each used to be counted twice).
    ell = shapely.union_all([shapely.box(*px(10, 10), *px(200, 60)), shapely.box(*px(10, 10), *px(60, 300))])
    region = shapely.MultiPolygon([ell, shapely.box(*px(100, 100), *px(180, 250))])
    with rasterio.open(SAMPLES / "nc_landsat" / "strata.tif") as src:
        truth = src.read(1)
        labelled = ~geometry_mask([region], truth.shape, src.transform) & (truth != src.nodata)
    values, counts = np.unique(truth[labelled].astype(int), return_counts=True)
    expected = dict(zip(values.tolist(), counts.tolist()))
    assert sum(expected.values()) == 190 * 50 + 50 * 240 + 80 * 150  # the region, all of it labelled
    for tile in (1024, 37):  # read a window at a time: the same count
        assert class_pixels(labels, region, mosaic, tile=tile) == expected


def test_label_draws_missing_a_class_warn_and_empty_ones_are_refused(tmp_path, caplog):
    from rasterio.features import geometry_mask

    from geosscl.finetuning import prepare
    from geosscl.splits import class_pixels

    sparse = str(TUTORIAL / "training_data.gtif")  # 718 labelled pixels of 62,500; 0 = nodata
    common = dict(imagery=[STACK], labels=[sparse], crop_size=32)
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        setup = prepare(FinetuneConfig(**common, label_fraction=0.1, seed=2))
    assert caplog.messages == ["label_fraction: the 0.1 of the training region drawn (seed 2) holds no pixel of class 5: "
                               "the model cannot learn it; raise --label-fraction or change --seed"]
    # The census is a direct count: the file's labelled pixels whose centres lie in the drawn blocks.
    with rasterio.open(sparse) as src:
        truth = src.read(1)
        inside = ~geometry_mask([setup.labelled], truth.shape, src.transform)
    values, counts = np.unique(truth[inside & (truth != 0)], return_counts=True)
    # Counted by class id: the values 1-5 are the classes 0-4.
    assert setup.class_values == [1, 2, 3, 4, 5]
    assert class_pixels(setup.labels, setup.labelled, setup.mosaic) == dict(zip((values - 1).tolist(), counts.tolist()))
    assert set(values.tolist()) == {1, 2, 3, 4}
    # The polygons rasterised on the imagery's grid count the same (the tutorial's raster is that rasterisation),
    # though their extent, and so the blocks drawn, are off that grid.
    polygons = prepare(FinetuneConfig(**dict(common, labels=[POLYGONS]), class_column="id", label_fraction=0.3, seed=0))
    inside = ~geometry_mask([polygons.labelled], truth.shape, src.transform)
    values, counts = np.unique(truth[inside & (truth != 0)], return_counts=True)
    assert class_pixels(polygons.labels, polygons.labelled, polygons.mosaic) == dict(zip((values - 1).tolist(), counts.tolist()))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        prepare(FinetuneConfig(**common))  # every label: nothing drawn, nothing to say
    assert caplog.messages == []

    # Blocks holding no labelled pixel at all: a model of nothing (the run used to write one).
    out = tmp_path / "model.safetensors"
    with pytest.raises(GeossclError, match=r"^label_fraction: the 0.02 of the training region drawn holds no labelled pixel; "
                                           r"raise it or change --seed$"):
        finetune(FinetuneConfig(**common, label_fraction=0.02, seed=2, out=str(out), max_steps=1, num_workers=0, quiet=True))
    assert not out.exists()

    # On the command line the warning is one line on stderr; -q keeps it quiet.
    args = [sys.executable, "-m", "geosscl", "probe", STACK, "--labels", sparse, "--bands-only", "--crop-size", "32",
            "--label-fraction", "0.1", "--seed", "2"]
    said = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert said.returncode == 0, said.stderr[-2000:]
    assert "WARNING: label_fraction: the 0.1 of the training region drawn (seed 2) holds no pixel of class 5" in said.stderr
    quiet = subprocess.run(args + ["-q"], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and "WARNING" not in quiet.stderr


def test_sparse_labels_leave_no_class_to_validation_alone(tmp_path, caplog):
    from geosscl.splits import class_pixels

    # The tutorial's 30 polygons at the default 128 px blocks: 4 blocks. The seed's draw of the validation block holds
    # every polygon of class 5 (test_labels.py); another draw keeps them in training, and nothing is said.
    common = dict(imagery=[STACK], labels=[POLYGONS], class_column="id")
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        setup = prepare(FinetuneConfig(**common, seed=0))
    assert caplog.messages == []
    assert sorted(class_pixels(setup.labels, setup.labelled, setup.mosaic)) == [0, 1, 2, 3, 4]
    assert class_pixels(setup.labels, setup.val_region, setup.mosaic)  # validation keeps labels too

    # A validation region over every polygon of class 5: said, with where its labels went.
    frame = gpd.read_file(POLYGONS)
    five = tmp_path / "five.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(*g.bounds).buffer(30) for g in frame[frame["id"] == 5].geometry],
                     crs=frame.crs).to_file(five)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        prepare(FinetuneConfig(**common, val_region=str(five)))
    assert caplog.messages == [f"{POLYGONS}: the training region holds no pixel of class 5: the model cannot learn it; "
                               f"its labels lie in --val-region {five}; label more outside them"]
    # Over every polygon: refused, nothing written.
    everything = tmp_path / "all.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(*frame.total_bounds).buffer(100)], crs=frame.crs).to_file(everything)
    out = tmp_path / "model.safetensors"
    with pytest.raises(GeossclError, match=rf"^{re.escape(str(everything))}: validation region covers all the labelled imagery$"):
        finetune(FinetuneConfig(**common, val_region=str(everything), out=str(out), max_steps=1, num_workers=0, quiet=True))
    assert not out.exists()
    # Every polygon in the holdout region: the count refuses a run with nothing to learn from.
    polygons = tmp_path / "polygons.gpkg"
    gpd.GeoDataFrame(geometry=[g.buffer(30) for g in frame.geometry], crs=frame.crs).to_file(polygons)
    with pytest.raises(GeossclError, match=rf"^{re.escape(POLYGONS)}: the training region holds no labelled pixel; "
                                           r"the labels lie in --holdout-region$"):
        prepare(FinetuneConfig(**common, holdout_region=str(polygons), val_fraction=0))

    # The probe's command line: one line on stderr, and every class among the training pixels.
    args = [sys.executable, "-m", "geosscl", "probe", STACK, "--labels", POLYGONS, "--class-column", "id", "--bands-only"]
    said = subprocess.run(args + ["--val-region", str(five)], capture_output=True, text=True, timeout=300)
    assert said.returncode == 0, said.stderr[-2000:]
    assert [line for line in said.stderr.splitlines() if "WARNING" in line] == [
        f"WARNING: {POLYGONS}: the training region holds no pixel of class 5: the model cannot learn it; "
        f"its labels lie in --val-region {five}; label more outside them"]


def test_crops_are_drawn_near_sparse_labels_and_validation_scores_each_label_once():
    from samplers import RegionGridSampler
    from geosscl.data.labels import IGNORE_INDEX
    from geosscl.finetuning import loaders
    from geosscl.splits import class_pixels

    # The tutorial's polygons (1 % of the scene) in 32 px crops: drawn anywhere in the training blocks, about half held
    # no label (test_labels.py); drawn near them, every crop holds some.
    config = FinetuneConfig(imagery=[STACK], labels=[POLYGONS], class_column="id", crop_size=32, batch_size=8, num_workers=0)
    setup = prepare(config)
    train, val = loaders(config, setup, steps=12)
    assert all((batch["mask"] != IGNORE_INDEX).flatten(1).sum(1).min() > 0 for batch in train)
    # Validation boxes cover the labelled cells, not the empty ground, and every labelled pixel of the region once.
    whole = RegionGridSampler(val.dataset, 32, setup.val_region, origin=setup.mosaic.grid_origin)
    assert len(val.sampler) < len(whole) / 2
    scored = sum(int((batch["mask"] != IGNORE_INDEX).sum()) for batch in val)
    assert scored == sum(class_pixels(setup.labels, setup.val_region, setup.mosaic).values()) > 0


def test_bad_input_fails_before_writing(tmp_path, pretrained):
    out = tmp_path / "model.safetensors"

    def expect(message: str, **kwargs) -> None:
        config = {"imagery": [STACK], "labels": [POLYGONS], "class_column": "id", "out": str(out), "max_steps": 1,
                  **FAST, **kwargs}
        with pytest.raises(GeossclError, match=message):
            finetune(FinetuneConfig(**config))
        assert not out.exists()

    expect("labels do not overlap the imagery", imagery=[str(NAIP)], init="random", bands=[1, 2, 3, 4])
    expect("out: give the model file", out="")
    three = tmp_path / "three.yaml"
    three.write_text("[a, b, c]\n")
    expect(r"class id\(s\) \[3, 4, 5\] are outside the 3 classes", classes=str(three))
    # Water labels with 255 for unlabelled (Sen1Floods11's -1 recoded, as uint8 files often hold it), undeclared.
    with rasterio.open(S2_WATER) as src:
        coded = write_raster(tmp_path / "water255.tif", np.where(src.read(1) == -1, 255, src.read(1)).astype(np.uint8),
                             crs=src.crs, transform=src.transform)
    two = tmp_path / "two.yaml"
    two.write_text("[dry, water]\n")
    expect(r"water255\.tif: class id\(s\) \[255\] are outside the 2 classes of .*two\.yaml; "
           r"if 255 means unlabelled, pass --label-nodata 255$",
           imagery=[str(S2_CHIP)], labels=[str(coded)], class_column=None, classes=str(two))
    expect("no column 'label'", class_column="label")
    expect("vector labels need --class-column, the column of each polygon.s class; the layer has id, class$", class_column=None)
    bare = tmp_path / "outlines.gpkg"  # footprints alone, as many building layers come
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:32615").to_file(bare)
    expect(r"outlines\.gpkg: vector labels need --class-column, .*; the layer has none: add one \(for footprints of one "
           r"class, its name in every row\)$", labels=[str(bare)], class_column=None)
    expect("label_fraction: .* leaves no labelled block|holds no labelled polygon", label_fraction=0.001)
    expect("pretrained_lr_factor / warmup_steps: must not be negative", pretrained_lr_factor=-0.1)
    expect("precision: 'fp16' is not one of 32, bf16", precision="fp16")
    expect("val_fraction: finetune keeps the weights of the best validation mIoU and needs a validation region", val_fraction=0)
    if not torch.cuda.is_available():
        expect("accelerator: gpu requested but no CUDA device is available", accelerator="gpu")
    everything = tmp_path / "all.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1e7, 1e7)], crs="EPSG:32615").to_file(everything)
    expect("holdout region covers all the labelled imagery", holdout_region=str(everything))
    nc = pretrain(PretrainConfig(imagery=[str(p) for p in sorted((SAMPLES / "nc_landsat").glob("lsat7_*.tif"))],
                                 out=str(tmp_path / "nc"), max_steps=1, queue_size=32, **FAST))
    expect("checkpoint has 6 bands, the imagery 8", init=os.path.join(nc, "last.ckpt"))
    out.write_bytes(b"keep")
    with pytest.raises(GeossclError, match="already exists; pass --overwrite"):
        finetune(FinetuneConfig(imagery=[STACK], labels=[POLYGONS], class_column="id", out=str(out), **FAST))
    assert out.read_bytes() == b"keep"


def test_model_files_that_are_not_ours(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(GeossclError, match="no such model file"):
        load_model(missing)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(GeossclError, match="not a geosscl model"):
        load_model(plain)
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(GeossclError, match="not a geosscl model file"):
        load_model(evil)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(plain.read_bytes()[:20])
    with pytest.raises(GeossclError, match="not a geosscl model file"):
        read_info(truncated)
    network, info = load_model(SAMPLES / "models" / "nc_landuse.safetensors")
    info.background_class = "roads"  # edited by hand: no class of the model
    edited = tmp_path / "edited.safetensors"
    save_model(edited, network, info)
    with pytest.raises(GeossclError, match=r"edited\.safetensors: corrupt geosscl metadata \(background class 'roads' is "
                                           r"not one of its classes, developed, agriculture, "):
        read_info(edited)


def test_metrics_equal_a_hand_computed_confusion_matrix():
    truth = torch.tensor([[0, 0, 1, 1], [2, 2, -1, 1]])
    prediction = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 2]])
    matrix = ConfusionMatrix(3)
    matrix.update(prediction, truth)
    # rows truth, columns prediction; the -1 pixel is ignored
    assert matrix.counts.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]
    scores = matrix.scores()
    iou = [1 / 3, 2 / 4, 1 / 3]
    assert scores.iou == pytest.approx(iou)
    assert scores.miou == pytest.approx(np.mean(iou))
    assert scores.overall_accuracy == pytest.approx(4 / 7)
    expected = (2 * 2 + 3 * 3 + 2 * 2) / 49
    assert scores.kappa == pytest.approx((4 / 7 - expected) / (1 - expected))
    assert scores.f1 == pytest.approx([2 * 1 / 4, 2 * 2 / 6, 2 * 1 / 4])


def test_linear_probe_trains_the_head_only(tmp_path, pretrained):
    out = tmp_path / "probe.safetensors"
    finetune(FinetuneConfig(imagery=[STACK], labels=[POLYGONS], class_column="id", out=str(out), init=pretrained,
                            linear_probe=True, max_steps=5, **FAST))
    network, info = load_model(out)
    assert info.provenance["linear_probe"] is True
    # What fine-tuning starts from with the same seed: the checkpoint's trained layers, fresh ones elsewhere.
    import lightning.pytorch as pl

    pl.seed_everything(0, verbose=False)
    checkpoint = load_checkpoint(pretrained)
    hp = checkpoint["hyper_parameters"]
    initial = SegmentationTask(8, 5, hp["band_mean"], hp["band_std"])
    initial.load_pretrained(checkpoint["state_dict"], hp)
    start = initial.network.net.state_dict()
    for name, value in network.net.state_dict().items():
        if name.startswith(("encoder.", "decoder.")):  # weights and batch-norm statistics as they started
            torch.testing.assert_close(value, start[name], msg=name)
            if name.startswith("encoder."):
                torch.testing.assert_close(value, checkpoint["state_dict"]["network.net." + name], msg=name)
    # The head did train: it moved away from its initialisation.
    assert not torch.allclose(network.net.segmentation_head[0].weight, start["segmentation_head.0.weight"])


@needs_bf16_cpu
def test_bf16_fine_tunes_in_bfloat16_and_writes_float32_weights(tmp_path, pretrained):
    convolutions: set[torch.dtype] = set()

    def record(module, args, output):
        if isinstance(module, torch.nn.Conv2d) and module.training:
            convolutions.add(output.dtype)

    out = tmp_path / "bf16.safetensors"
    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        finetune(FinetuneConfig(imagery=[STACK], labels=[POLYGONS], class_column="id", out=str(out), init=pretrained,
                                max_steps=3, accelerator="cpu", precision="bf16", **FAST))
    finally:
        hook.remove()
    assert convolutions == {torch.bfloat16}
    network, info = load_model(out)
    assert info.provenance["settings"]["precision"] == "bf16"
    assert {v.dtype for v in network.state_dict().values() if v.is_floating_point()} == {torch.float32}
    assert all(torch.isfinite(v).all() for v in network.state_dict().values() if v.is_floating_point())
    with torch.no_grad():
        assert network(torch.zeros(1, 8, 64, 64)).dtype == torch.float32  # predicts as any model file does


def _confusion_worker(rank: int, world: int, out: str) -> None:
    matrix = ConfusionMatrix(2)
    # Rank 0 sees class 0 only, rank 1 class 1 only, each predicted partly wrong.
    truth = torch.tensor([rank] * 4)
    prediction = torch.tensor([rank, rank, rank, 1 - rank] if rank == 0 else [rank, 1 - rank, 1 - rank, 1 - rank])
    matrix.update(prediction, truth)
    matrix.all_reduce()
    torch.save(matrix.counts, f"{out}/rank{rank}.pt")


def test_validation_miou_sums_counts_across_processes(tmp_path):
    run_distributed(_confusion_worker, 2, str(tmp_path))
    counts = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert counts[0].tolist() == counts[1].tolist() == [[3, 1], [3, 1]]
    single = ConfusionMatrix(2)
    single.update(torch.tensor([0, 0, 0, 1, 1, 0, 0, 0]), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    assert single.counts.tolist() == counts[0].tolist()


def test_two_process_ddp_fine_tuning_on_cpu(tmp_path):
    out = tmp_path / "model.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "geosscl", "finetune", STACK, "--labels", POLYGONS, "--class-column", "id",
         "--out", str(out), "--crop-size", "64", "--batch-size", "4", "--max-steps", "3", "--num-workers", "0",
         "--accelerator", "cpu", "--devices", "2", "-q"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    info = read_info(out)
    assert info.provenance["steps"] == 3 and 0 <= info.provenance["validation"]["miou"] <= 1


def test_a_holdout_region_of_blocks_trains_and_evaluates(tmp_path):
    # Regions that share edges with the split's blocks leave zero-area slivers (lines) in
    # their intersections; TorchGeo's samplers refused the geometry collections.
    from geosscl.data import Mosaic
    from geosscl.evaluation import evaluate
    from geosscl.splits import block_split, polygonal

    bands = [str(p) for p in sorted((SAMPLES / "nc_landsat").glob("lsat7_2000_*.tif"))]
    mosaic = Mosaic(bands)
    x, y, _ = mosaic.bounds
    scene = shapely.box(x.start, y.start, x.stop, y.stop)
    test = block_split(scene, 96 * mosaic.res[0], {"test": 1 / 3, "rest": 2 / 3}, seed=123)["test"]
    rest = scene.difference(test)
    assert polygonal(rest).geom_type in ("Polygon", "MultiPolygon") and polygonal(rest).area == pytest.approx(rest.area)
    region = tmp_path / "test_blocks.gpkg"
    gpd.GeoDataFrame(geometry=[test], crs=mosaic.crs).to_file(region)
    out = tmp_path / "m.safetensors"
    finetune(FinetuneConfig(imagery=bands, labels=[str(SAMPLES / "nc_landsat" / "strata.tif")], out=str(out), label_fraction=0.2,
                            val_label_fraction=0.2, holdout_region=str(region), max_steps=2, seed=0, **FAST))
    assert read_info(out).provenance["val_label_fraction"] == 0.2  # validated on a fifth of the validation blocks
    inside, _ = evaluate(str(out), bands, [str(SAMPLES / "nc_landsat" / "strata.tif")], region=str(region))
    everywhere, _ = evaluate(str(out), bands, [str(SAMPLES / "nc_landsat" / "strata.tif")])
    share = sum(map(sum, inside.confusion)) / sum(map(sum, everywhere.confusion))
    assert 0.15 < share < 0.45  # a third of the blocks (edge blocks are partial, some pixels have no imagery)
