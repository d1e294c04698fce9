"""geosscl predict: tiled, streamed class maps of real scenes as COGs; ONNX; polygons; bad input."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
import torch
from rasterio.transform import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

from geosscl import GeossclError, load_model, predict, segment
from geosscl.augment import BandStats
from geosscl.data import Mosaic
from geosscl.data.stats import band_statistics, scale_ratios
from geosscl.finetuning import FinetuneConfig, finetune, prepare
from geosscl.modelfile import read_info
from geosscl.prediction import predict_each
from geosscl.training import PretrainConfig, load_checkpoint, pretrain
from geosscl.inference import TiledSegmenter, _starts
from conftest import BUNDLED_MODEL, NAIP, far_apart_cuts, NC_BANDS, S2_CHIP, S2_WATER, SAMPLES, TUTORIAL_2002, TUTORIAL_POLYGONS, TUTORIAL_STACK, needs_bf16_cpu, write_raster

BANDS = [str(p) for p in NC_BANDS]
NC = SAMPLES / "nc_landsat"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """A segmenter of the NC land-use classes, briefly fine-tuned on the bundled scene."""
    out = tmp_path_factory.mktemp("model") / "nc.safetensors"
    finetune(FinetuneConfig(imagery=BANDS, labels=[str(NC / "strata.tif")], classes=str(NC / "classes.yaml"),
                            out=str(out), max_steps=25, crop_size=64, batch_size=8, num_workers=0, quiet=True))
    return str(out)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Path:
    """The six NC bands as one GeoTIFF (nodata -99999), as users usually hold them: each band's own fill (the
    sixth file's is -32768) written as the one value the stack declares."""
    with rasterio.open(BANDS[0]) as src:
        profile = src.profile
    data = np.stack([np.where(b == src.nodata, profile["nodata"], b).astype("float32")
                     for src in map(rasterio.open, BANDS) for b in [src.read(1)]])
    return write_raster(tmp_path_factory.mktemp("stack") / "nc_stack.tif", data, crs=profile["crs"],
                        transform=profile["transform"], nodata=profile["nodata"])


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geosscl", *args], capture_output=True, text=True, timeout=600, **kwargs)


def test_one_tile_equals_a_full_forward_pass(model):
    network, info = load_model(model)
    mosaic = Mosaic(BANDS)
    # Inside the swath: where a tile reaches past the imagery, the engine moves it onto it (see below).
    x0, y1 = mosaic.bounds[0].start + 60 * 28.5, mosaic.bounds[1].stop - 60 * 28.5
    window = (x0, y1 - 256 * 28.5, x0 + 256 * 28.5, y1)
    classes, profile = segment(mosaic, (network, info), window, tile_size=256, overlap=0)
    image, _, _ = mosaic.read(window)
    normalised, valid = BandStats(torch.tensor(info.band_mean), torch.tensor(info.band_std))(torch.from_numpy(image)[None])
    device = next(network.parameters()).device  # segment() ran it on CUDA where there is one
    with torch.no_grad():
        expected = network(normalised.to(device)).argmax(1)[0].cpu().numpy()
    expected = np.where(valid[0, 0].numpy() > 0, np.array(info.map_values)[expected], 255)  # written as the classes' values
    assert profile["transform"] == Affine(28.5, 0, x0, 0, -28.5, y1)
    np.testing.assert_array_equal(classes, expected)
    assert len(np.unique(expected)) >= 3  # a model that says one thing would prove nothing


def test_tiles_and_blocks_agree_with_one_pass_away_from_borders():
    # The bundled model, not the 25-step fixture: how far a U-Net's view reaches past a
    # tile margin depends on its weights, and a barely trained one swings between runs.
    network, info = load_model(BUNDLED_MODEL)
    mosaic = Mosaic(BANDS)
    # Inside the swath, context included (where a tile would reach past the imagery, the engine moves it).
    x0, y1 = mosaic.bounds[0].start + 90 * 28.5, mosaic.bounds[1].stop - 80 * 28.5
    window = (x0, y1 - 256 * 28.5, x0 + 256 * 28.5, y1)
    whole = TiledSegmenter(network, info, tile_size=256, overlap=0).probabilities(mosaic, window)[0]
    # Blocks of 192 px (context margin 32 px), each cut into overlapping 224 px tiles.
    engine = TiledSegmenter(network, info, tile_size=224, overlap=32, batch_size=3, block_size=192)
    tiled = torch.zeros_like(whole)
    for block in engine.blocks(mosaic, window):
        col, row = round((block.bounds[0] - x0) / 28.5), round((y1 - block.bounds[3]) / 28.5)
        tiled[:, row : row + block.classes.shape[0], col : col + block.classes.shape[1]] = block.probabilities
    inner = (slice(None), slice(32, -32), slice(32, -32))
    # Not equal: a U-Net sees farther than any tile margin, and its output moves with where the tile edges
    # fall. Close (measured: 0.013 and 93.9 %; blocks misplaced by one row: 0.022 and 90.5 %).
    assert (whole[inner] - tiled[inner]).abs().mean() < 0.02
    assert (whole.argmax(0)[inner[1:]] == tiled.argmax(0)[inner[1:]]).float().mean() > 0.91


