"""The frozen-encoder linear probe, on the real NC Landsat scene and its land-use classes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest
import rasterio
import torch
import torch.nn.functional as F

from geosscl import GeossclError
from geosscl.finetuning import FinetuneConfig, prepare
from geosscl.models import SegmentationNetwork
from geosscl.probing import frozen_encoder, hypercolumns, linear_probe
from geosscl.tasks import SSCCLTask
from geosscl.training import PretrainConfig, load_checkpoint, pretrain
from conftest import ATLANTA, BUILDINGS, NC_BANDS, SAMPLES

NC = SAMPLES / "nc_landsat"
BANDS = [str(p) for p in NC_BANDS]


def config(**extra) -> FinetuneConfig:
    settings = dict(imagery=BANDS, labels=[str(NC / "strata.tif")], classes=str(NC / "classes.yaml"), label_fraction=0.2, crop_size=64, holdout_region=str(NC / "test_region.geojson"), seed=0)
    return FinetuneConfig(**{**settings, **extra})


def test_hypercolumns_sample_each_stage_as_upsampling_would():
    crops = []
    for path in NC_BANDS:
        with rasterio.open(path) as src:
            crops.append(torch.from_numpy(src.read(1, window=((100, 164), (200, 264))).astype("float32")))
    bands = torch.stack(crops)
    image = ((bands - bands.mean((1, 2), keepdim=True)) / bands.std((1, 2), keepdim=True))[None]
    torch.manual_seed(0)
    network = SegmentationNetwork(6, 8).eval()
    rows, cols = torch.tensor([0, 5, 31, 63, 40]), torch.tensor([0, 60, 17, 63, 2])
    columns = hypercolumns(network, image, rows, cols)
    with torch.no_grad():
        maps = [image] + [F.interpolate(m, size=(64, 64), mode="bilinear", align_corners=False) for m in network.encode(image)[1:]]
    expected = torch.cat([m[0][:, rows, cols].T for m in maps], dim=1)
    assert columns.shape == (5, 6 + 64 + 64 + 128 + 256 + 512)
    torch.testing.assert_close(columns, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(hypercolumns(network, image, rows, cols, stages=[2]), torch.cat([maps[0], maps[2]], 1)[0][:, rows, cols].T,
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(hypercolumns(None, image, rows, cols), image[0][:, rows, cols].T)


def test_band_probe_beats_the_majority_class_and_repeats_exactly():
    result = linear_probe(config(), features="bands")
    counts = torch.tensor(result.scores.confusion).sum(1)
    majority = float(counts.max() / counts.sum()) / int((counts > 0).sum())  # mIoU of always answering the commonest class
    assert result.scores.miou > 2 * majority
    assert result.pixels["train"] > 1000 and result.pixels["test"] > 10000
    assert sum(counts.tolist()) == result.pixels["test"]
    again = linear_probe(config(), features="bands")
    assert again.scores.confusion == result.scores.confusion and again.weight_decay == result.weight_decay
    # More labels: more training pixels from the same scene; another seed: other blocks.
    assert linear_probe(config(label_fraction=0.05), features="bands").pixels["train"] < result.pixels["train"]


def test_probe_reads_the_checkpoint_encoder(tmp_path):
    run = pretrain(PretrainConfig(imagery=BANDS, out=str(tmp_path / "run"), max_steps=2, crop_size=64, batch_size=4,
                                  queue_size=16, num_workers=0, quiet=True))
    checkpoint = load_checkpoint(os.path.join(run, "last.ckpt"))
    ssccl = SSCCLTask(**checkpoint["hyper_parameters"])
    ssccl.load_state_dict(checkpoint["state_dict"])
    ssccl.eval()
    setup = prepare(config(init=os.path.join(run, "last.ckpt")))
    probed = frozen_encoder(setup, seed=3)
    x = torch.randn(1, 6, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(probed.encode(x), ssccl.network.encode(x)):
            torch.testing.assert_close(ours, theirs)
        assert not torch.allclose(frozen_encoder(prepare(config()), seed=3).encode(x)[-1], ssccl.network.encode(x)[-1])
    result = linear_probe(config(init=os.path.join(run, "last.ckpt")), stages=[1], max_pixels=3000)
    assert 0 <= result.scores.miou <= 1 and result.pixels["train"] <= 4500


def test_without_a_holdout_region_the_probe_scores_its_validation_region():
    held = linear_probe(config(), features="bands")
    result = linear_probe(config(holdout_region=None), features="bands")
    assert result.region == "validation" and held.region == "holdout"
    # The scene is no longer short of the eastern third: more blocks to train and validate on.
    assert "test" not in result.pixels and result.pixels["val"] > held.pixels["val"]
    assert result.scores.miou == pytest.approx(result.val_miou)
    counts = torch.tensor(result.scores.confusion).sum(1)
    assert int(counts.sum()) == result.pixels["val"]


def test_stages_in_any_order_make_the_same_classifier(tmp_path):
    """The model file's head takes stages in order; the probe's features must come in that order too."""
    from geosscl.modelfile import read_info

    ordered = linear_probe(config(), stages=[1, 3])
    shuffled = linear_probe(config(out=str(tmp_path / "m.safetensors")), stages=[3, 1])
    assert shuffled.scores.confusion == ordered.scores.confusion
    assert read_info(tmp_path / "m.safetensors").stages == [1, 3]
    from geosscl.evaluation import evaluate

    # The probe scores every pixel of the test region (39,292, under its default max_pixels), as evaluate does: a
    # sample of 2,699 moved mIoU by 0.02 on its own. What is left apart is the features' context (0.009 measured).
    scores, _ = evaluate(str(tmp_path / "m.safetensors"), BANDS, [str(NC / "strata.tif")], region=str(NC / "test_region.geojson"))
    assert sum(map(sum, scores.confusion)) == sum(map(sum, shuffled.scores.confusion)) == 39_292
    assert abs(scores.miou - shuffled.scores.miou) < 0.02 and abs(scores.overall_accuracy - shuffled.scores.overall_accuracy) < 0.02
    # The model file records where its labels were: 20 % of the training region's blocks, and the validation
    # blocks; the labels of the other 80 % were never read, and --held-out scores them with the holdout region's.
    from geosscl.ground import model_ground
    from geosscl.splits import read_region

    info = read_info(tmp_path / "m.safetensors")
    ground = model_ground(info)
    pixel = abs(info.res[0] * info.res[1])
    setup = prepare(config())
    for recorded, used in ((ground.training, setup.labelled), (ground.validation, setup.val_region)):
        assert recorded.area > 0 and recorded.symmetric_difference(used).area < pixel / 2
    assert ground.seen.intersection(read_region(str(NC / "test_region.geojson"), info.crs)).area < pixel / 2
    held_out, _ = evaluate(str(tmp_path / "m.safetensors"), BANDS, [str(NC / "strata.tif")], held_out=True)
    assert held_out.ground == {"trained": 0, "validated": 0, "held_out": sum(map(sum, held_out.confusion))}
    assert sum(map(sum, held_out.confusion)) > 2 * sum(map(sum, scores.confusion))


def test_a_deeplab_encoder_makes_a_classifier_without_its_dilated_stage(tmp_path):
    """DeepLabV3+ dilates stage 5 (stride 16): written as a plain-encoder model it would compute other features."""
    from geosscl.evaluation import evaluate
    from geosscl.modelfile import read_info

    run = pretrain(PretrainConfig(imagery=BANDS, out=str(tmp_path / "run"), max_steps=2, crop_size=64, batch_size=4,
                                  queue_size=16, num_workers=0, arch="deeplabv3plus", quiet=True))
    init = os.path.join(run, "last.ckpt")
    out = tmp_path / "m.safetensors"
    with pytest.raises(GeossclError, match="stage 5 cannot be written"):
        linear_probe(config(init=init, out=str(out)), stages=[1, 5], max_pixels=3000)
    assert not out.exists()
    result = linear_probe(config(init=init, out=str(out)), stages=[1, 4], max_pixels=5000)
    assert read_info(out).stages == [1, 4]
    # The readouts "auto" tries leave the dilated stage out where a model file is written.
    chosen = linear_probe(config(init=init, out=str(tmp_path / "auto.safetensors")), stages="auto", max_pixels=5000)
    assert 5 not in chosen.stages and read_info(tmp_path / "auto.safetensors").stages == chosen.stages
    scores, _ = evaluate(str(out), BANDS, [str(NC / "strata.tif")], region=str(NC / "test_region.geojson"))
    assert abs(scores.miou - result.scores.miou) < 0.02 and abs(scores.overall_accuracy - result.scores.overall_accuracy) < 0.02


def test_the_l2_weight_grows_with_depth_where_the_penalty_says():
    """A per-feature penalty: of two copies of the same real bands, the heavily penalised copy gets the small weights."""
    from geosscl.probing import fit_probe

    with rasterio.open(NC / "strata.tif") as src:
        classes = torch.from_numpy(src.read(1, window=((0, 60), (0, 489))).astype("int64")).flatten()
    bands = []
    for path in NC_BANDS:
        with rasterio.open(path) as src:
            bands.append(torch.from_numpy(src.read(1, window=((0, 60), (0, 489))).astype("float32")).flatten())
    x = torch.stack(bands, 1)
    keep = (classes > 0) & (classes < 8) & (x > -1000).all(1)
    x, y = x[keep], classes[keep]
    x = (x - x.mean(0)) / x.std(0)
    twice = torch.cat([x, x], dim=1)
    linear = fit_probe((twice, y), 8, 1e-2, penalty=torch.tensor([1.0] * 6 + [100.0] * 6))
    light, heavy = linear.weight[:, :6].detach(), linear.weight[:, 6:].detach()
    # At the optimum, copies of one feature split its weight inversely to their penalties: 100 to 1. Only the
    # penalty acts along that split, so float32 L-BFGS settles it to about 1 % of the largest weight (machine-dependent
    # below that): small weights are held to that, not to a fixed 1e-3.
    torch.testing.assert_close(light, 100 * heavy, rtol=0.05, atol=0.02 * light.abs().max().item())
    same = fit_probe((twice, y), 8, 1e-2)
    torch.testing.assert_close(same.weight[:, :6], same.weight[:, 6:], rtol=1e-3, atol=1e-4)


def test_auto_keeps_stage_1_or_all_stages_whichever_validates_better_and_the_default_is_stage_1(tmp_path):
    from geosscl.modelfile import read_info
    from geosscl.probing import DEPTH_PENALTIES

    settings = dict(label_fraction=0.05, crop_size=32)
    one = linear_probe(config(**settings), stages=[1], max_pixels=5000)
    every = linear_probe(config(**settings), stages=[1, 2, 3, 4, 5], max_pixels=5000)
    auto = linear_probe(config(**settings, out=str(tmp_path / "m.safetensors")), stages="auto", max_pixels=5000)
    default = linear_probe(config(**settings), max_pixels=5000)
    assert default.stages == [1] and default.scores.confusion == one.scores.confusion
    assert one.stages == [1] and one.depth_penalty == 1.0
    assert every.stages == [1, 2, 3, 4, 5] and every.depth_penalty in DEPTH_PENALTIES
    best = max([one, every], key=lambda r: r.val_miou)  # ties: stage 1 alone (max keeps the first)
    assert auto.val_miou == best.val_miou and auto.stages == best.stages and auto.depth_penalty == best.depth_penalty
    assert auto.weight_decay == best.weight_decay and auto.scores.confusion == best.scores.confusion
    info = read_info(tmp_path / "m.safetensors")
    assert info.stages == auto.stages and info.provenance["depth_penalty"] == auto.depth_penalty


def test_validation_labels_can_be_as_few_as_the_training_labels():
    """val_label_fraction keeps whole blocks of the validation region, away from the training blocks and the test region."""
    from geosscl.splits import read_region

    full = prepare(config(label_fraction=0.05, crop_size=32))
    few = prepare(config(label_fraction=0.05, crop_size=32, val_label_fraction=0.2))
    assert few.labelled.equals(full.labelled)  # the training draw does not depend on it
    assert full.val_region.buffer(1e-6).covers(few.val_region)
    assert few.val_region.area / full.val_region.area == pytest.approx(0.2, abs=0.08)
    assert few.val_region.intersection(few.labelled).area == pytest.approx(0, abs=1e-6)
    test = read_region(str(NC / "test_region.geojson"), few.mosaic.crs)
    assert few.val_region.intersection(test).area == pytest.approx(0, abs=1e-6)
    assert prepare(config(label_fraction=0.05, crop_size=32, val_label_fraction=0.2)).val_region.equals(few.val_region)
    # The probe chooses its L2 weight on those pixels alone.
    fewer = linear_probe(config(label_fraction=0.05, crop_size=32, val_label_fraction=0.2), features="bands").pixels
    everything = linear_probe(config(label_fraction=0.05, crop_size=32), features="bands").pixels
    assert fewer["train"] == everything["train"] and 0 < fewer["val"] < 0.35 * everything["val"]
    with pytest.raises(GeossclError, match=r"val_label_fraction: 1e-06 of the validation region leaves no labelled block"):
        prepare(config(val_label_fraction=1e-6))
    for option in ("val_label_fraction", "label_fraction"):
        with pytest.raises(GeossclError, match=rf"^{option}: must lie in \(0, 1\], got 1.5"):
            prepare(config(**{option: 1.5}))


def test_a_fixed_l2_weight_fits_the_classifier_that_weight_makes_when_chosen():
    chosen = linear_probe(config(), features="bands")
    fixed = linear_probe(config(), features="bands", weight_decay=chosen.weight_decay)
    assert fixed.weight_decay == chosen.weight_decay and fixed.scores.confusion == chosen.scores.confusion
    other = 1e-1 if chosen.weight_decay != 1e-1 else 1e-4
    weaker = linear_probe(config(), features="bands", weight_decay=other)
    assert weaker.weight_decay == other and weaker.val_miou < chosen.val_miou  # chosen: the best on validation
    with pytest.raises(GeossclError, match="weight_decay: must be a non-negative number, got -1"):
        linear_probe(config(), features="bands", weight_decay=-1)


def test_without_validation_every_label_trains_a_fixed_classifier():
    split = linear_probe(config(label_fraction=0.05, crop_size=32), features="bands", weight_decay=1e-3)
    whole = linear_probe(config(label_fraction=0.05, crop_size=32, val_fraction=0), features="bands", weight_decay=1e-3)
    assert "val" not in whole.pixels and whole.val_miou is None and whole.region == "holdout"
    assert whole.pixels["test"] == split.pixels["test"]
    assert whole.pixels["train"] > 1.1 * split.pixels["train"]  # 5 % of the whole non-test scene, not of 80 % of it
    with pytest.raises(GeossclError, match="val_fraction: 0 leaves no validation blocks to choose the classifier on"):
        linear_probe(config(val_fraction=0), features="bands")
    with pytest.raises(GeossclError, match="val_fraction: 0 leaves no validation blocks"):
        linear_probe(config(val_fraction=0), stages=[1, 2], weight_decay=1e-3)  # the depth growth is still to choose
    # Without a holdout region either, it still makes the classifier; the scores are then of its own training pixels.
    fitted = linear_probe(config(label_fraction=0.05, crop_size=32, val_fraction=0, holdout_region=None), features="bands",
                          weight_decay=1e-3)
    assert fitted.region == "training" and set(fitted.pixels) == {"train"}
    assert sum(map(sum, fitted.scores.confusion)) == fitted.pixels["train"] > whole.pixels["train"]  # the holdout's labels too


def test_class_weights_make_the_probe_find_rare_buildings(tmp_path):
    from geosscl.modelfile import load_model

    # Buildings are 4 % of the SpaceNet tile; one band cannot tell them apart, so an unweighted
    # classifier says "background" everywhere.
    atlanta = dict(imagery=[str(ATLANTA)], labels=[str(BUILDINGS)], class_column="class", background_class="background",
                   label_fraction=0.2, crop_size=64, seed=0)
    plain = linear_probe(FinetuneConfig(**atlanta), features="bands")
    assert plain.class_names == ["background", "building"] and plain.class_weights is None
    assert plain.scores.iou[1] == 0 and sum(row[1] for row in plain.scores.confusion) == 0  # no pixel called building
    weighted = linear_probe(FinetuneConfig(**atlanta, class_weights="auto", out=str(tmp_path / "probe.safetensors")),
                            features="bands")
    w0, w1 = weighted.class_weights
    assert w1 > 10 * w0 and 1 / w0 + 1 / w1 == pytest.approx(2, rel=1e-4)  # median-frequency balancing of two classes
    assert weighted.pixels == plain.pixels and weighted.scores.iou[1] > 0.05
    assert sum(row[1] for row in weighted.scores.confusion) > 0.02 * sum(map(sum, weighted.scores.confusion))
    _, info = load_model(tmp_path / "probe.safetensors")
    assert info.provenance["class_weights"] == [w0, w1] and info.background_class == "background"
    with pytest.raises(GeossclError, match="class_weights: give 2 non-negative weights"):
        linear_probe(FinetuneConfig(**atlanta, class_weights=[1.0]), features="bands")


def test_probe_input_errors():
    with pytest.raises(GeossclError, match="stages"):
        linear_probe(config(), stages=[6])
    with pytest.raises(GeossclError, match="stages"):
        linear_probe(config(), stages="all")
    with pytest.raises(GeossclError, match="features"):
        linear_probe(config(), features="pixels")


def test_probe_cli_prints_scores_and_writes_strict_json(tmp_path):
    nc = [str(p) for p in NC_BANDS]
    common = [sys.executable, "-m", "geosscl", "probe", *nc, "--labels", str(NC / "strata.tif"), "--classes", str(NC / "classes.yaml"),
              "--crop-size", "64", "--label-fraction", "0.2"]
    out = tmp_path / "probe.json"
    result = subprocess.run([*common, "--holdout-region", str(NC / "test_region.geojson"), "--bands-only", "--val-label-fraction",
                             "0.5", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "forest" in result.stdout and "mIoU" in result.stdout and "labelled pixels: train" in result.stdout
    data = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    # The classes file's seven classes (values 1-7), no unused "class 0".
    assert data["features"] == "bands" and data["classes"][0] == "developed" and len(data["iou"]) == 7
    assert data["class_values"] == [1, 2, 3, 4, 5, 6, 7]
    expected = linear_probe(config(val_label_fraction=0.5), features="bands")
    assert data["confusion"] == expected.scores.confusion and data["pixels"] == expected.pixels
    # A holdout region off the imagery: one line naming the file, exit 1, no JSON.
    far = tmp_path / "far.geojson"
    far.write_text('{"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:4326"}}, "features": '
                   '[{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": '
                   '[[[10, 10], [10.1, 10], [10.1, 10.1], [10, 10.1], [10, 10]]]}}]}')
    bad = subprocess.run([*common, "--holdout-region", str(far), "--json", str(tmp_path / "bad.json")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "far.geojson" in bad.stderr, bad.stderr
    assert not (tmp_path / "bad.json").exists()
    usage = subprocess.run([*common, "--stages", "deep"], capture_output=True, text=True, timeout=300)
    assert usage.returncode == 2 and "--stages" in usage.stderr and "'deep'" in usage.stderr, usage.stderr
    usage = subprocess.run([*common, "--weight-decay", "-1"], capture_output=True, text=True, timeout=300)
    assert usage.returncode == 2 and "--weight-decay" in usage.stderr and "'-1'" in usage.stderr, usage.stderr
    fixed = subprocess.run([*common, "--holdout-region", str(NC / "test_region.geojson"), "--bands-only", "--weight-decay",
                            "0.03", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert fixed.returncode == 0 and "L2 weight 0.03 " in fixed.stdout, fixed.stderr[-2000:]
    assert json.loads(out.read_text())["weight_decay"] == 0.03
    weighted = subprocess.run([*common, "--holdout-region", str(NC / "test_region.geojson"), "--bands-only", "--class-weights",
                               "0,1,1,1,1,1,2", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert weighted.returncode == 0 and "class weights 0,1,1,1,1,1,2" in weighted.stdout, weighted.stderr[-2000:]
    assert json.loads(out.read_text())["class_weights"] == [0, 1, 1, 1, 1, 1, 2]
    usage = subprocess.run([*common, "--class-weights", "a,b"], capture_output=True, text=True, timeout=300)
    assert usage.returncode == 2 and "--class-weights" in usage.stderr, usage.stderr
    spent = subprocess.run([*common, "--holdout-region", str(NC / "test_region.geojson"), "--bands-only", "--weight-decay",
                            "0.001", "--val-fraction", "0", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert spent.returncode == 0 and "(no validation)" in spent.stdout, spent.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["val_miou"] is None and set(data["pixels"]) == {"train", "test"}


def test_the_fitted_probe_as_a_network_gives_the_probe_logits():
    """The model file's network equals the probe: linear map of standardised hypercolumns, at every pixel."""
    from geosscl.probing import _classifier

    setup = prepare(config())
    encoder = frozen_encoder(setup, seed=1)
    bands = []
    for path in NC_BANDS:
        with rasterio.open(path) as src:
            bands.append(torch.from_numpy(src.read(1, window=((40, 168), (300, 428))).astype("float32")))
    image = torch.stack(bands)
    image = ((image - torch.tensor(setup.band_mean)[:, None, None]) / torch.tensor(setup.band_std)[:, None, None])[None]
    rows, cols = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    torch.manual_seed(0)
    for stages in ([1], [1, 3, 5], []):
        columns = hypercolumns(encoder if stages else None, image, rows, cols, stages)
        mean, std = columns.mean(0), columns.std(0).clamp_min(1e-6)
        linear = torch.nn.Linear(columns.shape[1], setup.num_classes)
        model = _classifier(setup, encoder if stages else None, stages, linear, mean, std)
        with torch.no_grad():
            expected = linear((columns - mean) / std)
            logits = model(image)[0].permute(1, 2, 0).reshape(-1, setup.num_classes)
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
        # Only the encoder layers the stages need travel in the model file.
        assert (model.net.encoder is None) == (not stages)
        if stages == [1]:
            assert sum(p.numel() for p in model.parameters()) < 25_000  # the stem alone; a ResNet-18 has 11 M


