"""Labels from class rasters and vector layers, aligned to real imagery; spatial splits."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import rasterio
import rasterio.features
import geopandas as gpd
import shapely
import torch
from torch.utils.data import DataLoader
from torchgeo.datasets import stack_samples
from torchgeo.samplers import RandomGeoSampler

from geosscl import GeossclError, Mosaic
from geosscl.data import IGNORE_INDEX, RasterLabels, VectorLabels, open_labels
from geosscl.splits import KeepRegion, block_classes, block_split, blocks, class_pixels, label_fraction, near_labels, read_region
from conftest import ATLANTA, BUILDINGS, NC_BANDS, S2_CHIP, S2_WATER, SAMPLES, TUTORIAL, TUTORIAL_POLYGONS, TUTORIAL_STACK, write_raster

STACK, POLYGONS = TUTORIAL_STACK, TUTORIAL_POLYGONS
STRATA = SAMPLES / "nc_landsat" / "strata.tif"


def test_vector_labels_rasterise_onto_the_right_pixels():
    imagery = Mosaic(STACK)
    labels = VectorLabels(POLYGONS, "id")
    sample = (imagery & labels)[tuple(slice(s.start, s.stop, s.step) for s in imagery.bounds[:2])]
    with rasterio.open(STACK) as src:
        frame = gpd.read_file(POLYGONS).to_crs(src.crs)
        reference = rasterio.features.rasterize(
            zip(frame.geometry, frame["id"]), out_shape=src.shape, transform=src.transform, fill=IGNORE_INDEX, dtype="int32"
        )
    mask = sample["mask"].numpy()
    assert sample["image"].shape == (8, 250, 250)
    np.testing.assert_array_equal(mask, reference)
    # The tutorial's own rasterised labels (0 = unlabelled) agree too.
    with rasterio.open(TUTORIAL / "training_data.gtif") as src:
        theirs = src.read(1).astype(np.int64)
    np.testing.assert_array_equal(mask, np.where(theirs == 0, IGNORE_INDEX, theirs))
    assert sorted(np.unique(mask).tolist()) == [IGNORE_INDEX, 1, 2, 3, 4, 5]


def test_vector_class_names_map_to_ids():
    classes = ["forest", "water", "herbaceous", "barren", "urban"]
    labels = VectorLabels(POLYGONS, "class", classes=classes)
    labels.res = (30.0, 30.0)
    x, y, _ = labels.bounds
    named = labels[x.start : x.stop : 30, y.start : y.stop : 30]
    frame = gpd.read_file(POLYGONS)
    transform = rasterio.transform.from_origin(x.start, y.stop, 30, 30)
    shape = named["mask"].shape
    reference = rasterio.features.rasterize(
        zip(frame.geometry, frame["class"].map(classes.index)), out_shape=shape, transform=transform,
        fill=IGNORE_INDEX, dtype="int32",
    )
    np.testing.assert_array_equal(named["mask"].numpy(), reference)
    assert labels.classes == classes
    # Without a list, names are numbered in sorted order.
    assert VectorLabels(POLYGONS, "class").classes == sorted(classes)


def test_footprints_with_a_background_class_label_every_pixel_of_the_imagery():
    # SpaceNet outlines buildings only; every other pixel of the tile is "not a building".
    imagery = Mosaic(ATLANTA)
    labels, ids = open_labels([BUILDINGS], "class", background="background", extent=imagery.footprint())
    assert labels.classes == ["background", "building"] and ids == {0, 1}
    mask = _whole(imagery & labels, imagery)
    with rasterio.open(ATLANTA) as src:
        frame = gpd.read_file(BUILDINGS).to_crs(src.crs)
        reference = rasterio.features.rasterize(
            ((g, 1) for g in frame.geometry), out_shape=src.shape, transform=src.transform, fill=0, dtype="int32")
    np.testing.assert_array_equal(mask, reference)
    assert 0.03 < mask.mean() < 0.06  # 33,818 of 810,000 pixels are buildings
    # Without a background class the same layer labels the buildings alone.
    sparse = _whole(imagery & VectorLabels(BUILDINGS, "class"), imagery)
    np.testing.assert_array_equal(sparse, np.where(reference == 1, 0, IGNORE_INDEX))

    # The background's id follows a classes list, or is given as an id.
    labels = VectorLabels(BUILDINGS, "class", classes=["building", "background"], background="background")
    assert labels.background == 1 and labels.class_ids == {0, 1}
    assert VectorLabels(POLYGONS, "id", background="0").class_ids == {0, 1, 2, 3, 4, 5}
    # In a column of values (the tutorial's ids 1-5) a background named among the classes stands for its value.
    named = VectorLabels(POLYGONS, "id", classes=["forest", "water", "herbaceous", "barren", "urban", "background"],
                         values=[1, 2, 3, 4, 5, 9], background="background")
    assert named.background == 9 and named.class_ids == {1, 2, 3, 4, 5, 9}
    with pytest.raises(GeossclError, match=r"buildings\.geojson: background class 'sky' is not a class name or id; the classes are building, road"):
        VectorLabels(BUILDINGS, "class", classes=["building", "road"], background="sky")
    with pytest.raises(GeossclError, match=r"strata\.tif: --background-class is for a vector layer"):
        open_labels([STRATA], background="0")


def test_background_stops_at_the_extent_given_in_another_crs():
    imagery = Mosaic(ATLANTA)  # EPSG:32616
    x, y, _ = imagery.bounds
    west = gpd.GeoSeries([shapely.box(x.start, y.start, (x.start + x.stop) / 2, y.stop)], crs=imagery.crs).to_crs(4326)
    labels = VectorLabels(BUILDINGS, "class", background="background", extent=west)
    mask = _whole(imagery & labels, imagery)
    assert mask.shape == (900, 900)
    # The western half is background or building; east of it only the buildings are labelled.
    assert (mask[:, :445] >= 0).all()
    assert (mask[:, 455:] != 0).all() and (mask[:, 455:] == 1).any()


def test_polygons_without_a_class_are_left_unlabelled(tmp_path, caplog):
    """Polygons drawn but not yet classed (NULL, or empty text: common while digitising in QGIS) label nothing,
    also where a background class would otherwise cover them."""
    imagery = Mosaic(STACK)
    frame = gpd.read_file(POLYGONS)
    full = _whole(imagery & VectorLabels(POLYGONS, "class"), imagery)
    frame.loc[0, "class"], frame.loc[3, "class"] = None, " "
    frame["number"] = frame["id"].astype(float)
    frame.loc[0, "number"] = None
    frame.to_file(tmp_path / "partly.gpkg")
    with rasterio.open(STACK) as src:
        unclassed = rasterio.features.geometry_mask(frame.geometry[[0, 3]].to_crs(src.crs), src.shape, src.transform,
                                                    invert=True)
        only_first = rasterio.features.geometry_mask(frame.geometry[[0]].to_crs(src.crs), src.shape, src.transform,
                                                     invert=True)
    assert unclassed.sum() > 30 and (full[unclassed] >= 0).all()
    with caplog.at_level("WARNING", logger="geosscl"):
        partly = VectorLabels(tmp_path / "partly.gpkg", "class")
    assert "partly.gpkg: 2 polygon(s) without a value in column 'class' left unlabelled" in caplog.text
    assert partly.classes == ["barren", "forest", "herbaceous", "urban", "water"]
    mask = _whole(imagery & partly, imagery)
    np.testing.assert_array_equal(mask, np.where(unclassed, IGNORE_INDEX, full))
    numbered = _whole(imagery & VectorLabels(tmp_path / "partly.gpkg", "number"), imagery)
    by_id = _whole(imagery & VectorLabels(POLYGONS, "id"), imagery)
    np.testing.assert_array_equal(numbered, np.where(only_first, IGNORE_INDEX, by_id))

    # Over a background class an unclassed footprint is a hole, not background.
    buildings = gpd.read_file(BUILDINGS)
    buildings.loc[0, "class"] = None
    buildings.to_file(tmp_path / "buildings.gpkg")
    tile = Mosaic(ATLANTA)
    labels = VectorLabels(tmp_path / "buildings.gpkg", "class", background="background", extent=tile.footprint())
    assert labels.class_ids == {0, 1}
    holed = _whole(tile & labels, tile)
    whole = _whole(tile & VectorLabels(BUILDINGS, "class", background="background", extent=tile.footprint()), tile)
    with rasterio.open(ATLANTA) as src:
        first = rasterio.features.geometry_mask(buildings.geometry[[0]].to_crs(src.crs), src.shape, src.transform, invert=True)
    assert first.sum() > 100 and (whole[first] == 1).all()
    np.testing.assert_array_equal(holed, np.where(first, IGNORE_INDEX, whole))

    frame["number"] = frame["id"] + 0.5  # not an id: refused, not truncated to one
    frame.to_file(tmp_path / "halves.gpkg")
    with pytest.raises(GeossclError, match=r"halves\.gpkg: column 'number' holds class id 1\.5, not a whole number"):
        VectorLabels(tmp_path / "halves.gpkg", "number")
    frame["class"] = None
    frame.to_file(tmp_path / "none.gpkg")
    with pytest.raises(GeossclError, match=r"none\.gpkg: no polygon has a value in column 'class'"):
        VectorLabels(tmp_path / "none.gpkg", "class")


def test_mask_raster_in_another_crs_aligns():
    imagery = Mosaic(NC_BANDS)  # EPSG:32119
    labels = RasterLabels(STRATA)  # EPSG:3358, same grid
    assert labels.crs.to_epsg() == 3358
    both = imagery & labels
    x, y, _ = imagery.bounds
    mask = both[x.start : x.stop : 28.5, y.start : y.stop : 28.5]["mask"].numpy()
    with rasterio.open(STRATA) as src:
        truth = src.read(1)
    np.testing.assert_array_equal(mask, np.where(truth == src.nodata, IGNORE_INDEX, truth).astype(np.int64))
    batch = next(iter(DataLoader(both, sampler=RandomGeoSampler(both, 32, length=4), batch_size=4, collate_fn=stack_samples)))
    assert batch["image"].shape == (4, 6, 32, 32) and batch["mask"].shape == (4, 32, 32)
    assert batch["mask"].dtype == torch.int64


def test_ignore_value():
    labels = RasterLabels(STRATA, ignore_value=5)
    x, y, _ = labels.bounds
    mask = labels[x.start : x.stop, y.start : y.stop]["mask"]
    assert not (mask == 5).any() and (mask == IGNORE_INDEX).any()


def _whole(dataset, imagery):
    x, y, _ = imagery.bounds
    return dataset[x.start : x.stop : imagery.res[0], y.start : y.stop : imagery.res[1]]["mask"].numpy()


def test_an_undeclared_unlabelled_value_is_refused_until_declared(tmp_path):
    # Sen1Floods11 marks unlabelled pixels -1 without declaring -1 as the file's nodata.
    with rasterio.open(S2_WATER) as src:
        assert src.nodata is None
        truth = src.read(1)
    assert (truth == -1).sum() == 99
    with pytest.raises(GeossclError, match=r"Spain_7370579_LabelHand\.tif: value\(s\) -1 are not class ids .*pass --label-nodata -1$"):
        open_labels([S2_WATER])
    labels, ids = open_labels([S2_WATER], nodata=-1)
    assert ids == {0, 1}
    imagery = Mosaic(S2_CHIP)
    mask = _whole(imagery & labels, imagery)
    np.testing.assert_array_equal(mask, np.where(truth == -1, IGNORE_INDEX, truth))

    # The same labels coded the other common way, 255 = unlabelled in a uint8 file: not negative, so
    # 255 reads as a class until declared (finetune then names --label-nodata 255, see test_finetune).
    coded = write_raster(tmp_path / "water255.tif", np.where(truth == -1, 255, truth).astype(np.uint8),
                         crs=src.crs, transform=src.transform)
    assert open_labels([coded])[1] == {0, 1, 255}
    labels, ids = open_labels([coded], nodata=255)
    assert ids == {0, 1}
    np.testing.assert_array_equal(_whole(imagery & labels, imagery), np.where(truth == -1, IGNORE_INDEX, truth))

    # Another negative value (the -5 of a few pixels) is named, whatever value is declared.
    bad = write_raster(tmp_path / "minus5.tif", np.where(truth == 1, -5, truth).astype(np.int16), crs=src.crs,
                       transform=src.transform)
    with pytest.raises(GeossclError, match=r"minus5\.tif: value\(s\) -5 are not class ids"):
        open_labels([bad], nodata=-1)
    with pytest.raises(GeossclError, match=r"training_data\.shp: --label-nodata is for class rasters"):
        open_labels([POLYGONS], class_column="id", nodata=0)


def test_bad_vector_input(tmp_path):
    with pytest.raises(GeossclError, match=r"training_data\.shp: no column 'label'; the layer has id, class"):
        VectorLabels(POLYGONS, "label")
    with pytest.raises(GeossclError, match="class\\(es\\) barren, urban in column 'class' are not among the classes \\(forest, water, herbaceous\\)"):
        VectorLabels(POLYGONS, "class", classes=["forest", "water", "herbaceous"])
    bad = tmp_path / "bad.geojson"
    bad.write_text("{ not json")
    with pytest.raises(GeossclError, match=r"bad\.geojson: not a readable vector layer"):
        VectorLabels(bad, "id")


def test_a_geojson_that_lost_its_projected_crs_is_refused(tmp_path):
    """The NC scene's CRS (a Lambert conformal conic GDAL finds no EPSG code for): GDAL writes GeoJSON in it with
    the coordinates in metres and no CRS, and reads it back as WGS 84; the region would miss the imagery."""
    crs = Mosaic([str(p) for p in NC_BANDS]).crs
    frame = gpd.read_file(SAMPLES / "nc_landsat" / "test_region.geojson").to_crs(crs)
    lost, kept = tmp_path / "test_region.geojson", tmp_path / "test_region.gpkg"
    frame.to_file(lost)
    frame.to_file(kept)
    assert gpd.read_file(lost).crs == "EPSG:4326"  # what GDAL did
    message = (r"test_region\.geojson: coordinates up to 644471, 228114 are not degrees, yet the layer's CRS "
               r"\(EPSG:4326\) is geographic: .* write it as GeoPackage, or give it its CRS$")
    with pytest.raises(GeossclError, match=message):
        read_region(str(lost), crs)
    with pytest.raises(GeossclError, match=message):
        VectorLabels(lost, "split")
    assert read_region(str(kept), crs).area == pytest.approx(frame.union_all().area)
    refused = subprocess.run([sys.executable, "-m", "geosscl", "evaluate", str(SAMPLES / "models" / "nc_landuse.safetensors"),
                              *map(str, NC_BANDS), "--labels", str(STRATA), "--region", str(lost)],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "test_region.geojson: coordinates up to 644471, 228114 are not degrees" in refused.stderr


def _two_layer_geopackage(tmp_path):
    """The tutorial's label polygons as the second layer of a GeoPackage whose first is a study area."""
    frame = gpd.read_file(POLYGONS)
    path = tmp_path / "project.gpkg"
    area = gpd.GeoDataFrame({"name": ["study area"]}, geometry=[shapely.box(*frame.total_bounds)], crs=frame.crs)
    area.to_file(path, layer="study_area")
    frame.to_file(path, layer="training")
    return path, area