def test_predict_writes_a_cloud_optimised_class_map(model, tmp_path):
    out = tmp_path / "classes.tif"
    progress = []
    predict(BANDS, model, out, tile_size=128, overlap=32, block_size=160, creation_options={"BLOCKSIZE": "128"},
            progress=lambda done, total: progress.append((done, total)))
    assert progress[-1] == (len(progress), len(progress)) and len(progress) == 3 * 4
    mosaic = Mosaic(BANDS)
    image, transform, _ = mosaic.read((mosaic.bounds[0].start, mosaic.bounds[1].start, mosaic.bounds[0].stop, mosaic.bounds[1].stop))
    with rasterio.open(out) as dst, rasterio.open(BANDS[0]) as src:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.shape == src.shape
        assert dst.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert dst.profile["tiled"] and dst.block_shapes[0] == (128, 128)
        assert dst.overviews(1) == [2, 4]
        assert dst.nodata == 255 and dst.dtypes[0] == "uint8"
        classes = dst.read(1)
        assert json.loads(dst.tags()["class_names"])[0] == "developed" and json.loads(dst.tags()["class_values"])[0] == 1
        assert dst.colormap(1)[1][:3] == (230, 25, 75)
        overview = dst.read(1, out_shape=(dst.height // 4, dst.width // 4))
        assert set(np.unique(overview)) <= set(np.unique(classes))  # NEAREST: no invented class ids

    np.testing.assert_array_equal(classes == 255, np.isnan(image).any(0))
    assert (classes != 255).mean() > 0.5
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)
    # The sidecar holds the class names as GDAL category names (tests/test_categories.py).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif", "classes.tif.aux.xml"]


def test_tiles_without_input_are_not_run_and_change_nothing(model, tmp_path):
    # Two cuts of the NC scene, the second 600 px right and 400 px down of the first, in one block: the tiles
    # of its empty quarters (and of the cuts' own collars) hold no input.
    here, there, _ = far_apart_cuts(tmp_path, (600, 400))
    network, info = load_model(model)
    mosaic = Mosaic([str(here), str(there)])
    x, y, _ = mosaic.bounds
    area = (x.start, y.start, x.stop, y.stop)
    runs = []
    hook = network.register_forward_hook(lambda module, args, output: runs.append(len(args[0])))
    maps = {}
    try:
        for skip in (True, False):
            runs.clear()
            # One tile a batch: the same tiles then meet the same arithmetic whichever others run.
            engine = TiledSegmenter(network, info, tile_size=64, overlap=16, batch_size=1, block_size=2048, skip_empty=skip)
            blocks = list(engine.blocks(mosaic, area))
            maps[skip] = (blocks, sum(runs))
    finally:
        hook.remove()
    (skipped, ran_skip), (every, ran_all) = maps[True], maps[False]
    assert [b.bounds for b in skipped] == [b.bounds for b in every] and len(every) == 1
    # The tiles holding a valid pixel, counted from the imagery itself.
    image, _, _ = mosaic.read(area)
    valid = ~np.isnan(image).any(0)
    span_h, span_w = max(valid.shape[0] + 32, 64), max(valid.shape[1] + 32, 64)
    part = np.zeros((span_h, span_w), bool)
    part[16 : 16 + valid.shape[0], 16 : 16 + valid.shape[1]] = valid
    # Tiles reaching past the first or last row (or column) holding input move onto it.
    rows, cols = np.flatnonzero(part.any(1)), np.flatnonzero(part.any(0))
    holding = sum(bool(part[r : r + 64, c : c + 64].any())
                  for r in _starts(span_h, 64, 16, within=(rows[0], rows[-1] + 1))
                  for c in _starts(span_w, 64, 16, within=(cols[0], cols[-1] + 1)))
    assert ran_skip == holding < 0.7 * ran_all  # measured 126 of 315
    for a, b in zip(skipped, every):
        keep = b.classes >= 0
        assert torch.equal(a.classes, b.classes)
        assert torch.equal(a.probabilities[:, keep], b.probabilities[:, keep])


def _inputs(network: torch.nn.Module, run) -> torch.Tensor:
    """The tiles ``run()`` feeds ``network``, as one ``N×C×H×W`` tensor."""
    tiles = []
    hook = network.register_forward_hook(lambda module, args, output: tiles.append(args[0].detach().cpu()))
    try:
        run()
    finally:
        hook.remove()
    return torch.cat(tiles)


def test_tiles_lie_on_the_imagery(tmp_path):
    # A 300 × 200 px cut from inside the NC swath (every pixel has input), in blocks of 160 px: every block's
    # context margin at the cut's edges, and the rest of its last tiles, lie beyond the imagery. A tile reaching
    # there would show the network fill where it was trained on ground; each must be a window of the imagery.
    mosaic = Mosaic(BANDS)
    x0, y1 = mosaic.bounds[0].start + 80 * 28.5, mosaic.bounds[1].stop - 80 * 28.5
    area = (x0, y1 - 200 * 28.5, x0 + 300 * 28.5, y1)
    image, transform, _ = mosaic.read(area)
    assert not np.isnan(image).any()
    cut = write_raster(tmp_path / "cut.tif", image, crs=mosaic.crs, transform=transform, nodata=-99999)
    network, info = load_model(BUNDLED_MODEL)
    normalised = BandStats(torch.tensor(info.band_mean), torch.tensor(info.band_std))(torch.from_numpy(image)[None])[0][0]
    engine = TiledSegmenter(network, info, tile_size=128, overlap=32, block_size=160, device="cpu")
    blocks = []
    seen = _inputs(network, lambda: blocks.extend(engine.blocks(Mosaic([str(cut)]), area)))
    assert len(seen) >= 2 * 3 and all(bool((b.classes >= 0).all()) for b in blocks)
    for tile in seen:
        (r, c), *_ = np.argwhere((normalised == tile[:, :1, :1]).all(0).numpy())
        assert torch.equal(tile, normalised[:, r : r + 128, c : c + 128])
    # Imagery narrower than a tile: one tile, centred on it, the 14 px beyond each side its mirror image.
    strip = write_raster(tmp_path / "strip.tif", image[:, :, :100], crs=mosaic.crs, transform=transform, nodata=-99999)
    tiles = _inputs(network, lambda: list(TiledSegmenter(network, info, tile_size=128, overlap=32, device="cpu").blocks(
        Mosaic([str(strip)]), (x0, y1 - 200 * 28.5, x0 + 100 * 28.5, y1))))
    assert len(tiles) == 3  # rows 0-127, 64-191 and 72-199 of the strip
    for tile in tiles:
        assert any(torch.equal(tile[:, :, 14:114], normalised[:, r : r + 128, :100]) for r in range(73))
        assert torch.equal(tile[:, :, :14], tile[:, :, 15:29].flip(2))
        assert torch.equal(tile[:, :, 114:], tile[:, :, 99:113].flip(2))


def test_ground_beside_fill_is_read_as_the_same_ground(tmp_path):
    # The NC scene with two wedges cut from it (a swath's edge is rarely a rectangle): the pixels next to the
    # cuts are classified as in the whole scene, where a flat fill (the band means) in their tiles moved them.
    image, transform, _ = Mosaic(BANDS).read(tuple(Mosaic(BANDS).index.total_bounds))
    rows, cols = np.mgrid[: image.shape[1], : image.shape[2]]
    wedge = (rows + cols < 330) | (rows - cols > 150)
    cut = write_raster(tmp_path / "wedges.tif", np.where(wedge, np.float32(-99999), np.nan_to_num(image, nan=-99999)),
                       crs=Mosaic(BANDS).crs, transform=transform, nodata=-99999)
    whole, _ = segment(BANDS, BUNDLED_MODEL, device="cpu")
    beside, _ = segment(str(cut), BUNDLED_MODEL, device="cpu")
    distance = np.minimum(rows + cols - 330, cols - rows + 150) / np.sqrt(2)
    near = ~np.isnan(image).any(0) & ~wedge & (distance <= 4)
    assert (beside[wedge] == 255).all() and near.sum() > 2000
    assert (beside[near] == whole[near]).mean() > 0.83  # measured 0.867; 0.729 with the fill flat
    far = ~np.isnan(image).any(0) & (distance > 64)
    assert (beside[far] == whole[far]).mean() > 0.99


def test_files_far_apart_cost_their_own_blocks(model, tmp_path, caplog):
    # Blocks of 160 px; the second file lies a whole number of blocks away, so each file's blocks, tiles and
    # context are what they are when it is segmented alone.
    here, there, _ = far_apart_cuts(tmp_path / "scenes", (60 * 160, 30 * 160))
    options = dict(tile_size=128, overlap=32, block_size=160)
    ticks = []
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        predict([here, there], model, tmp_path / "both.tif", vector=tmp_path / "both.gpkg",
                progress=lambda done, total: ticks.append(total), **options)
    assert set(ticks) == {2 * 3 * 2}  # of the 63 × 32 blocks the extent holds
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == [f"{here} (+1 more): its 2 files cover 0.6 % of the 10,080 × 5,120 px class map their bounds "
                       "span: the rest is nodata, left out of the file (a sparse GeoTIFF, which GDAL-based software "
                       "reads; --co SPARSE_OK=FALSE writes it), and writing the map takes time; --each writes one map "
                       "per file, each of its own extent"]
    for alone in (here, there):
        predict([alone], model, tmp_path / f"{alone.stem}_alone.tif", creation_options={"BLOCKSIZE": "32"}, **options)
    with rasterio.open(tmp_path / "here_alone.tif") as src:
        # A file on its own is not sparse: readers that are not GDAL need every block, also those of nodata only.
        rows, cols = -(-src.height // 32), -(-src.width // 32)
        assert all(src.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1) for r in range(rows) for c in range(cols))
        assert (src.read(1).reshape(10, 32, 15, 32) == 255).all(axis=(1, 3)).sum() >= 5  # of the scene's collar
    with rasterio.open(tmp_path / "both.tif") as both:
        for alone in (here, there):
            with rasterio.open(tmp_path / f"{alone.stem}_alone.tif") as src:
                single = src.read(1)
                window = both.window(*src.bounds)
                np.testing.assert_array_equal(both.read(1, window=window), single)
                assert len(np.unique(single)) >= 3
        classes = both.read(1)
        assert (classes != 255).sum() == 2 * (single != 255).sum()
        # Sparse: the ground between the files was never written (GDAL gives no offset for such blocks),
        # the blocks holding a file were.
        assert not both.get_tag_item("BLOCK_OFFSET_10_5", "TIFF", bidx=1)
        assert both.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1)
    frame = gpd.read_file(tmp_path / "both.gpkg", layer="classes")  # the polygons of both places, and no more
    for alone in (here, there):
        with rasterio.open(alone) as src:
            place = frame.clip(shapely.box(*src.bounds))
        assert place.geometry.area.sum() == pytest.approx((single != 255).sum() * 28.5**2, rel=1e-9)
    assert frame.geometry.area.sum() == pytest.approx((classes != 255).sum() * 28.5**2, rel=1e-9)