def test_probe_output_is_a_model_that_evaluate_and_predict_use(tmp_path):
    """`geosscl probe -o` writes a model (by default of stage 1) whose whole-scene evaluation matches the probe's own scores."""
    from geosscl.evaluation import evaluate
    from geosscl.modelfile import read_info

    model = tmp_path / "stage1.safetensors"
    nc = [str(p) for p in NC_BANDS]
    common = [sys.executable, "-m", "geosscl", "probe", *nc, "--labels", str(NC / "strata.tif"), "--classes",
              str(NC / "classes.yaml"), "--crop-size", "64", "--label-fraction", "0.2",
              "--holdout-region", str(NC / "test_region.geojson"), "-q"]
    result = subprocess.run([*common, "-o", str(model), "--json", str(tmp_path / "probe.json")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    probed = json.loads((tmp_path / "probe.json").read_text())
    info = read_info(model)
    assert info.arch == "hypercolumn" and info.stages == [1] and info.class_names[0] == "developed"
    assert info.class_values == [1, 2, 3, 4, 5, 6, 7]
    assert info.provenance["holdout"]["miou"] == pytest.approx(probed["miou"])
    assert info.provenance["software"]["kornia"] == metadata.version("kornia")
    scores, _ = evaluate(str(model), nc, [str(NC / "strata.tif")], region=str(NC / "test_region.geojson"))
    # Tiles blend class probabilities near their edges; the probe scored single logits: close, not equal.
    assert abs(scores.miou - probed["miou"]) < 0.02 and abs(scores.overall_accuracy - probed["overall_accuracy"]) < 0.02
    predicted = tmp_path / "classes.tif"
    run = subprocess.run([sys.executable, "-m", "geosscl", "predict", nc[0], *nc[1:], "-m", str(model), "-o", str(predicted), "-q"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    with rasterio.open(predicted) as src, rasterio.open(NC_BANDS[0]) as ref:
        assert src.shape == ref.shape and src.crs == ref.crs
        assert set(src.read(1).flatten().tolist()) <= set(range(1, 8)) | {src.nodata}
    # Exported to ONNX it gives the same probabilities, on tiles of any size.
    from geosscl.modelfile import load_model
    from geosscl.onnx import export_onnx

    export_onnx(model, tmp_path / "stage1.onnx")
    network, _ = load_model(model)
    exported, _ = load_model(tmp_path / "stage1.onnx")
    x = torch.randn(2, 6, 96, 160)
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(exported(x), 1), torch.softmax(network(x), 1), rtol=1e-4, atol=1e-4)
    # The model file exists: refused without --overwrite, nothing changed.
    before = model.read_bytes()
    again = subprocess.run([*common, "-o", str(model)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "already exists" in again.stderr and again.stderr.strip().count("\n") == 0
    assert model.read_bytes() == before
