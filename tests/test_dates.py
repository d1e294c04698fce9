"""One set of labels on every date of a place: the two real Landsat dates of the tutorial tile (Nov 1999, Apr 2002)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections import Counter

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from affine import Affine
from rasterio.windows import from_bounds

from geosscl.data import DatedIntersection, Mosaic, RasterLabels
from geosscl.data.mosaic import acquisitions
from geosscl.errors import GeossclError
from geosscl.evaluation import evaluate, evaluate_each_date
from geosscl.finetuning import FinetuneConfig, loaders, prepare
from geosscl.modelfile import read_info
from geosscl.prediction import _scenes, predict, predict_each
from geosscl.probing import linear_probe
from samplers import DatedQuery, DateSampler, RegionGridSampler, RegionSampler
from conftest import TUTORIAL, TUTORIAL_2002, TUTORIAL_POLYGONS, TUTORIAL_STACK

DATES = [str(TUTORIAL_STACK), str(TUTORIAL_2002)]
MASK = str(TUTORIAL / "training_data.gtif")  # 5 classes, 0 = nodata (unlabelled)


def window_of(path: str, bounds: tuple[float, float, float, float]) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(window=from_bounds(*bounds, transform=src.transform)).astype(np.float32)


def bounds_of(query) -> tuple[float, float, float, float]:
    return query[0].start, query[1].start, query[0].stop, query[1].stop


def date_of(image: torch.Tensor, bounds) -> str:
    """The one file whose window ``image`` is."""
    matches = [p for p in DATES if np.array_equal(image.numpy(), window_of(p, bounds))]
    assert len(matches) == 1
    return matches[0]


@pytest.fixture(scope="module")
def dataset() -> DatedIntersection:
    return DatedIntersection(Mosaic(DATES), RasterLabels([MASK]))


def test_a_dated_query_reads_that_date_with_the_same_labels(dataset):
    x0, _, _, y1 = dataset.datasets[0].index.total_bounds
    query = (slice(x0 + 30 * 90, x0 + 30 * 154, 30.0), slice(y1 - 30 * 164, y1 - 30 * 100, 30.0), slice(None))
    plain, late = dataset[query], dataset[DatedQuery(query, DATES[1])]
    assert np.array_equal(plain["image"].numpy(), window_of(DATES[0], bounds_of(query)))  # the first file wins
    assert np.array_equal(late["image"].numpy(), window_of(DATES[1], bounds_of(query)))
    assert not np.array_equal(plain["image"].numpy(), late["image"].numpy())
    assert torch.equal(plain["mask"], late["mask"]) and (plain["mask"] >= 0).sum() > 0
    assert torch.equal(dataset[DatedQuery(query, DATES[0])]["image"], plain["image"])


def test_the_date_sampler_draws_dates_by_seed_or_gives_every_date(dataset):
    footprint = dataset.datasets[0].footprint().iloc[0]
    grid = RegionGridSampler(dataset, 64, footprint)
    each = list(DateSampler(grid, dataset.datasets[0], each=True))
    assert len(each) == len(DateSampler(grid, dataset.datasets[0], each=True)) == 2 * len(grid)
    assert each == [DatedQuery(q, f) for q in grid for f in DATES]

    def draw(seed: int, epoch: int = 0) -> list[DatedQuery]:
        boxes = RegionSampler(dataset, 64, footprint, length=200, generator=torch.Generator().manual_seed(seed))
        sampler = DateSampler(boxes, dataset.datasets[0], generator=torch.Generator().manual_seed(seed))
        sampler.set_epoch(epoch)
        return list(sampler)

    drawn = draw(0)
    counts = Counter(item.file for item in drawn)
    assert len(drawn) == 200 and set(counts) == set(DATES) and min(counts.values()) > 70
    assert draw(0) == drawn and draw(1) != drawn
    assert [item.query for item in draw(0, epoch=1)] != [item.query for item in drawn]


def test_fine_tuning_on_every_date_trains_and_validates_on_both(tmp_path):
    config = FinetuneConfig(imagery=DATES, labels=[MASK], crop_size=64, batch_size=8, num_workers=0, every_date=True)
    setup = prepare(config)
    train, val = loaders(config, setup, steps=4)
    seen = Counter()
    for batch in train:
        for image, query in zip(batch["image"], batch["bounds"]):
            seen[date_of(image, bounds_of(query))] += 1
    assert sum(seen.values()) == 32 and min(seen.values()) >= 6
    # Validation: each box of the grid on both dates, in path order.
    plain = loaders(FinetuneConfig(**{**config.__dict__, "every_date": False}), setup, steps=4)[1]
    assert len(val.sampler) == 2 * len(plain.sampler)
    batch = next(iter(val))
    assert [date_of(i, bounds_of(q)) for i, q in zip(batch["image"][:2], batch["bounds"][:2])] == DATES
    assert batch["bounds"][0] == batch["bounds"][1] and torch.equal(batch["mask"][0], batch["mask"][1])


def test_every_date_from_the_command_line_and_its_refusal(tmp_path):
    out = tmp_path / "model.safetensors"
    command = [sys.executable, "-m", "geosscl", "finetune", *DATES, "--labels", MASK, "--every-date", "--out", str(out),
               "--crop-size", "64", "--batch-size", "4", "--max-steps", "2", "--num-workers", "0", "-q"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    info = read_info(out)
    assert info.provenance["every_date"] is True and info.provenance["imagery"] == DATES
    alone = tmp_path / "alone.safetensors"
    command[command.index(DATES[1])] = "--quiet"  # the 1999 file alone: no second date
    result = subprocess.run([c.replace(str(out), str(alone)) for c in command], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and not alone.exists()
    assert result.stderr.strip().splitlines() == ["Error: every-date: no two files of the imagery cover the same ground; "
                                                  "it needs several dates (or other acquisitions) of a place"]


def test_the_probe_on_every_date_fits_each_labelled_pixel_on_each_date():
    settings = dict(imagery=DATES, labels=[MASK], crop_size=64, seed=0)
    first = linear_probe(FinetuneConfig(**settings), features="bands", weight_decay=1e-3, max_pixels=10**6)
    both = linear_probe(FinetuneConfig(**settings, every_date=True), features="bands", weight_decay=1e-3, max_pixels=10**6)
    assert first.pixels["train"] > 300
    # Neither date has nodata under the labels: every labelled pixel is one sample per date.
    assert both.pixels == {name: 2 * count for name, count in first.pixels.items()}
    assert both.scores.confusion != first.scores.confusion


@pytest.fixture(scope="module")
def both_dates_model(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("model") / "both.safetensors"
    config = FinetuneConfig(imagery=DATES, labels=[MASK], crop_size=64, seed=0, every_date=True, out=str(out))
    linear_probe(config, features="bands", weight_decay=1e-3, max_pixels=10**6)
    return str(out)


def test_evaluating_every_date_scores_each_as_alone_and_pools_them(both_dates_model, tmp_path):
    # A third place the labels miss: the 1999 tile moved 100 km east.
    with rasterio.open(DATES[0]) as src:
        profile, data = src.profile, src.read()
    profile["transform"] = Affine.translation(100_000, 0) @ src.transform
    elsewhere = tmp_path / "elsewhere.tif"
    with rasterio.open(elsewhere, "w", **profile) as dst:
        dst.write(data)
    ticks = []
    pooled, dates, _ = evaluate_each_date(both_dates_model, [*DATES, str(elsewhere)], [MASK],
                                          progress=lambda done, total: ticks.append((done, total)))
    assert list(dates) == DATES  # path order; the place off the labels is left out
    for file, scores in dates.items():
        alone, _ = evaluate(both_dates_model, [file], [MASK])
        assert scores.confusion == alone.confusion and scores.miou == alone.miou
    assert np.array_equal(pooled.confusion, np.add(*[dates[f].confusion for f in DATES]))
    assert np.sum(pooled.confusion) == 2 * 718  # every labelled pixel once on each date
    assert dates[DATES[0]].miou != dates[DATES[1]].miou
    assert ticks[-1][0] == ticks[-1][1] == len(ticks) >= 2
    # Polygons, and a label area on the tile: the place it misses is left out too, each date still scored as alone.
    area = tmp_path / "tile.geojson"
    tile = Mosaic(DATES[0])
    gpd.GeoDataFrame(geometry=[shapely.box(*tile.index.total_bounds)], crs=tile.crs).to_file(area)
    vector = dict(class_column="id", label_area=str(area))
    _, within, _ = evaluate_each_date(both_dates_model, [*DATES, str(elsewhere)], [str(TUTORIAL_POLYGONS)], **vector)
    assert list(within) == DATES
    for file, scores in within.items():
        assert scores.confusion == evaluate(both_dates_model, [file], [str(TUTORIAL_POLYGONS)], **vector)[0].confusion
    # Without --every-date the 1999 file wins where both dates lie: its scores.
    assert evaluate(both_dates_model, DATES, [MASK])[0].confusion == dates[DATES[0]].confusion


def test_evaluating_every_date_from_the_command_line_and_its_refusal(both_dates_model, tmp_path):
    scores = tmp_path / "scores.json"
    command = [sys.executable, "-m", "geosscl", "evaluate", both_dates_model, *DATES, "--labels", MASK, "--every-date",
               "--json", str(scores), "--png", str(tmp_path / "confusion.png")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads(scores.read_text())
    assert [d["file"] for d in written["dates"]] == DATES
    assert np.array_equal(written["confusion"], np.add(*[d["confusion"] for d in written["dates"]]))
    lines = result.stdout.splitlines()
    for d in written["dates"]:  # a line per date with its mIoU, then the pooled line
        assert any(line.startswith(d["file"]) and f"{100 * d['miou']:.1f}" in line for line in lines)
    assert any(line.startswith("every date, pooled") and f"{100 * written['miou']:.1f}" in line for line in lines)
    assert (tmp_path / "confusion.png").stat().st_size > 0
    alone = tmp_path / "alone.json"
    command = [c.replace(str(scores), str(alone)) for c in command if c != DATES[1]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and not alone.exists()
    assert result.stderr.strip().splitlines()[-1] == ("Error: every-date: no two files of the imagery cover the same "
                                                       "ground; it needs several dates (or other acquisitions) of a place")


@pytest.fixture(scope="module")
def per_band_dates(tmp_path_factory):
    """The two dates as one folder of per-band files, named as Landsat products name them."""
    folder = tmp_path_factory.mktemp("per_band")
    for stem, path in zip(["LE07_L1TP_022049_19991118_20200918_02_T1", "LE07_L1TP_022049_20020416_20200916_02_T1"], DATES):
        with rasterio.open(path) as src:
            profile = {**src.profile, "count": 1}
            for band in range(1, src.count + 1):
                with rasterio.open(folder / f"{stem}_B{band}.TIF", "w", **profile) as dst:
                    dst.write(src.read(band), 1)
    return folder


def test_per_band_files_of_two_dates_are_two_places_not_one_of_twice_the_bands(per_band_dates, tmp_path):
    mosaic = Mosaic(per_band_dates)
    assert mosaic.num_bands == 8 and mosaic.has_dates
    assert [len(files) for files in mosaic.places] == [8, 8]
    assert [{os.path.basename(f)[17:25] for f in files} for files in mosaic.places] == [{"19991118"}, {"20020416"}]
    bounds = tuple(mosaic.index.total_bounds)
    for files, stacked in zip(mosaic.places, DATES):
        np.testing.assert_array_equal(mosaic.read(bounds, first=files[0])[0], window_of(stacked, bounds))
    # Names without a band (or with two) stack in path order, as before.
    assert acquisitions(["d/red.tif", "d/nir.tif"]) == [["d/red.tif", "d/nir.tif"]]
    assert acquisitions(["x_SR_B1.TIF", "x_ST_B10.TIF", "y_SR_B1.TIF"]) == [["x_SR_B1.TIF", "x_ST_B10.TIF"], ["y_SR_B1.TIF"]]
    assert acquisitions(["a/s_B1.tif", "a/s_B2.tif", "b/s_B1.tif", "b/s_B2.tif"]) == [["a/s_B1.tif", "a/s_B2.tif"],
                                                                                   ["b/s_B1.tif", "b/s_B2.tif"]]
    assert acquisitions(["T33_B02_B03.tif", "T34_B02_B03.tif"]) == [["T33_B02_B03.tif", "T34_B02_B03.tif"]]
    with pytest.raises(GeossclError, match=r"x_SCL\.tif: names no band, where single-band files on its grid do "
                                           r"\(x_B02\.tif\); .* pass them alone \(e\.g\. 'x_B\*\.tif'\)"):
        acquisitions(["x_B02.tif", "x_B03.tif", "x_SCL.tif"])
    # Named bands stack in band-number order, whatever path order says.
    assert acquisitions(["x_B1.TIF", "x_B10.TIF", "x_B2.TIF", "x_B8A.TIF", "x_B8.TIF", "y_B1.TIF", "y_B11.TIF", "y_B3.TIF"]) == [
        ["x_B1.TIF", "x_B2.TIF", "x_B8.TIF", "x_B8A.TIF", "x_B10.TIF"], ["y_B1.TIF", "y_B3.TIF", "y_B11.TIF"]]
    # A date missing a band is refused, naming it.
    partial = tmp_path / "partial"
    partial.mkdir()
    for path in per_band_dates.glob("*.TIF"):
        if not path.name.endswith("20020416_20200916_02_T1_B8.TIF"):
            os.symlink(path, partial / path.name)
    with pytest.raises(GeossclError, match=r"20020416_20200916_02_T1_B1\.TIF: has 7 band\(s\) where .*19991118.*_B1\.TIF "
                                           r"has 8; every place of a mosaic needs the same bands \(single-band files on "
                                           r"one grid stack as bands, one stack per scene their names tell apart"):
        Mosaic(partial)


def test_every_date_of_per_band_files_scores_as_the_stacked_dates(both_dates_model, per_band_dates):
    _, stacked, _ = evaluate_each_date(both_dates_model, DATES, [MASK])
    _, per_band, _ = evaluate_each_date(both_dates_model, [str(per_band_dates)], [MASK])
    assert [os.path.basename(f)[17:25] for f in per_band] == ["19991118", "20020416"]
    assert [s.confusion for s in per_band.values()] == [s.confusion for s in stacked.values()]


def test_each_date_of_per_band_files_is_mapped_on_its_own(both_dates_model, per_band_dates, tmp_path):
    made = predict_each([str(per_band_dates)], both_dates_model, tmp_path / "maps")
    assert [os.path.basename(m) for m in made] == ["LE07_L1TP_022049_19991118_20200918_02_T1_classes.tif",
                                                   "LE07_L1TP_022049_20020416_20200916_02_T1_classes.tif"]
    for map_, stacked in zip(made, DATES):
        alone = tmp_path / f"alone_{os.path.basename(stacked)}.tif"
        predict([stacked], both_dates_model, alone)
        with rasterio.open(map_) as got, rasterio.open(alone) as want:
            assert got.transform == want.transform
            np.testing.assert_array_equal(got.read(1), want.read(1))
    # Single-band files that name no band (dates of a panchromatic or radar image) stay one scene each.
    pan = tmp_path / "pan"
    pan.mkdir()
    for year, stacked in zip(["1999", "2002"], DATES):
        with rasterio.open(stacked) as src:
            with rasterio.open(pan / f"pan_{year}.tif", "w", **{**src.profile, "count": 1}) as dst:
                dst.write(src.read(8), 1)
    assert _scenes(sorted(str(p) for p in pan.iterdir())) == [[str(pan / "pan_1999.tif")], [str(pan / "pan_2002.tif")]]


def test_single_band_dates_named_by_date_are_dates(tmp_path):
    """Radar and panchromatic dates come as one file per date (or per polarisation): the date in the name tells them
    apart. Here two real bands of each Landsat date, as a radar scene's VV and VH would be named."""
    for day, stacked in zip(["19991118", "20020416"], DATES):
        with rasterio.open(stacked) as src:
            for band, name in ((4, "nir"), (5, "swir")):
                with rasterio.open(tmp_path / f"LE07_{day}_{name}.tif", "w", **{**src.profile, "count": 1}) as dst:
                    dst.write(src.read(band), 1)
    mosaic = Mosaic(tmp_path)
    assert mosaic.num_bands == 2 and mosaic.has_dates
    assert [[os.path.basename(f) for f in files] for files in mosaic.places] == [
        ["LE07_19991118_nir.tif", "LE07_19991118_swir.tif"], ["LE07_20020416_nir.tif", "LE07_20020416_swir.tif"]]
    bounds = tuple(mosaic.index.total_bounds)
    for files, stacked in zip(mosaic.places, DATES):
        np.testing.assert_array_equal(mosaic.read(bounds, first=files[0])[0], window_of(stacked, bounds)[3:5])
    assert _scenes(mosaic.paths) == [list(files) for files in mosaic.places]  # predict --each: a map per date
    # One file per date: a one-band place per date; ISO dates too. Undated names stack, as always.
    assert acquisitions(["s/pan_2019-06-01.tif", "s/pan_2020-06-01.tif"]) == [["s/pan_2019-06-01.tif"],
                                                                              ["s/pan_2020-06-01.tif"]]
    assert acquisitions(["lsat7_2000_10.tif", "lsat7_2000_20.tif"]) == [["lsat7_2000_10.tif", "lsat7_2000_20.tif"]]
    assert acquisitions(["pan_20190601.tif", "nir.tif"]) == [["pan_20190601.tif", "nir.tif"]]