def _two_scenes_in_two_crs(stack, folder: Path, names: tuple[str, str] = ("west.tif", "east.tif")) -> tuple[Path, Path, int]:
    """The NC scene's western half as it is, its eastern half warped to UTM 17N (two files of a survey), and the
    column where the halves meet."""
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(stack) as src:
        data, profile = src.read(), src.profile
    half = data.shape[2] // 2
    west = write_raster(folder / names[0], data[:, :, :half], crs=profile["crs"], transform=profile["transform"],
                        nodata=profile["nodata"])
    east_t = profile["transform"] @ Affine.translation(half, 0)
    bounds = rasterio.transform.array_bounds(data.shape[1], data.shape[2] - half, east_t)
    dst_t, w, h = calculate_default_transform(profile["crs"], "EPSG:32617", data.shape[2] - half, data.shape[1], *bounds)
    warped = np.full((data.shape[0], h, w), profile["nodata"], dtype=data.dtype)
    reproject(data[:, :, half:], warped, src_transform=east_t, src_crs=profile["crs"], src_nodata=profile["nodata"],
              dst_transform=dst_t, dst_crs="EPSG:32617", dst_nodata=profile["nodata"], resampling=Resampling.bilinear)
    east = write_raster(folder / names[1], warped, crs="EPSG:32617", transform=dst_t, nodata=profile["nodata"])
    return west, east, half


