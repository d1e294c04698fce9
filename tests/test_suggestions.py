"""``geosscl suggest``: the tiles where a model is least sure, free of the labels there are, spread apart.

Real data: the NC Landsat 7 band files, their land-use raster and the bundled NC model. The uncertainty
of each tile is checked against the probabilities ``predict`` writes, computed here by hand.
"""

from __future__ import annotations

import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.windows
import shapely

from geosscl import GeossclError
from geosscl.prediction import predict
from geosscl.suggestions import LAYER, suggest
from conftest import BUNDLED_MODEL, NAIP, NC_BANDS, far_apart_cuts, needs_bf16_cpu

BANDS = [str(p) for p in NC_BANDS]
STRATA = NC_BANDS[0].parent / "strata.tif"  # complete land use, nodata -99999, in EPSG:3358 (the bands' grid)
TEST_REGION = NC_BANDS[0].parent / "test_region.geojson"  # the eastern third
TILE = 32


@pytest.fixture(scope="module")
def entropy(tmp_path_factory):
    """Mean normalised entropy of the bundled model's probabilities over each 32 px tile of the scene's
    grid (NaN where a tile has a pixel without input), from the probabilities predict writes."""
    folder = tmp_path_factory.mktemp("probabilities")
    predict(BANDS, BUNDLED_MODEL, folder / "classes.tif", probabilities=folder / "p.tif", device="cpu")
    with rasterio.open(folder / "p.tif") as src:
        p = src.read().astype(np.float64)
        transform = src.transform
    per_pixel = -(np.clip(p, 1e-12, None) * np.log(np.clip(p, 1e-12, None))).sum(axis=0) / np.log(p.shape[0])
    rows, cols = p.shape[1] // TILE, p.shape[2] // TILE
    tiles = per_pixel[: rows * TILE, : cols * TILE].reshape(rows, TILE, cols, TILE).mean(axis=(1, 3))
    return tiles, transform


def tile_of(geometry, transform) -> tuple[int, int]:
    col, row = ~transform @ (geometry.bounds[0], geometry.bounds[3])
    assert abs(row - round(row)) < 1e-6 and abs(col - round(col)) < 1e-6  # on the pixel grid
    assert round(row) % TILE == 0 and round(col) % TILE == 0  # on the scene's grid of tiles, from its corner
    return round(row) // TILE, round(col) // TILE


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    out = tmp_path_factory.mktemp("suggest") / "tiles.gpkg"
    frame = suggest(BUNDLED_MODEL, BANDS, out, count=6, tile_size=TILE, min_valid=1.0, device="cpu")
    return frame, out


def test_the_most_uncertain_tiles_come_first_and_do_not_touch(first, entropy):
    frame, out = first
    tiles, transform = entropy
    written = gpd.read_file(out, layer=LAYER)
    assert len(written) == 6 and list(written["rank"]) == [1, 2, 3, 4, 5, 6]
    with rasterio.open(BANDS[0]) as src:
        assert written.crs == src.crs
    np.testing.assert_allclose(written["uncertainty"], frame["uncertainty"])
    where = [tile_of(g, transform) for g in written.geometry]
    for (row, col), g in zip(where, written.geometry):
        assert g.area == pytest.approx((TILE * 28.5) ** 2)
    # Each tile's score is the mean entropy of predict's probabilities there.
    np.testing.assert_allclose(written["uncertainty"], [tiles[r, c] for r, c in where], atol=1e-4)
    assert list(written["uncertainty"]) == sorted(written["uncertainty"], reverse=True)
    # The first is the most uncertain whole tile of the scene; no two touch.
    assert written["uncertainty"][0] == pytest.approx(np.nanmax(tiles), abs=1e-4)
    for i, a in enumerate(where):
        for b in where[i + 1:]:
            assert max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= 2
    # Each is skipped only for a neighbour: a free tile more uncertain than the last lies next to a chosen one.
    last = written["uncertainty"].iloc[-1]
    for r, c in zip(*np.nonzero(tiles > last + 1e-4)):
        assert (r, c) in where or any(max(abs(r - a), abs(c - b)) <= 1 for a, b in where)
    # What the model gives most of each tile.
    assert set(written["predicted"]) <= {"developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"}
    assert written["valid"].eq(1.0).all()


