"""Band names: what each band of the imagery is, kept in the model file, and checked wherever a model or a
pretraining run meets imagery, so that bands in another order are refused instead of read as the wrong bands.

Real data: the Sen1Floods11 Sentinel-2 chip, whose 13 bands GDAL describes as B1 … B12 and B8A, and the NC
Landsat 7 band files, copied under Landsat-style per-band names."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geosscl import GeossclError
from geosscl.data import Mosaic
from geosscl.data.bandnames import band_label
from geosscl.evaluation import evaluate
from geosscl.finetuning import FinetuneConfig, finetune, prepare
from geosscl.modelfile import read_info
from geosscl.onnx import export_onnx
from geosscl.prediction import segment
from geosscl.training import PretrainConfig, load_checkpoint, pretrain
from conftest import NC_BANDS, S2_CHIP, S2_WATER, SAMPLES, TUTORIAL_2002, TUTORIAL_STACK

FAST = dict(crop_size=64, batch_size=4, num_workers=0, quiet=True)
RGBN = [2, 3, 4, 8]  # the chip's B2, B3, B4, B8 (blue, green, red, near infrared)


def write_bands(path: Path, order: list[int], names: list[str | None] | None, window=None) -> Path:
    """The chip's bands ``order`` (1-based) as a new file, described as ``names`` (None: as the chip; [] none)."""
    with rasterio.open(S2_CHIP) as src:
        window = window or rasterio.windows.Window(0, 0, src.width, src.height)
        data = src.read(order, window=window)
        profile = {**src.profile, "count": len(order), "width": window.width, "height": window.height,
                   "transform": src.window_transform(window)}
        descriptions = [src.descriptions[b - 1] for b in order] if names is None else names
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(descriptions, start=1):
            dst.set_band_description(i, name or "")
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A segmenter of the chip's water labels that reads its B2, B3, B4 and B8."""
    out = tmp_path_factory.mktemp("model") / "water.safetensors"
    finetune(FinetuneConfig(imagery=[str(S2_CHIP)], labels=[str(S2_WATER)], label_nodata=-1, bands=RGBN, out=str(out),
                            max_steps=30, seed=0, **{**FAST, "batch_size": 8}))
    return out


def test_bands_are_named_by_their_descriptions_or_their_file_names(tmp_path):
    assert [band_label(t) for t in ("B04", "SR_B4", "st_b10", "band3", "b8a", " band 1   reflectance ", "Band 8", "", None)] == [
        "B4", "B4", "B10", "B3", "B8A", "band 1 reflectance", None, None, None]
    assert Mosaic(str(S2_CHIP)).band_names == ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10",
                                               "B11", "B12"]
    assert Mosaic(str(S2_CHIP), bands=RGBN).band_names == ["B2", "B3", "B4", "B8"]
    assert Mosaic(str(TUTORIAL_STACK)).band_names[:2] == ["band 1 reflectance", "band 2 reflectance"]
    assert Mosaic(str(TUTORIAL_2002)).band_names[-1] is None  # described 'Band 8': a position, not a name
    # Per-band files are named by the band in the file name (the NC files: ETM+ bands 1-5 and 7).
    for path, band in zip(NC_BANDS, (1, 2, 3, 4, 5, 7)):
        shutil.copy(path, tmp_path / f"LE07_L1TP_016035_20000510_B{band}.TIF")
    assert Mosaic(str(tmp_path)).band_names == ["B1", "B2", "B3", "B4", "B5", "B7"]
    assert Mosaic([str(p) for p in NC_BANDS]).band_names == [None] * 6  # lsat7_2000_10.tif names no band
    assert Mosaic(str(SAMPLES / "nc_landsat" / "lsat7_2000.vrt")).band_names[0] == "lsat7_2000_10"  # the VRT's descriptions