def test_two_files_in_different_crs_make_one_map(stack, tmp_path):
    # The first file in sorted order sets the mosaic's grid: the west half's. The bundled model: the 25-step one's
    # classes flip under a warp's resampling (0.66 of the east half agreed), a trained one's hold.
    left, right, half = _two_scenes_in_two_crs(stack, tmp_path, ("a_west.tif", "b_east_utm17.tif"))
    out, whole = tmp_path / "mosaic.tif", tmp_path / "whole.tif"
    result = _cli("predict", str(left), str(right), "-m", str(BUNDLED_MODEL), "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    predict([str(stack)], BUNDLED_MODEL, whole)
    with rasterio.open(out) as a, rasterio.open(whole) as b:
        assert a.crs == b.crs and a.res == b.res
        # One grid: the west file's. The warped east file reaches a little farther north.
        assert a.transform.c == b.transform.c
        shift = (a.transform.f - b.transform.f) / 28.5
        assert shift == round(shift) and 0 <= shift < 20
        got, reference = a.read(1)[round(shift) : round(shift) + b.height], b.read(1)
    cols = min(got.shape[1], reference.shape[1])
    assert (got[:, half - 100 : half] != 255).mean() > 0.5 and (got[:, half + 20 : half + 120] != 255).mean() > 0.5
    # Away from the join, the west half is the same file; the mosaic's tiles start a few rows farther north, so
    # they blend differently (0.981 measured).
    west = (slice(None), slice(0, half - 40))
    assert (got[west] == reference[west]).mean() > 0.95
    east = (slice(None), slice(half + 40, cols - 10))
    agree = (got[east] == reference[east])[(reference[east] != 255) & (got[east] != 255)].mean()
    assert agree > 0.85, agree  # the east half went through a warp and back: close, not equal (0.881 measured)


def test_each_file_is_segmented_on_its_own_grid(model, stack, tmp_path):
    scenes = tmp_path / "survey"
    west, east, _ = _two_scenes_in_two_crs(stack, scenes)
    out, vectors = tmp_path / "classes", tmp_path / "polygons"
    result = _cli("predict", str(scenes), "-m", model, "-o", str(out), "--each", "--vector", str(vectors),
                  "--progress", "jsonl")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == [{"done": 1, "total": 2}, {"done": 2, "total": 2},
                     {"outputs": [str(out / "east_classes.tif"), str(out / "west_classes.tif")]}]
    assert sorted(p.name for p in vectors.iterdir()) == ["east_classes.gpkg", "west_classes.gpkg"]
    for scene in (west, east):
        alone = tmp_path / f"{scene.stem}_alone.tif"
        predict([str(scene)], model, alone)
        with rasterio.open(out / f"{scene.stem}_classes.tif") as got, rasterio.open(alone) as want, rasterio.open(scene) as src:
            # Its own CRS and grid (the east file stays in UTM 17N), and the map predict makes of it alone.
            assert got.crs == src.crs and got.transform == want.transform and got.shape == want.shape
            np.testing.assert_array_equal(got.read(1), want.read(1))
        assert gpd.read_file(vectors / f"{scene.stem}_classes.gpkg").crs == src.crs
    # A rerun skips the files whose outputs exist (a stopped batch goes on); --overwrite remakes them.
    stamp = os.stat(out / "west_classes.tif").st_mtime_ns
    again = _cli("predict", str(scenes), "-m", model, "-o", str(out), "--each", "--vector", str(vectors))
    assert again.returncode == 0 and "west.tif: skipped, its outputs exist" in again.stderr, again.stderr[-2000:]
    assert os.stat(out / "west_classes.tif").st_mtime_ns == stamp
    assert _cli("predict", str(west), "-m", model, "-o", str(out), "--each", "--overwrite", "-q").returncode == 0
    assert os.stat(out / "west_classes.tif").st_mtime_ns != stamp
    # Bad input: one line naming the problem, exit 1, nothing written.
    (scenes / "more").mkdir()
    with rasterio.open(west) as src:
        write_raster(scenes / "more" / "west.tif", src.read(), crs=src.crs, transform=src.transform, nodata=src.nodata)
    fresh = tmp_path / "fresh"
    for args, message in (
            ([str(scenes)], "has the same name; their outputs would be one file (west_classes.tif)"),
            ([str(west), str(NAIP)], "has 4 band(s); the model reads bands 1,2,3,4,5,6"),
            ([str(tmp_path)], "is inside"),
    ):
        bad = _cli("predict", *args, "-m", model, "-o", str(fresh if args != [str(tmp_path)] else tmp_path / "x"), "--each")
        assert bad.returncode == 1 and message in bad.stderr and bad.stderr.strip().count("\n") == 0, bad.stderr
        assert not fresh.exists() and not (tmp_path / "x").exists()
    partial = _cli("predict", str(east), "-m", model, "-o", str(out), "--each", "--preview", str(tmp_path / "png"))
    assert partial.returncode == 1 and "east_classes.tif: already exists, without the scene's other outputs" in partial.stderr


def test_onnx_export_runs_and_matches_torch(model, tmp_path):
    onnx_file = tmp_path / "model.onnx"
    result = _cli("export", model, "-o", str(onnx_file))
    assert result.returncode == 0, result.stderr
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_file), load_external_data=False).metadata_props}
    assert meta["model_type"] == "Segmentor" and json.loads(meta["class_names"])["5"] == "water"
    _, info = load_model(model)
    # The model was fine-tuned on 64 px crops: it predicts, and Deepness tiles, at that size.
    assert meta["resolution"] == "2850" and meta["tiles_size"] == str(info.tile_size) == "64"
    assert json.loads(meta["standardization_mean"]) == pytest.approx([m / 255 for m in info.band_mean])
    info_out = _cli("info", str(onnx_file))
    assert json.loads(info_out.stdout)["class_names"] == info.class_names
    torch_out, onnx_out = tmp_path / "t.tif", tmp_path / "o.tif"
    predict(BANDS, model, torch_out, probabilities=tmp_path / "tp.tif")
    predict(BANDS, str(onnx_file), onnx_out, probabilities=tmp_path / "op.tif")
    with rasterio.open(tmp_path / "tp.tif") as a, rasterio.open(tmp_path / "op.tif") as b:
        pa, pb = a.read(), b.read()
        assert a.count == 7 and a.descriptions[5] == "water"  # a band per class, not per value
        assert json.loads(a.tags()["class_values"]) == [1, 2, 3, 4, 5, 6, 7]
    np.testing.assert_allclose(pa, pb, atol=1e-4, equal_nan=True)
    a, b = rasterio.open(torch_out).read(1), rasterio.open(onnx_out).read(1)
    assert (a == b).mean() > 0.999
    with pytest.raises(GeossclError, match=r"^precision: bf16 runs PyTorch models \(.safetensors\); an ONNX model"):
        predict(BANDS, str(onnx_file), tmp_path / "bf16.tif", precision="bf16")
    assert not (tmp_path / "bf16.tif").exists()