def test_labels_naming_the_classes_otherwise_warn_once_for_every_date(tmp_path, caplog):
    """Labels are opened once per date: the warning that they name an id otherwise than the model is said once."""
    from geosscl.data.categories import write_category_names

    names = ["", "forest", "water", "herbaceous", "barren", "urban"]
    named, swapped = tmp_path / "named.tif", tmp_path / "swapped.tif"
    for path, order in ((named, names), (swapped, [names[0], names[2], names[1], *names[3:]])):
        shutil.copy(MASK, path)
        write_category_names(path, order)
    model = tmp_path / "model.safetensors"
    linear_probe(FinetuneConfig(imagery=DATES, labels=[str(named)], crop_size=64, seed=0, every_date=True,
                                out=str(model)), features="bands", weight_decay=1e-3, max_pixels=10**5)
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        agreeing, _, info = evaluate_each_date(str(model), DATES, [str(named)])
        # Scored on its own labels: one warning that they trained it (for the dates pooled), none about names.
        assert "names class" not in caplog.text and info.class_names[:2] == ["forest", "water"]
        assert len(caplog.records) == 1 and "lie where the model was trained" in caplog.text
        crossed, _, _ = evaluate_each_date(str(model), DATES, [str(swapped)])
    assert caplog.text.count("swapped.tif: names class 1 'water' where the model has 'forest' (and 1 more)") == 1
    assert crossed.confusion == agreeing.confusion