def test_descriptions_that_only_count_bands_name_nothing(model, tmp_path, caplog):
    """GDAL's ERDAS IMAGINE writer describes every file's bands Layer_1, Layer_2, … (gdal_translate carries that into
    GeoTIFFs), R's raster and terra write layer.1 and lyr1: positions, not bands. Taken as names, an export of the
    model's very bands was warned about as other bands, and a model trained on one kept Layer_1 … as its bands' names,
    which every properly named file then contradicted."""
    assert [band_label(t) for t in ("Layer_1", "layer 12", "lyr1", "layer.1", "layer", "Band_3", "Band-3")] == [None] * 7
    assert [band_label(t) for t in ("band3", "B03", "Layer 1 NIR", "layerstack")] == ["B3", "B3", "Layer 1 NIR", "layerstack"]
    with rasterio.open(S2_CHIP) as src:
        window = rasterio.windows.Window(0, 0, 128, 128)
        profile = {"driver": "HFA", "count": len(RGBN), "dtype": src.dtypes[0], "width": 128, "height": 128,
                   "crs": src.crs, "transform": src.window_transform(window)}
        exported = tmp_path / "blue_green_red_nir.img"
        with rasterio.open(exported, "w", **profile) as dst:
            dst.write(src.read(RGBN, window=window))
    with rasterio.open(exported) as src:
        assert src.descriptions == ("Layer_1", "Layer_2", "Layer_3", "Layer_4")  # what GDAL wrote
    assert Mosaic(str(exported)).band_names == [None] * 4
    named = write_bands(tmp_path / "named.tif", RGBN, None, window=window)  # B2, B3, B4, B8: the model's
    whole = Mosaic(str(named))
    bounds = (whole.bounds[0].start, whole.bounds[1].start, whole.bounds[0].stop, whole.bounds[1].stop)
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        got, _ = segment(str(exported), str(model), bounds, bands=[1, 2, 3, 4])
        want, _ = segment(str(named), str(model), bounds, bands=[1, 2, 3, 4])
        np.testing.assert_array_equal(got, want)
        # A model trained on the export keeps no names, and named files of its bands are no other bands to it.
        out = tmp_path / "from_export.safetensors"
        finetune(FinetuneConfig(imagery=[str(exported)], labels=[str(S2_WATER)], label_nodata=-1, out=str(out),
                                max_steps=2, seed=0, **FAST))
        assert read_info(out).band_names is None
        segment(str(named), str(out), bounds)
        Mosaic([str(exported), str(write_bands(tmp_path / "east.tif", RGBN, None,
                                               window=rasterio.windows.Window(128, 0, 128, 128)))])
    assert caplog.text == ""


def test_the_model_file_keeps_the_names_of_the_bands_it_reads(model, tmp_path):
    info = read_info(model)
    assert info.bands == RGBN and info.band_names == ["B2", "B3", "B4", "B8"]
    onnx = export_onnx(model, tmp_path / "water.onnx")  # an export keeps them too
    assert read_info(onnx).band_names == ["B2", "B3", "B4", "B8"]


def test_bands_in_another_order_are_refused_with_the_bidx_that_reads_them_right(model, tmp_path, caplog):
    whole = Mosaic(str(S2_CHIP))
    bounds = (whole.bounds[0].start, whole.bounds[1].start, whole.bounds[0].stop, whole.bounds[1].stop)
    reference, _ = segment(str(S2_CHIP), str(model), bounds)  # the 13-band chip: the model's bands 2, 3, 4, 8
    assert 0.05 < (reference == 1).mean() < 0.95  # dry and water: a map that can tell a wrong band order
    swapped = write_bands(tmp_path / "nir_red_green_blue.tif", [8, 4, 3, 2], None)
    with pytest.raises(GeossclError, match=r"nir_red_green_blue\.tif: the model's band 1 is 'B2', which is band 4 here "
                                           r"\(band 2 here is 'B4'\); the model reads B2, B3, B4, B8: "
                                           r"pass -b/--bidx 4,3,2,1 to read them in its order"):
        segment(str(swapped), str(model), bounds)
    with pytest.raises(GeossclError, match="pass -b/--bidx 4,3,2,1"):
        evaluate(str(model), [str(swapped)], [str(S2_WATER)], label_nodata=-1)
    # Read as told, the same bands give the same map.
    fixed, _ = segment(str(swapped), str(model), bounds, bands=[4, 3, 2, 1])
    np.testing.assert_array_equal(fixed, reference)
    # Bands chosen by hand are read as chosen, with a warning.
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        wrong, _ = segment(str(swapped), str(model), bounds, bands=[1, 2, 3, 4])
    assert (wrong != reference).mean() > 0.05  # what the check is for
    assert "the model's band 1 is 'B2', which is band 4 here (band 1 here is 'B8')" in caplog.text
    assert "reading the bands -b/--bidx gives, as asked" in caplog.text