def test_polygons_rasterise_back_to_the_class_map(model, tmp_path):
    out, exact, smooth = tmp_path / "c.tif", tmp_path / "exact.gpkg", tmp_path / "smooth.gpkg"
    predict(BANDS, model, out, vector=exact, simplify=0)
    with rasterio.open(out) as src:
        classes, transform, res = src.read(1), src.transform, src.res[0]
    frame = gpd.read_file(exact, layer="classes")
    assert set(frame.columns) >= {"class_id", "class_name", "geometry"} and frame.crs == rasterio.open(out).crs
    assert frame.loc[frame.class_id == 5, "class_name"].iloc[0] == "forest"
    burnt = rasterio.features.rasterize(zip(frame.geometry, frame.class_id), out_shape=classes.shape,
                                        transform=transform, fill=255, dtype="uint8")
    np.testing.assert_array_equal(burnt, classes)
    predict(BANDS, model, tmp_path / "c2.tif", vector=smooth, simplify=1.5)
    simple = gpd.read_file(smooth, layer="classes")
    assert len(simple) == len(frame)
    assert shapely.get_num_coordinates(simple.geometry.values).sum() < 0.8 * shapely.get_num_coordinates(frame.geometry.values).sum()
    # Shared edges moved together, the outline stayed: no gap opened and no overlap made.
    whole = shapely.union_all(frame.geometry.values)
    assert shapely.union_all(simple.geometry.values).symmetric_difference(whole).area < 1e-6 * res * res
    assert simple.geometry.area.sum() == pytest.approx(whole.area, rel=1e-9)