def test_labelled_and_excluded_tiles_are_not_suggested(first, entropy, tmp_path):
    frame, _ = first
    # The first three suggestions labelled, as a user would draw them: polygons with a class column.
    drawn = gpd.GeoDataFrame({"landuse": ["forest", "developed", "forest"]}, geometry=list(frame.geometry[:3]), crs=frame.crs)
    drawn.to_file(tmp_path / "labels.gpkg")
    again = suggest(BUNDLED_MODEL, BANDS, tmp_path / "next.gpkg", count=6, tile_size=TILE, min_valid=1.0,
                    labels=[str(tmp_path / "labels.gpkg")], class_column="landuse", exclude=str(TEST_REGION), device="cpu")
    assert len(again) == 6
    east = shapely.union_all(gpd.read_file(TEST_REGION).to_crs(frame.crs).geometry.values)
    for g in again.geometry:
        assert not any(g.intersects(shapely.buffer(d, -1.0)) for d in drawn.geometry)  # no labelled tile again
        assert not g.intersects(east)
    # They are the most uncertain whole tiles left, greedily kept a tile apart from each other and from the labels.
    tiles, transform = entropy
    labelled = [tile_of(g, transform) for g in drawn.geometry]
    chosen: list[tuple[int, int]] = []
    for flat in np.argsort(-np.nan_to_num(tiles, nan=-1).ravel(), kind="stable"):
        r, c = divmod(int(flat), tiles.shape[1])
        box = shapely.box(*rasterio.windows.bounds(rasterio.windows.Window(c * TILE, r * TILE, TILE, TILE), transform))
        if np.isnan(tiles[r, c]) or box.intersects(east) or any(max(abs(r - a), abs(c - b)) <= 1 for a, b in labelled + chosen):
            continue
        chosen.append((r, c))
        if len(chosen) == 6:
            break
    assert [tile_of(g, transform) for g in again.geometry] == chosen