def test_an_export_of_the_model_s_bands_alone_is_read_as_it_is(model, tmp_path):
    """The model reads bands 2, 3, 4 and 8 of the 13-band chip; a file of B2, B3, B4 and B8 alone was refused with
    "the model's band 1 is 'B2', which is band 1 here … pass -b/--bidx 1,2,3,4"."""
    reference, _ = segment(str(S2_CHIP), str(model))
    alone = write_bands(tmp_path / "rgbn.tif", RGBN, None)
    np.testing.assert_array_equal(segment(str(alone), str(model))[0], reference)
    scores, _ = evaluate(str(model), [str(alone)], [str(S2_WATER)], label_nodata=-1)
    assert scores == evaluate(str(model), [str(S2_CHIP)], [str(S2_WATER)], label_nodata=-1)[0]
    unnamed = write_bands(tmp_path / "unnamed.tif", RGBN, [])  # unnamed, they may be any bands: still refused
    with pytest.raises(GeossclError, match=r"unnamed\.tif: has 4 band\(s\); the model reads bands 2,3,4,8"):
        segment(str(unnamed), str(model))


def test_a_dataarray_s_bands_are_named_by_its_band_coordinate_or_rioxarray_s_descriptions(model):
    """rioxarray keeps a file's descriptions in ``long_name`` (whole, through a selection of bands) and numbers the
    bands; stackstac and ``Dataset.to_array`` name them in the band coordinate."""
    rioxarray = pytest.importorskip("rioxarray")
    chip = rioxarray.open_rasterio(S2_CHIP).rename("chip")
    reference, _ = segment(str(S2_CHIP), str(model))
    np.testing.assert_array_equal(segment(chip, str(model)).values, reference)
    rgbn = chip.isel(band=[1, 2, 3, 7])  # B2, B3, B4, B8: the model's bands, alone
    np.testing.assert_array_equal(segment(rgbn, str(model)).values, reference)
    with pytest.raises(GeossclError, match=r"^DataArray 'chip': the model's band 1 is 'B2', which is band 4 here "
                                           r"\(band 2 here is 'B4'\); .* pass -b/--bidx 4,3,2,1"):
        segment(chip.isel(band=[7, 3, 2, 1]), str(model))
    named = chip.isel(band=[7, 3, 2, 1]).assign_coords(band=["B08", "B04", "B03", "B02"])  # stackstac's asset names, in another order
    with pytest.raises(GeossclError, match=r"^DataArray 'chip': the model's band 1 is 'B2', which is band 4 here"):
        segment(named, str(model))
    np.testing.assert_array_equal(segment(named.isel(band=[3, 2, 1, 0]), str(model)).values, reference)


def test_per_band_files_stack_in_band_number_order_not_path_order(model, tmp_path):
    """Landsat Level-1 and Sentinel-2 name bands unpadded (``_B1``, ``_B10``, ``_B8A``): in path order ``B10`` would
    stack before ``B2``, the model would read other bands (refused by the names), and ``-b 4,3,2`` would read B2, B11,
    B10."""
    chip = Mosaic(str(S2_CHIP))
    scene = tmp_path / "scene"
    scene.mkdir()
    for band, name in enumerate(chip.band_names, start=1):
        write_bands(scene / f"T30SXH_20190918_{name}.TIF", [band], [None])  # named by the file alone
    assert sorted(os.listdir(scene))[1] == "T30SXH_20190918_B10.TIF"  # what path order would make band 2
    stacked = Mosaic(str(scene))
    assert stacked.band_names == chip.band_names == ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9",
                                                     "B10", "B11", "B12"]
    bounds = (chip.bounds[0].start, chip.bounds[1].start, chip.bounds[0].stop, chip.bounds[1].stop)
    np.testing.assert_array_equal(stacked.read(bounds)[0], chip.read(bounds)[0])
    assert Mosaic(str(scene), bands=[4, 3, 2]).band_names == ["B4", "B3", "B2"]
    reference, _ = segment(str(S2_CHIP), str(model), bounds)
    from_files, _ = segment(str(scene), str(model), bounds)  # the model's bands 2, 3, 4, 8, found by position
    np.testing.assert_array_equal(from_files, reference)