def test_progress_jsonl_and_gsd_mismatch(model, stack, tmp_path):
    coarse = tmp_path / "coarse.tif"
    with rasterio.open(stack) as src:
        data = src.read(out_shape=(src.count, src.height // 2, src.width // 2), resampling=Resampling.average)
        transform = src.transform @ Affine.scale(src.width / (src.width // 2), src.height / (src.height // 2))
        write_raster(coarse, data, crs=src.crs, transform=transform, nodata=src.nodata)
    out = tmp_path / "fine.tif"
    result = _cli("predict", str(coarse), "-m", model, "-o", str(out), "--progress", "jsonl")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-2] == {"done": 1, "total": 1} and lines[-1]["output"] == str(out)
    preview = tmp_path / "preview.png"
    assert _cli("predict", str(coarse), "-m", model, "-o", str(tmp_path / "p.tif"), "--preview", str(preview),
                "--preview-rgb", "3,2,1", "-q").returncode == 0
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and preview.stat().st_size > 10_000
    assert "ground sampling distance" in result.stderr and "reading at the model's" in result.stderr
    with rasterio.open(out) as dst:
        assert dst.res == pytest.approx((28.5, 28.5), rel=0.02)
    kept = tmp_path / "kept.tif"
    assert _cli("predict", str(coarse), "-m", model, "-o", str(kept), "--no-resample", "-q").returncode == 0
    with rasterio.open(kept) as dst, rasterio.open(coarse) as src:
        assert dst.res == src.res


def test_imagery_in_other_units_than_the_model_s_is_warned_about(stack, tmp_path, caplog):
    """DN fed to a model of reflectance (or the reverse) is normalised with the wrong statistics and makes a map of
    nonsense without any error. Real cases: the NC scene (ETM+ DN) and the tutorial scenes (the same sensor's
    bands 1-5 and 7 as reflectance x 10,000), one clear date and one hazy, partly cloudy."""
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        segment(str(stack), BUNDLED_MODEL, (636000, 220000, 638000, 222000))
    assert caplog.text == ""  # its own imagery
    result = _cli("predict", str(TUTORIAL_STACK), "-b", "1,2,3,4,5,7", "-m", BUNDLED_MODEL, "-o", str(tmp_path / "m.tif"))
    assert result.returncode == 0, result.stderr  # a warning: no threshold tells units from ground for sure
    warning = next(line for line in result.stderr.splitlines() if "other units" in line)
    assert re.search(rf"{TUTORIAL_STACK.name}: every band averages (\d+\.?\d*)× to (\d+\.?\d*)× the model's training "
                     r"imagery \(band 1: \d+\.?\d* here, 79\.55 there\): other units or scaling", warning)
    low, high = map(float, re.search(r"averages (\S+)× to (\S+)×", warning).groups())
    assert 4 < low < high
    # Fine-tuning from the model normalises with its statistics too.
    result = _cli("finetune", str(TUTORIAL_STACK), "-b", "1,2,3,4,5,7", "--labels", str(TUTORIAL_POLYGONS), "--class-column",
                  "id", "--init", str(BUNDLED_MODEL), "--max-steps", "1", "--crop-size", "64", "--batch-size", "4",
                  "--num-workers", "0", "--out", str(tmp_path / "ft.safetensors"))
    assert result.returncode == 0, result.stderr
    assert f"the training imagery of {BUNDLED_MODEL} (band 1: " in result.stderr
    # Another date of one sensor in one unit, hazier, is other ground, not other units.
    clear, hazy = (band_statistics(Mosaic(str(path), bands=[1, 2, 3, 4, 5, 7]))[0] for path in (TUTORIAL_STACK, TUTORIAL_2002))
    nc = band_statistics(Mosaic(BANDS))[0]
    assert scale_ratios(hazy, clear) is None and scale_ratios(clear, hazy) is None
    assert scale_ratios(clear, nc)[0] > 4 and scale_ratios(nc, clear)[1] < 1 / 4
    assert scale_ratios([-12.0, -18.0], [0.05, 0.02]) is None  # decibels: no ratio tells


def test_a_fill_the_files_do_not_declare_is_nodata_with_nodata_and_stays_so_in_the_model(tmp_path):
    """Scenes often come with a collar of zeros outside the image and no nodata declared: without --nodata it is
    read as ground, classified, and trained on. The NC scene with its western 60 columns zeroed, nodata undeclared."""
    with rasterio.open(BANDS[0]) as src:
        profile = src.profile
    data = np.stack([rasterio.open(p).read(1) for p in BANDS])
    data[:, :, :60] = 0
    collared = write_raster(tmp_path / "collar.tif", data, crs=profile["crs"], transform=profile["transform"])
    whole = Mosaic(str(collared))
    bounds = tuple(whole.index.total_bounds)
    assert not np.isnan(whole.read(bounds)[0]).any()
    image = Mosaic(str(collared), nodata=0).read(bounds)[0]
    assert np.isnan(image[:, :, :60]).all() and not np.isnan(image[:, :, 60:]).any()
    plain, _ = segment(str(collared), BUNDLED_MODEL)
    assert (plain[:, :60] != 255).all()  # the collar classified as ground
    masked, _ = segment(str(collared), BUNDLED_MODEL, nodata=0)
    assert (masked[:, :60] == 255).all() and (masked[:, 60:] != 255).all()
    # Beyond the reach of the tiles that moved onto the imagery (128 px from its edge), the same map.
    np.testing.assert_array_equal(masked[:, 60 + 128:], plain[:, 60 + 128:])
    # A model fine-tuned with --nodata keeps it: its maps leave the collar out with no option given.
    model = tmp_path / "collar.safetensors"
    result = _cli("finetune", str(collared), "--labels", str(NC / "strata.tif"), "--nodata", "0", "--max-steps", "1",
                  "--crop-size", "64", "--batch-size", "4", "--num-workers", "0", "--out", str(model), "-q")
    assert result.returncode == 0, result.stderr
    assert read_info(model).nodata == 0
    out = tmp_path / "map.tif"
    assert _cli("predict", str(collared), "-m", str(model), "-o", str(out), "-q").returncode == 0
    with rasterio.open(out) as dst:
        written = dst.read(1)
    assert (written[:, :60] == 255).all() and (written[:, 60:] != 255).all()
    # So does a pretraining run, and the model fine-tuned from it.
    run = pretrain(PretrainConfig(imagery=[str(collared)], nodata=0, out=str(tmp_path / "run"), max_steps=1, crop_size=64,
                                  batch_size=4, num_workers=0, queue_size=8, quiet=True))
    assert load_checkpoint(os.path.join(run, "last.ckpt"))["hyper_parameters"]["nodata"] == 0
    setup = prepare(FinetuneConfig(imagery=[str(collared)], labels=[str(NC / "strata.tif")],
                                   init=os.path.join(run, "last.ckpt"), crop_size=64))
    assert setup.mosaic.nodata == 0


def test_a_fill_the_files_do_not_declare_is_warned_of(tmp_path, caplog):
    """The NC scene written with zeros outside its footprint and no nodata (as many exports are), and its band files
    stacked under the first file's nodata (-99999), the sixth band's own fill (-32768) left as a value: each fill is
    warned of, with the remedy that works for that file. A mask band (the tutorial's Fmask, mostly 0) is not."""
    mosaic = Mosaic(BANDS)
    image, transform, _ = mosaic.read(tuple(mosaic.index.total_bounds))
    footprint = ~np.isnan(image).any(0)  # where every band has data: 62 % of the rectangle
    collared = write_raster(tmp_path / "collar.tif", np.where(footprint, image, 0.0).astype("float32"), crs=mosaic.crs,
                            transform=transform)
    data = np.stack([rasterio.open(p).read(1).astype("float32") for p in BANDS])
    stacked = write_raster(tmp_path / "stacked.tif", data, crs=mosaic.crs, transform=transform, nodata=-99999)
    assert (data[5] == -32768).mean() > 0.1 and not (data[:5] == -32768).any()

    def warnings(*args, **kwargs):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="geosscl"):
            band_statistics(Mosaic(*args, **kwargs))
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    [zeros] = warnings([str(collared)])
    assert re.fullmatch(rf"{collared}: bands 1, 2, 3, 4, 5, 6 hold 0 in \d\d % of the sampled pixels, a value the files "
                        r"do not declare as nodata: a fill \(a collar, ground outside the scene\)\? If so, give "
                        r"--nodata 0 \(nodata= in Python\); else it is read as ground", zeros), zeros
    assert warnings([str(collared)], nodata=0) == []
    [band6] = warnings([str(stacked)])
    assert re.fullmatch(rf"{stacked}: band 6 holds -32768 in \d\d % of the sampled pixels, a value the files do not "
                        r"declare as nodata: a fill \(a collar, ground outside the scene\)\? If so, the files declare "
                        r"-99999 as nodata, which --nodata would replace: write -99999 where the band holds -32768; "
                        r"else it is read as ground", band6), band6
    assert warnings(BANDS) == []  # each file declares its own
    assert warnings([str(TUTORIAL_STACK)]) == []  # band 8 is a mask: 0 is a class there
    # Where users meet it: the line before the map is written.
    result = _cli("predict", str(collared), "-m", str(BUNDLED_MODEL), "-o", str(tmp_path / "map.tif"))
    assert result.returncode == 0 and "hold 0 in" in result.stderr and "give --nodata 0" in result.stderr


def test_model_of_geographic_imagery_predicts_on_its_own_grid(tmp_path):
    """A model made on EPSG:4326 imagery (the Sen1Floods11 chip, 38° N) keeps its GSD in metres at that latitude.
    It was once compared with the scene's at the equator, 1.13× the chip's: so the chip's own model resampled it
    (455 × 455 pixels out of 512 × 512) and warned."""
    model = tmp_path / "water.safetensors"
    made = _cli("probe", str(S2_CHIP), "--labels", str(S2_WATER), "--label-nodata", "-1", "--stages", "1",
                "--val-fraction", "0", "--weight-decay", "0.001", "--crop-size", "64", "-o", str(model), "-q")
    assert made.returncode == 0, made.stderr
    info = load_model(model)[1]
    with rasterio.open(S2_CHIP) as src:
        lat = (src.bounds.bottom + src.bounds.top) / 2
        assert 37 < lat < 39
        metres = src.res[0] * 111_320 * np.cos(np.radians(lat)), src.res[1] * 110_574
        assert info.gsd == pytest.approx(np.sqrt(metres[0] * metres[1]), rel=1e-6)
        assert 7 < info.gsd < 10  # Sentinel-2's 10 m bands, in degrees
        out = tmp_path / "water.tif"
        result = _cli("predict", str(S2_CHIP), "-m", str(model), "-o", str(out))
        assert result.returncode == 0, result.stderr
        assert "ground sampling distance" not in result.stderr
        with rasterio.open(out) as dst:
            assert dst.shape == src.shape and dst.transform == src.transform
            water = dst.read(1)
    labels = rasterio.open(S2_WATER).read(1)
    assert (water[labels >= 0] == labels[labels >= 0]).mean() > 0.9


def test_bidx_picks_and_reorders_bands(model, stack, tmp_path):
    with rasterio.open(stack) as src:
        data, profile = src.read(), src.profile
    shuffled = write_raster(tmp_path / "shuffled.tif", np.concatenate([data[::-1], data[:1]]), crs=profile["crs"],
                            transform=profile["transform"], nodata=profile["nodata"])
    plain, picked = tmp_path / "plain.tif", tmp_path / "picked.tif"
    predict([str(stack)], model, plain)
    assert _cli("predict", str(shuffled), "-m", model, "-o", str(picked), "-b", "6,5,4,3,2,1", "-q").returncode == 0
    np.testing.assert_array_equal(rasterio.open(plain).read(1), rasterio.open(picked).read(1))
    result = _cli("predict", str(shuffled), "-m", model, "-o", str(tmp_path / "x.tif"), "-b", "1,2,3")
    assert result.returncode == 1 and "--bidx picks 3 band(s); the model takes 6" in result.stderr


def test_bad_input_fails_cleanly(model, tmp_path):
    out = tmp_path / "out.tif"
    not_raster = tmp_path / "notes.tif"
    not_raster.write_text("hello")
    no_crs = write_raster(tmp_path / "nocrs.tif", np.ones((6, 64, 64), np.float32), crs=None)
    four = write_raster(tmp_path / "four.tif", np.ones((4, 64, 64), np.float32))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(Path(model).read_bytes()[:5000])
    pickled = tmp_path / "evil.safetensors"
    pickled.write_bytes(b"\x80\x04\x95" + os.urandom(64))
    cases = [
        ((str(not_raster), "-m", model, "-o", str(out)), "notes.tif"),
        ((str(no_crs), "-m", model, "-o", str(out)), "no CRS"),
        ((str(four), "-m", model, "-o", str(out)), "has 4 band(s)"),
        ((BANDS[0], "-m", str(corrupt), "-o", str(out)), "corrupt.safetensors"),
        ((BANDS[0], "-m", str(pickled), "-o", str(out)), "not a geosscl model file"),
        ((*BANDS, "-m", model, "-o", str(tmp_path / "missing" / "o.tif")), "does not exist"),
        # Each output has one format: a GeoTIFF named .png, or a GeoPackage named .shp, would mislead every tool after.
        ((*BANDS, "-m", model, "-o", str(tmp_path / "map.png")), "map.png: the class map is a Cloud-Optimised GeoTIFF; "
                                                                  "name it .tif"),
        ((*BANDS, "-m", model, "-o", str(out), "--vector", str(tmp_path / "p.shp")), "p.shp: polygons are a GeoPackage "
                                                                                      "layer (ogr2ogr converts it); name it .gpkg"),
        ((*BANDS, "-m", model, "-o", str(out), "--preview", str(tmp_path / "p.jpg")), "p.jpg: the preview is a PNG"),
        ((*BANDS, "-m", model, "-o", str(out), "--probabilities", str(tmp_path / "p.img")), "p.img: probabilities are"),
    ]
    for args, message in cases:
        result = _cli("predict", *args)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) <= 2, result.stderr
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.safetensors", "evil.safetensors", "four.tif",
                                                          "nocrs.tif", "notes.tif"]
    out.write_bytes(b"keep")
    result = _cli("predict", *BANDS, "-m", model, "-o", str(out))
    assert result.returncode == 1 and "already exists; pass --overwrite" in result.stderr and out.read_bytes() == b"keep"
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    if os.geteuid() == 0:
        readonly = Path("/proc/1")  # root may write in any directory, but not here
    assert not os.access(readonly, os.W_OK)
    result = _cli("predict", *BANDS, "-m", model, "-o", str(readonly / "o.tif"))
    assert result.returncode == 1 and "is not writable" in result.stderr
    with pytest.raises(GeossclError, match="need different file names"):
        predict(BANDS, model, tmp_path / "same.tif", probabilities=tmp_path / "same.tif")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_nothing(model, stack, tmp_path, sig):
    with rasterio.open(stack) as src:
        data, profile = src.read(), src.profile
    big = write_raster(tmp_path / "big.tif", np.tile(data, (1, 3, 3)), crs=profile["crs"],
                       transform=profile["transform"], nodata=profile["nodata"])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "geosscl", "predict", str(big), "-m", model, "-o", str(out_dir / "c.tif"),
         "--probabilities", str(out_dir / "p.tif"), "--tile-size", "64", "--overlap", "16", "--progress", "jsonl"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As in a terminal: a job started in the background by a shell inherits SIGINT
        # ignored, and Python then leaves it ignored (nohup semantics).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    first = process.stdout.readline()
    assert json.loads(first)["done"] == 1, first + process.stderr.read()
    time.sleep(0.5)
    process.send_signal(sig)
    process.wait(timeout=120)
    assert process.returncode != 0
    assert list(out_dir.iterdir()) == []