def test_a_raster_of_labels_everywhere_leaves_no_tile_and_writes_nothing(tmp_path):
    out = tmp_path / "tiles.gpkg"
    with pytest.raises(GeossclError, match=r"nc_landsat/lsat7_2000_10.tif: no tile of 32 px is left to suggest .*labelled already"):
        suggest(BUNDLED_MODEL, BANDS, out, tile_size=TILE, labels=[str(STRATA)], device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(GeossclError, match="the model reads bands 1,2,3,4,5,6"):
        suggest(BUNDLED_MODEL, [str(NAIP)], tmp_path / "tiles.gpkg", device="cpu")
    with pytest.raises(GeossclError, match="tiles.shp: .*GeoPackage"):
        suggest(BUNDLED_MODEL, BANDS, tmp_path / "tiles.shp", device="cpu")
    with pytest.raises(GeossclError, match="--label-area: describes the labels there are; give them with --labels too"):
        suggest(BUNDLED_MODEL, BANDS, tmp_path / "tiles.gpkg", label_area=str(TEST_REGION), device="cpu")
    with pytest.raises(GeossclError, match="region does not overlap the imagery"):
        far = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1000, 1000)], crs="EPSG:32119")
        far.to_file(tmp_path / "far.gpkg")
        suggest(BUNDLED_MODEL, BANDS, tmp_path / "tiles.gpkg", region=str(tmp_path / "far.gpkg"), device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["far.gpkg"]


def test_the_command_prints_the_tiles_and_fails_in_one_line(tmp_path):
    geosscl = [sys.executable, "-m", "geosscl", "suggest", str(BUNDLED_MODEL), *BANDS]
    done = subprocess.run([*geosscl, "-o", str(tmp_path / "t.gpkg"), "-n", "3", "--tile-size", "32", "--region",
                           str(TEST_REGION), "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == ["rank", "uncertainty", "predicted", "centre"] and lines[-1] == f"wrote 3 tile(s) to {tmp_path / 't.gpkg'}"
    east = shapely.union_all(gpd.read_file(TEST_REGION).to_crs("EPSG:32119").geometry.values)
    inside = gpd.read_file(tmp_path / "t.gpkg").geometry
    assert all(east.contains(g.centroid) for g in inside)
    with rasterio.open(BANDS[0]) as src:  # the region's tiles are squares of the whole scene's grid
        for g in inside:
            tile_of(g, src.transform)
    failed = subprocess.run([*geosscl, "-o", str(tmp_path / "u.gpkg"), "--labels", str(STRATA), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1
    assert failed.stderr.strip().count("\n") == 0 and "no tile of 64 px is left to suggest" in failed.stderr
    assert not (tmp_path / "u.gpkg").exists()


@needs_bf16_cpu
def test_bf16_suggests_the_same_tiles(first, tmp_path):
    """``--precision bf16``: the same six tiles as float32 (measured on the whole scene: the same 20 of 20), their
    uncertainties from the bfloat16 run (within 0.001 of float32's, not all equal)."""
    frame, _ = first
    out = tmp_path / "bf16.gpkg"
    done = subprocess.run([sys.executable, "-m", "geosscl", "suggest", str(BUNDLED_MODEL), *BANDS, "-o", str(out),
                           "-n", "6", "--tile-size", str(TILE), "--min-valid", "1", "--precision", "bf16", "--device",
                           "cpu", "-q"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    half = gpd.read_file(out)
    assert {g.wkt for g in half.geometry} == {g.wkt for g in frame.geometry}
    by_tile = dict(zip((g.wkt for g in frame.geometry), frame.uncertainty))
    differences = np.array([u - by_tile[g.wkt] for g, u in zip(half.geometry, half.uncertainty)])
    assert np.abs(differences).max() < 0.001 and np.abs(differences).max() > 0
    with pytest.raises(GeossclError, match=r"^precision: 'fp16' is not one of 32, bf16$"):
        suggest(BUNDLED_MODEL, BANDS, tmp_path / "no.gpkg", precision="fp16", device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bf16.gpkg"]


def test_files_far_apart_cost_their_own_tiles(tmp_path):
    """Two cuts of the NC scene 1,000 blocks of 1024 px apart, one mosaic: its grid of 32 px tiles holds a
    billion tiles (their sums would take 80 GB); only those of the blocks holding a file are scanned."""
    shift = 1000 * 1024
    here, there, image = far_apart_cuts(tmp_path, (shift, shift))
    options = dict(count=1000, tile_size=TILE, spacing=0, min_valid=1.0, device="cpu")
    alone = suggest(BUNDLED_MODEL, [here], tmp_path / "alone.gpkg", **options)
    both = suggest(BUNDLED_MODEL, [here, there], tmp_path / "both.gpkg", **options)
    valid = (~np.isnan(image).any(axis=0)).reshape(10, TILE, 15, TILE).all(axis=(1, 3))
    assert len(alone) == valid.sum() > 50  # every whole tile of the cut (1000 asked)

    def corners(frame, shift_px=0):
        d = shift_px * 28.5
        return {(round(b.minx - d, 3), round(b.maxy + d, 3)): u
                for b, u in zip(frame.geometry.bounds.itertuples(), frame["uncertainty"])}

    far = both.geometry.bounds["minx"].to_numpy() > 1e6
    # The tiles of each file, as for the file alone. The far file ends the mosaic's extent as the file alone
    # ends its own, so its blocks and the model's tiles in them are the same: so are its scores.
    assert set(corners(both[~far])) == set(corners(alone)) == set(corners(both[far], shift))
    assert corners(both[far], shift) == corners(alone)
    assert len(set(corners(alone).values())) > 10