def test_a_quality_layer_among_band_files_is_refused_with_a_glob_of_the_bands(tmp_path):
    """A Landsat Collection 2 product's folder holds QA_PIXEL beside SR_B1 … SR_B7 on the same grid: stacked, it
    would be read as a band of reflectance."""
    product = tmp_path / "LE07_L2SP_016035_20000510_20200918_02_T1"
    product.mkdir()
    for path, band in zip(NC_BANDS, (1, 2, 3, 4, 5, 7)):
        shutil.copy(path, product / f"{product.name}_SR_B{band}.TIF")
    shutil.copy(NC_BANDS[0], product / f"{product.name}_QA_PIXEL.TIF")
    with pytest.raises(GeossclError) as raised:
        Mosaic(str(product))
    bands = str(product / f"{product.name}_SR_B*.TIF")
    assert str(raised.value) == (f"{product / product.name}_QA_PIXEL.TIF: names no band, where single-band files on "
                                 f"its grid do ({product.name}_SR_B1.TIF); a mosaic stacks band files alone: pass "
                                 f"them alone (e.g. {bands!r})")
    run = subprocess.run([sys.executable, "-m", "geosscl", "pairs", str(product), "-o", str(tmp_path / "pairs.png")],
                         capture_output=True, text=True)
    assert run.returncode != 0 and run.stderr.strip().splitlines() == [f"Error: {raised.value}"]
    assert not (tmp_path / "pairs.png").exists()
    assert Mosaic(bands).band_names == ["B1", "B2", "B3", "B4", "B5", "B7"]  # the glob it advises reads them


def test_unnamed_bands_are_not_checked_and_other_names_are_warned_about(model, tmp_path, caplog):
    whole = Mosaic(str(S2_CHIP))
    bounds = (whole.bounds[0].start, whole.bounds[1].start, whole.bounds[0].stop, whole.bounds[1].stop)
    reference, _ = segment(str(S2_CHIP), str(model), bounds)
    unnamed = write_bands(tmp_path / "unnamed.tif", RGBN, [None] * 4)
    other = write_bands(tmp_path / "other.tif", RGBN, ["blue", "green", "red", "nir"])
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        plain, _ = segment(str(unnamed), str(model), bounds, bands=[1, 2, 3, 4])
        assert caplog.text == ""
        named, _ = segment(str(other), str(model), bounds, bands=[1, 2, 3, 4])
    np.testing.assert_array_equal(plain, reference)
    np.testing.assert_array_equal(named, reference)
    assert ("other.tif: band 1 is 'blue' where the model's band 1 is 'B2' (and 3 more); check these are the bands "
            "the model was trained on, in its order") in caplog.text