def test_a_vrt_is_a_scene(model, tmp_path):
    from_vrt, from_files = tmp_path / "vrt.tif", tmp_path / "files.tif"
    assert _cli("predict", str(NC / "lsat7_2000.vrt"), "-m", model, "-o", str(from_vrt), "-q").returncode == 0
    predict(BANDS, model, from_files)
    with rasterio.open(from_vrt) as a, rasterio.open(from_files) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
        assert a.transform == b.transform and a.crs == b.crs


def test_too_many_classes_for_a_uint8_map(tmp_path):
    from geosscl.modelfile import ModelInfo, default_colors
    from geosscl.models import SegmentationNetwork

    info = ModelInfo(arch="unet", encoder="resnet18", bands=list(range(1, 7)), band_mean=[0.0] * 6, band_std=[1.0] * 6,
                     class_names=[str(i) for i in range(300)], class_colors=default_colors(300), res=[28.5, 28.5])
    with pytest.raises(GeossclError, match="class value 299 does not fit a uint8 class map"):
        predict(BANDS, (SegmentationNetwork(6, 300), info), tmp_path / "o.tif")
    assert list(tmp_path.iterdir()) == []


@needs_bf16_cpu
def test_bf16_runs_the_model_in_bfloat16_and_keeps_float32_maps(tmp_path):
    # The bundled model: a trained one, whose classes float32 and bfloat16 can only swap where two are nearly tied.
    network, info = load_model(BUNDLED_MODEL)
    convolution = next(m for m in network.modules() if isinstance(m, torch.nn.Conv2d))
    seen = []
    convolution.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    maps = {}
    for precision in ("32", "bf16"):
        seen.clear()
        maps[precision], _ = segment(BANDS, (network, info), precision=precision)
        assert set(seen) == {torch.float32 if precision == "32" else torch.bfloat16}
    valid = maps["32"] != 255
    np.testing.assert_array_equal(maps["bf16"] == 255, ~valid)
    # Measured: 99.86 % of the scene's 135,092 pixels keep their class.
    assert (maps["bf16"] == maps["32"])[valid].mean() > 0.99
    assert next(network.parameters()).dtype == torch.float32

    out, probabilities = tmp_path / "classes.tif", tmp_path / "probabilities.tif"
    result = _cli("predict", *BANDS, "-m", str(BUNDLED_MODEL), "-o", str(out), "--probabilities", str(probabilities),
                  "--precision", "bf16", "--device", "cpu", "-q")
    assert result.returncode == 0, result.stderr[-2000:]
    with rasterio.open(out) as classes, rasterio.open(probabilities) as probs:
        np.testing.assert_array_equal(classes.read(1), maps["bf16"])
        assert probs.dtypes[0] == "float32"
        np.testing.assert_allclose(probs.read()[:, valid].sum(0), 1, atol=1e-5)

    result = _cli("predict", *BANDS, "-m", str(BUNDLED_MODEL), "-o", str(tmp_path / "x.tif"), "--precision", "16")
    assert result.returncode == 2 and "'16' is not one of '32', 'bf16'" in result.stderr
    with pytest.raises(GeossclError, match=r"^precision: 'fp16' is not one of 32, bf16$"):
        predict(BANDS, str(BUNDLED_MODEL), tmp_path / "y.tif", precision="fp16")
    with pytest.raises(GeossclError, match=r"^precision: 'fp16' is not one of 32, bf16$"):
        predict_each([str(NC / "lsat7_2000.vrt")], str(BUNDLED_MODEL), tmp_path / "each", precision="fp16")  # no folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif", "classes.tif.aux.xml", "probabilities.tif"]