def test_one_layer_of_a_multi_layer_geopackage_is_named_as_qgis_names_it(tmp_path):
    gpkg, area = _two_layer_geopackage(tmp_path)
    imagery = Mosaic(STACK)
    window = tuple(slice(s.start, s.stop, s.step) for s in imagery.bounds[:2])
    expected = (imagery & VectorLabels(POLYGONS, "id"))[window]["mask"]
    for source in (f"{gpkg}|layername=training", f"{gpkg}|layerid=1"):
        labels, ids = open_labels([source], class_column="id")
        np.testing.assert_array_equal((imagery & labels)[window]["mask"], expected)
        assert ids == {1, 2, 3, 4, 5}
    assert VectorLabels(gpkg, "id", layer="training").class_ids == {1, 2, 3, 4, 5}
    region = read_region(f"{gpkg}|layername=study_area", imagery.crs)
    assert region.equals(area.geometry[0])
    # GDAL would read the first layer (the study area, without the class column) and say nothing.
    with pytest.raises(GeossclError, match=r"project\.gpkg: holds 2 layers \(study_area, training\); name one, as "
                                           r"'.*project\.gpkg\|layername=study_area'"):
        open_labels([gpkg], class_column="id")
    with pytest.raises(GeossclError, match=r"project\.gpkg: holds 2 layers"):
        read_region(str(gpkg), imagery.crs)
    with pytest.raises(GeossclError, match=r"project\.gpkg: no layer 'labels'; the file holds study_area, training"):
        open_labels([f"{gpkg}|layername=labels"], class_column="id")
    with pytest.raises(GeossclError, match=r"project\.gpkg: no layer 2; the file holds 2 \(ids 0 to 1\)"):
        open_labels([f"{gpkg}|layerid=2"], class_column="id")
    with pytest.raises(GeossclError, match=r"unknown layer option 'subset=\"id\" = 1'"):
        open_labels([f'{gpkg}|layername=training|subset="id" = 1'], class_column="id")
    with pytest.raises(GeossclError, match=r"missing\.gpkg: no such file"):
        open_labels([str(tmp_path / "missing.gpkg")], class_column="id")
    # On the command line: one line naming the file, exit 1; with the layer named, the run goes through.
    common = [sys.executable, "-m", "geosscl", "probe", str(STACK), "--class-column", "id", "--crop-size", "32",
              "--weight-decay", "0.001", "--val-fraction", "0", "--bands-only"]
    bad = subprocess.run([*common, "--labels", str(gpkg)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "project.gpkg: holds 2 layers (study_area, training)" in bad.stderr
    good = subprocess.run([*common, "--labels", f"{gpkg}|layername=training"], capture_output=True, text=True, timeout=300)
    assert good.returncode == 0 and "labelled pixels: train 718" in good.stdout, good.stderr[-2000:]


def test_block_splits_are_disjoint_and_cover_the_region():
    region = shapely.box(*Mosaic(NC_BANDS).index.total_bounds)
    splits = block_split(region, block_size=1500, seed=0)
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert splits[a].intersection(splits[b]).area == pytest.approx(0, abs=1e-6)
    assert sum(g.area for g in splits.values()) == pytest.approx(region.area)
    assert splits["train"].area / region.area == pytest.approx(0.7, abs=0.08)
    assert block_split(region, 1500, seed=0)["test"].equals(splits["test"])
    assert not block_split(region, 1500, seed=1)["test"].equals(splits["test"])
    subset = label_fraction(splits["train"], 0.1, block_size=500, seed=0)
    assert splits["train"].buffer(1e-6).covers(subset)
    assert subset.area / splits["train"].area == pytest.approx(0.1, abs=0.05)


def test_block_classes_are_the_classes_each_block_holds():
    """One pass over the labels names the classes of every block, as a count block by block does."""
    for imagery, labels in ((Mosaic(NC_BANDS), open_labels([str(STRATA)])[0]), (Mosaic(STACK), VectorLabels(POLYGONS, "id"))):
        region = imagery.footprint().iloc[0]
        size = 96 * imagery.res[0]  # blocks off the scene's edges: the last row and column are clipped
        found = block_classes(labels, region, size, imagery, tile=150)  # windows across the blocks' edges
        cells = blocks(region, size)
        assert len(found) == len(cells) > 4
        assert found == [set(class_pixels(labels, cell, imagery)) for cell in cells]
        assert any(0 < len(f) < len(set().union(*found)) for f in found)  # blocks differ: the check can fail


def test_sparse_labels_keep_every_class_in_training_where_a_draw_can():
    """The tutorial's 30 polygons in 4 blocks of 128 px: the seed's draw leaves class 5 to validation alone."""
    imagery, labels = Mosaic(STACK), VectorLabels(POLYGONS, "id")
    region, size = imagery.footprint().iloc[0], 128 * imagery.res[0]
    held = block_classes(labels, region, size, imagery)
    every = set().union(*held)
    assert every == {1, 2, 3, 4, 5}  # the layer's ids, as this dataset yields them
    fractions = {"train": 0.8, "val": 0.2}
    plain = block_split(region, size, fractions, seed=0)
    assert set(class_pixels(labels, plain["train"], imagery)) == every - {5}
    split = block_split(region, size, fractions, seed=0, classes=held)
    assert set(class_pixels(labels, split["train"], imagery)) == every
    assert split["train"].intersection(split["val"]).area == pytest.approx(0, abs=1e-6)
    assert split["train"].area + split["val"].area == pytest.approx(region.area)
    assert block_split(region, size, fractions, seed=0, classes=held)["val"].equals(split["val"])  # reproducible
    # Dense labels: the seed's draw already holds every class and is kept (earlier results stand).
    nc, strata = Mosaic(NC_BANDS), open_labels([str(STRATA)])[0]
    nc_region = nc.footprint().iloc[0]
    nc_held = block_classes(strata, nc_region, 64 * nc.res[0], nc)
    for seed in range(3):
        assert block_split(nc_region, 64 * nc.res[0], fractions, seed=seed, classes=nc_held)["val"].equals(
            block_split(nc_region, 64 * nc.res[0], fractions, seed=seed)["val"])
    # No draw can: the seed's.
    two = shapely.box(0, 0, 200, 100)
    assert block_split(two, 100, {"train": 0.5, "val": 0.5}, seed=0, classes=[{0}, {1}])["val"].equals(
        block_split(two, 100, {"train": 0.5, "val": 0.5}, seed=0)["val"])


def test_crops_drawn_near_sparse_labels_hold_labels():
    """The tutorial's polygons cover 1 % of its scene: 32 px crops drawn anywhere mostly hold none of them."""
    from samplers import RegionSampler

    imagery = Mosaic(STACK)
    region = imagery.footprint().iloc[0]
    for labels in (VectorLabels(POLYGONS, "id"), open_labels([str(TUTORIAL / "training_data.gtif")])[0]):
        dataset = imagery & labels
        dataset.transforms = KeepRegion(region)

        def labelled(where, seed=0):
            boxes = RegionSampler(dataset, 32, where, length=100, generator=torch.Generator().manual_seed(seed),
                                  origin=imagery.grid_origin)
            return [int((dataset[box]["mask"] != IGNORE_INDEX).sum()) for box in boxes]

        anywhere = labelled(region)
        assert sum(n == 0 for n in anywhere) > 30
        near = near_labels(labels, region, imagery, cell=8, reach=8)
        assert 0.2 < near.area / region.area < 0.5
        assert min(labelled(near)) > 0
        # Coarser cells where a region would hold many (25 px, past the reach): most crops still hold labels.
        coarse = near_labels(labels, region, imagery, cell=8, reach=8, most_cells=100)
        assert coarse.area > near.area
        assert sum(n == 0 for n in labelled(coarse)) < sum(n == 0 for n in anywhere) / 2
    # Dense labels: the region itself, so that runs on them draw the crops they drew before.
    nc = Mosaic(NC_BANDS)
    nc_region = nc.footprint().iloc[0]
    assert near_labels(open_labels([str(STRATA)])[0], nc_region, nc, cell=16, reach=16) is nc_region


def test_split_errors():
    region = shapely.box(0, 0, 1000, 1000)
    with pytest.raises(GeossclError, match="must be non-negative and sum to 1"):
        block_split(region, 100, {"train": 0.9, "test": 0.2})
    with pytest.raises(GeossclError, match="leave split 'test' empty"):
        block_split(region, 600, {"train": 0.9, "test": 0.1})
    with pytest.raises(GeossclError, match="leaves no labelled block"):
        label_fraction(region, 0.01, block_size=500)