def test_the_command_line_refuses_them_in_one_line_and_writes_nothing(model, tmp_path):
    swapped = write_bands(tmp_path / "swapped.tif", [8, 4, 3, 2], None)
    out = tmp_path / "map.tif"
    env = {**os.environ, "GDAL_PAM_ENABLED": "NO"}
    run = subprocess.run([sys.executable, "-m", "geosscl", "predict", str(swapped), "-m", str(model), "-o", str(out),
                          "-q"], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1] == (
        f"Error: {swapped}: the model's band 1 is 'B2', which is band 4 here (band 2 here is 'B4'); "
        "the model reads B2, B3, B4, B8: pass -b/--bidx 4,3,2,1 to read them in its order")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swapped.tif"]
    run = subprocess.run([sys.executable, "-m", "geosscl", "predict", str(swapped), "-m", str(model), "-o", str(out),
                          "-b", "4,3,2,1", "-q"], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.exists()


def test_fine_tuning_a_model_or_a_pretraining_run_checks_the_bands_too(model, tmp_path):
    swapped = str(write_bands(tmp_path / "swapped.tif", [8, 4, 3, 2], None))
    config = dict(labels=[str(S2_WATER)], label_nodata=-1, out=str(tmp_path / "further.safetensors"), **FAST)
    with pytest.raises(GeossclError, match=r"swapped\.tif: the model's band 1 is 'B2', which is band 4 here .*"
                                           r"water\.safetensors reads B2, B3, B4, B8: pass -b/--bidx 4,3,2,1"):
        prepare(FinetuneConfig(imagery=[swapped], init=str(model), **config))
    assert prepare(FinetuneConfig(imagery=[swapped], init=str(model), bands=[4, 3, 2, 1], **config)).band_names == [
        "B2", "B3", "B4", "B8"]  # read right: accepted
    # The whole chip: the model's four bands among its thirteen.
    with pytest.raises(GeossclError, match=r"Spain_7370579_S2Hand\.tif: the model's band 1 is 'B2', which is band 2 here "
                                           r"\(band 1 here is 'B1'\); .* pass -b/--bidx 2,3,4,8 to read them in its order"):
        prepare(FinetuneConfig(imagery=[str(S2_CHIP)], init=str(model), **config))
    # Fewer bands than the model's: the count is what is wrong.
    blue = str(write_bands(tmp_path / "blue.tif", [2], None))
    with pytest.raises(GeossclError, match=r"water\.safetensors: the model reads 4 bands, the imagery has 1"):
        prepare(FinetuneConfig(imagery=[blue], init=str(model), **config))
    # Unnamed imagery: the model made from it keeps the names of the one it started from.
    unnamed = str(write_bands(tmp_path / "unnamed.tif", RGBN, [None] * 4))
    assert prepare(FinetuneConfig(imagery=[unnamed], init=str(model), **config)).band_names == ["B2", "B3", "B4", "B8"]
    assert prepare(FinetuneConfig(imagery=[unnamed], **config)).band_names is None
    run = pretrain(PretrainConfig(imagery=[str(S2_CHIP)], bands=RGBN, out=str(tmp_path / "run"), max_steps=1,
                                  queue_size=8, **FAST))
    checkpoint = os.path.join(run, "last.ckpt")
    assert load_checkpoint(checkpoint)["hyper_parameters"]["band_names"] == ["B2", "B3", "B4", "B8"]
    with pytest.raises(GeossclError, match=r"swapped\.tif: the model's band 1 is 'B2', which is band 4 here .*"
                                           r"-b/--bidx 4,3,2,1 to read them in its order"):
        prepare(FinetuneConfig(imagery=[swapped], init=checkpoint, **config))
    # Resuming the run on them is refused as well.
    with pytest.raises(GeossclError, match=r"-b/--bidx 4,3,2,1"):
        pretrain(PretrainConfig(imagery=[swapped], out=str(tmp_path / "run"), resume=checkpoint, max_steps=2,
                                queue_size=8, **FAST))


def test_tiles_of_a_mosaic_whose_bands_are_stacked_differently_are_refused(tmp_path, caplog):
    west = write_bands(tmp_path / "a_west.tif", RGBN, None, rasterio.windows.Window(0, 0, 256, 512))
    east = write_bands(tmp_path / "b_east.tif", [8, 4, 3, 2], None, rasterio.windows.Window(256, 0, 256, 512))
    with pytest.raises(GeossclError, match=rf"{east}: band 1 is 'B8', band 4 of {west}; every place of a mosaic needs "
                                           "the same bands in the same order"):
        Mosaic([str(west), str(east)])
    same = write_bands(tmp_path / "c_east.tif", RGBN, [None] * 4, rasterio.windows.Window(256, 0, 256, 512))
    assert Mosaic([str(west), str(same)]).band_names == ["B2", "B3", "B4", "B8"]  # unnamed: nothing to disagree
    # Per-band files on two grids (a 10 m band and a 20 m one) are two places, not two bands.
    blue = write_bands(tmp_path / "T30_B02_10m.tif", [2], [None])
    with rasterio.open(S2_CHIP) as src:
        data, profile = src.read(5)[::2, ::2], src.profile
        transform = src.transform * rasterio.Affine.scale(2)
    with rasterio.open(tmp_path / "T30_B05_20m.tif", "w", **{**profile, "count": 1, "width": 256, "height": 256,
                                                              "transform": transform}) as dst:
        dst.write(data, 1)
    with pytest.raises(GeossclError, match=r"T30_B05_20m\.tif: band 1 is 'B5' where .*T30_B02_10m\.tif has 'B2'; every "
                                           r"place of a mosaic needs the same bands in the same order \(single-band "
                                           r"files stack as bands only on one grid: warp them to one first\)"):
        Mosaic([str(blue), str(tmp_path / "T30_B05_20m.tif")])
    # Words of another product for a tile's bands: warned about, once.
    worded = write_bands(tmp_path / "d_east.tif", RGBN, ["blue", "green", "red", "nir"],
                         rasterio.windows.Window(256, 0, 256, 512))
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        Mosaic([str(west), str(worded)])
        Mosaic([str(west), str(worded)])
    assert caplog.text.count(f"{worded}: band 1 is 'blue' where {west} has 'B2'; check the files hold the same bands "
                             "in the same order") == 1