def test_bf16_is_refused_where_the_cpu_would_run_it_slower(tmp_path, monkeypatch):
    """Held to AVX2 (``ONEDNN_MAX_CPU_ISA``: what oneDNN finds on a CPU without AVX-512), PyTorch's bfloat16
    convolutions leave oneDNN: measured 92 s against 0.93 s in float32. Every command refuses bf16 there, in one
    line, before writing; and on an x86 CPU whose flags lack AVX512-BF16 and AMX (emulated bfloat16: 2x slower)."""
    held = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = tmp_path / "classes.tif"
    message = ("precision: bf16 would run slower than float32 on this CPU (it has no AVX512-BF16 or AMX bfloat16 "
               "arithmetic); use --precision 32")
    commands = [
        ("predict", *BANDS, "-m", str(BUNDLED_MODEL), "-o", str(out), "--device", "cpu"),
        ("evaluate", str(BUNDLED_MODEL), *BANDS, "--labels", str(NC / "strata.tif"), "--device", "cpu", "--json",
         str(tmp_path / "scores.json")),
        ("pretrain", *BANDS, "--out", str(tmp_path / "run"), "--max-steps", "1", "--accelerator", "cpu"),
    ]
    for command in commands:
        result = _cli(*command, "--precision", "bf16", env=held)
        assert result.returncode == 1, (command[0], result.stderr[-2000:])
        assert result.stderr.strip().splitlines()[-1] == f"Error: {message}", result.stderr
    assert list(tmp_path.iterdir()) == []
    assert _cli(*commands[0], "--precision", "32", "-q", env=held).returncode == 0 and out.exists()

    import platform

    from geosscl.precision import check_precision, cpu_has_bfloat16

    if platform.machine().lower() in ("x86_64", "amd64"):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert not cpu_has_bfloat16()
        with pytest.raises(GeossclError, match="^precision: bf16 would run slower than float32 on this CPU"):
            check_precision("bf16", "cpu")
