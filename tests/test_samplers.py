"""samplers.OverlappingPairSampler and samplers.RegionGridSampler on the bundled real rasters."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import shapely
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, IterableDataset
from torchgeo.samplers import GridGeoSampler, Units
from torchgeo.samplers.utils import tile_to_chips

from geosscl import GeossclError, Mosaic, PairDataset
from samplers import OverlappingPairSampler, RegionGridSampler, RegionSampler, ViewPair
from conftest import NAIP, NAIP_4326, NC_BANDS, S2_CHIP, TUTORIAL_POLYGONS, TUTORIAL_STACK, half_masked_2002, run_distributed, write_raster


@pytest.fixture(scope="module")
def naip() -> Mosaic:
    return Mosaic(NAIP)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def covers(geometry, box) -> bool:
    return geometry.buffer(1e-6).covers(shapely.box(*box))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lo=st.floats(0.05, 0.95),
    width=st.floats(0.0, 0.5),
    scale_lo=st.floats(0.5, 1.5),
    scale_width=st.floats(0.0, 1.0),
    size=st.integers(16, 160),
    seed=st.integers(0, 2**31),
)
def test_overlap_and_bounds_always_hold(naip, lo, width, scale_lo, scale_width, size, seed):
    hi = min(lo + width, 1.0)
    scale = (scale_lo, scale_lo + scale_width)
    try:
        sampler = OverlappingPairSampler(naip, size, overlap=(lo, hi), scale=scale, length=20, generator=seeded(seed))
        pairs = list(sampler)
    except GeossclError as exc:
        # Only a range that whole pixels cannot meet may be refused.
        assert "cannot be met" in str(exc) or "fits inside" in str(exc)
        return
    footprint = shapely.box(*naip.index.total_bounds)
    res = naip.res[0]
    for pair in pairs:
        assert lo - 1e-9 <= pair.overlap_fraction <= hi + 1e-9
        for box in (pair.box_a, pair.box_b):
            assert covers(footprint, box)
            side = (box[2] - box[0]) / res
            assert scale[0] * size - 0.5 - 1e-6 <= side <= scale[1] * size + 0.5 + 1e-6
            # Whole pixels of the file's grid.
            assert abs((box[0] - naip.grid_origin[0]) / res - round((box[0] - naip.grid_origin[0]) / res)) < 1e-6
            assert abs((box[3] - naip.grid_origin[1]) / res - round((box[3] - naip.grid_origin[1]) / res)) < 1e-6


def test_overlap_distribution_spans_the_range(naip):
    pairs = list(OverlappingPairSampler(naip, 64, overlap=(0.2, 0.9), scale=(0.8, 1.25), length=400, generator=seeded(1)))
    fractions = np.array([p.overlap_fraction for p in pairs])
    assert fractions.min() >= 0.2 and fractions.max() <= 0.9
    # Uniform target: each quarter of the range gets a fair share.
    counts, _ = np.histogram(fractions, bins=4, range=(0.2, 0.9))
    assert counts.min() > 60, counts
    # Both directions of offset occur on both axes.
    dx = np.array([p.box_b[0] - p.box_a[0] for p in pairs])
    dy = np.array([p.box_b[1] - p.box_a[1] for p in pairs])
    assert (dx > 0).mean() > 0.3 and (dx < 0).mean() > 0.3
    assert (dy > 0).mean() > 0.3 and (dy < 0).mean() > 0.3


def test_overlap_box_in_map_units(naip):
    pair = next(iter(OverlappingPairSampler(naip, 100, overlap=(0.5, 0.5001), length=1, generator=seeded(2))))
    ox0, oy0, ox1, oy1 = pair.overlap
    inter = shapely.box(*pair.box_a).intersection(shapely.box(*pair.box_b))
    assert inter.bounds == pytest.approx((ox0, oy0, ox1, oy1))
    assert (ox1 - ox0) * (oy1 - oy0) == pytest.approx(0.5 * (100 * 5) ** 2, rel=0.02)


def test_roi_respected(naip):
    xmin, ymin, xmax, ymax = naip.index.total_bounds
    roi = shapely.Polygon([(xmin, ymin), (xmax, ymin), (xmin, ymax)])  # lower-left triangle
    sampler = OverlappingPairSampler(naip, 32, roi=roi, length=100, generator=seeded(3))
    for pair in sampler:
        assert covers(roi, pair.box_a) and covers(roi, pair.box_b)


def test_roi_outside_dataset(naip):
    with pytest.raises(GeossclError, match="roi: .* does not intersect"):
        OverlappingPairSampler(naip, 32, roi=shapely.box(0, 0, 10, 10))


def test_same_seed_same_pairs_other_seed_other_pairs(naip):
    a = list(OverlappingPairSampler(naip, 64, length=30, generator=seeded(7)))
    b = list(OverlappingPairSampler(naip, 64, length=30, generator=seeded(7)))
    c = list(OverlappingPairSampler(naip, 64, length=30, generator=seeded(8)))
    assert a == b
    assert not set(a) & set(c)


def test_epochs_differ_and_set_epoch_replays(naip):
    sampler = OverlappingPairSampler(naip, 64, length=10, generator=seeded(9))
    first, second = list(sampler), list(sampler)
    assert not set(first) & set(second)
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_ranks_draw_disjoint_shares(naip):
    shares = [
        list(OverlappingPairSampler(naip, 64, length=25, generator=seeded(11), rank=r, world_size=3)) for r in range(3)
    ]
    assert [len(s) for s in shares] == [9, 8, 8]
    everything = [p for s in shares for p in s]
    assert len(set(everything)) == 25


class _PairStream(IterableDataset):
    """Runs the sampler inside each DataLoader worker (as an iterable pipeline would)."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __iter__(self):
        return iter(self.sampler)


def test_workers_draw_disjoint_shares(naip):
    sampler = OverlappingPairSampler(naip, 64, length=40, generator=seeded(12))
    loader = DataLoader(_PairStream(sampler), batch_size=None, num_workers=2)
    pairs = [ViewPair(tuple(float(v) for v in a), tuple(float(v) for v in b), file) for a, b, file, _ in loader]
    assert len(pairs) == 40
    assert len(set(pairs)) == 40


def _distributed_worker(rank: int, world: int, out: str) -> None:
    sampler = OverlappingPairSampler(Mosaic(NAIP), 64, length=21, generator=seeded(13))
    np.save(f"{out}/rank{rank}.npy", np.array([p.box_a + p.box_b for p in sampler]))


def test_torch_distributed_ranks_disjoint(tmp_path):
    run_distributed(_distributed_worker, 2, str(tmp_path))
    r0, r1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    assert len(r0) == 11 and len(r1) == 10
    rows = {tuple(r) for r in np.vstack([r0, r1])}
    assert len(rows) == 21


def test_pairs_straddle_files_of_a_mosaic(naip_halves):
    left, right = naip_halves
    mosaic = Mosaic([left, right])
    seam = shapely.box(*Mosaic(left).index.total_bounds).bounds[2]
    pairs = list(OverlappingPairSampler(mosaic, 64, length=200, generator=seeded(14)))
    straddling = [p for p in pairs if min(p.box_a[0], p.box_b[0]) < seam < max(p.box_a[2], p.box_b[2])]
    assert straddling, "no pair crossed from one file to the other"


def test_real_mosaic_with_gap_never_draws_in_the_gap():
    mosaic = Mosaic([NAIP, NAIP_4326])
    tiles = [g for g in mosaic.index.geometry]
    sampler = OverlappingPairSampler(mosaic, 32, length=60, generator=seeded(15))
    hits = [0, 0]
    for pair in sampler:
        inside = [i for i, t in enumerate(tiles) if covers(t, pair.box_a) and covers(t, pair.box_b)]
        assert inside, pair
        hits[inside[0]] += 1
    assert hits[0] and hits[1]


def test_max_nodata_rejects_mostly_empty_views(tmp_path):
    import rasterio

    with rasterio.open(NAIP) as src:
        data, profile = src.read(), src.profile
    data[:, :, data.shape[2] // 2 :] = 0  # right half nodata
    path = write_raster(tmp_path / "half.tif", data, crs=profile["crs"], transform=profile["transform"], nodata=0)
    mosaic = Mosaic(path)
    free = OverlappingPairSampler(mosaic, 64, length=150, generator=seeded(16))
    strict = OverlappingPairSampler(mosaic, 64, length=150, generator=seeded(16), max_nodata=0.1)
    ds = PairDataset(mosaic, 64)

    def nodata(pairs):
        views = ds.views(pairs)
        return torch.stack([torch.isnan(views[k]).any(1).flatten(1).float().mean(1) for k in ("image_a", "image_b")], 1).numpy()

    free_pairs, strict_pairs = list(free), list(strict)
    assert nodata(free_pairs).max() > 0.5
    # Estimated on a grid of size/8 cells: allow one cell row/column of slack.
    assert nodata(strict_pairs).max() <= 0.1 + 2 / 8
    # Rejection redraws locations, not geometry: the overlap distribution stays put.
    f_free = np.array([p.overlap_fraction for p in free_pairs])
    f_strict = np.array([p.overlap_fraction for p in strict_pairs])
    assert abs(f_free.mean() - f_strict.mean()) < 0.05


@pytest.mark.parametrize("across", [False, True])
def test_max_nodata_judges_each_date_by_its_own_nodata(tmp_path, across):
    """The tutorial tile on two real dates, the 2002 one with its west half masked (clouds): views read from
    2002 keep to its clear east; 1999 views are drawn everywhere. Counted as 'valid if any date holds it',
    2002 views over its masked half passed."""
    import rasterio

    cloudy = half_masked_2002(tmp_path)
    with rasterio.open(cloudy) as src:
        middle = src.transform.c + src.transform.a * src.width / 2  # the mask's east edge
    mosaic = Mosaic([TUTORIAL_STACK, cloudy])
    sampler = OverlappingPairSampler(mosaic, 32, length=120, generator=seeded(5), max_nodata=0.1, across_files=across)
    pairs = list(sampler)
    views = PairDataset(mosaic, 32).views(pairs)
    # Each view read from its own date: A from file_a, B from file_b (with across_files) or file_a.
    empty = torch.stack([torch.isnan(views[k]).any(1).flatten(1).float().mean(1) for k in ("image_a", "image_b")], 1)
    assert float(empty.max()) <= 0.1 + 2 / 8
    files = [(p.file_a, p.file_b if across else p.file_a) for p in pairs]
    assert any(str(cloudy) in f for f in files) and any(str(TUTORIAL_STACK) in f for f in files)
    for pair, (a, b) in zip(pairs, files):
        for box, file in ((pair.box_a, a), (pair.box_b, b)):
            if file == str(cloudy):
                assert box[2] > middle + 0.9 * (box[2] - box[0]) * 0.75  # most of it east of the mask's edge
    # The masked half is drawn from 1999 alone (across dates too: where 2002 has no data, B is read from 1999).
    west = [f for p, f in zip(pairs, files) if max(p.box_a[2], p.box_b[2]) < middle]
    assert west and all(f == (str(TUTORIAL_STACK), str(TUTORIAL_STACK)) for f in west)
    if across:
        assert any(a != b for a, b in files)


def test_max_nodata_in_places_far_apart(tmp_path):
    """Two scenes 200 km apart in one CRS: the nodata check holds in both, at the memory of two scenes."""
    import tracemalloc

    import rasterio
    from affine import Affine

    with rasterio.open(NAIP) as src:
        data, profile = src.read(), src.profile
    here, there = data.copy(), data.copy()
    here[:, :, data.shape[2] // 2 :] = 0  # right half nodata
    there[:, :, : data.shape[2] // 2] = 0  # left half nodata
    t = profile["transform"]
    far = Affine(t.a, t.b, t.c + 200_000, t.d, t.e, t.f - 200_000)
    write_raster(tmp_path / "here.tif", here, crs=profile["crs"], transform=t, nodata=0)
    write_raster(tmp_path / "there.tif", there, crs=profile["crs"], transform=far, nodata=0)
    mosaic = Mosaic(tmp_path)
    tracemalloc.start()
    try:
        sampler = OverlappingPairSampler(mosaic, 64, length=200, generator=seeded(3), max_nodata=0.1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A table over both scenes' common bounds would hold about 5,000 x 5,000 cells (about 1 GB with its read).
    assert peak < 50e6
    pairs = list(sampler)
    views = PairDataset(mosaic, 64).views(pairs)
    empty = torch.stack([torch.isnan(views[k]).any(1).flatten(1).float().mean(1) for k in ("image_a", "image_b")], 1)
    assert float(empty.max()) <= 0.1 + 2 / 8
    in_far_scene = np.array([p.box_a[0] > t.c + 100_000 for p in pairs])
    assert 0.2 < in_far_scene.mean() < 0.8  # both places are drawn from


def test_size_in_map_units(naip):
    pair = next(iter(OverlappingPairSampler(naip, 400.0, units=Units.CRS, length=1, generator=seeded(17))))
    assert pair.box_a[2] - pair.box_a[0] == pytest.approx(400.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"overlap": (0.8, 0.3)}, r"overlap: range \(0.8, 0.3\) cannot be met"),
        ({"overlap": (0.0, 0.5)}, r"overlap: range \(0, 0.5\) cannot be met"),
        ({"overlap": (0.5, 1.2)}, r"overlap: range \(0.5, 1.2\) cannot be met"),
        ({"scale": (0.0, 1.0)}, r"scale: range \(0, 1\) cannot be met"),
        ({"size": 5000}, r"size: a view of .* is larger than the region"),
        ({"max_nodata": 1.5}, r"max_nodata: must lie in \[0, 1\)"),
    ],
)
def test_bad_arguments(naip, kwargs, message):
    args = {"size": 64, **kwargs}
    with pytest.raises(GeossclError, match=message):
        OverlappingPairSampler(naip, **args)


def test_overlap_range_that_whole_pixels_cannot_meet(naip):
    sampler = OverlappingPairSampler(naip, 3, overlap=(0.6, 0.6), length=1, generator=seeded(18))
    with pytest.raises(GeossclError, match="overlap: range .* cannot be met by views of 3 px"):
        list(sampler)


def test_region_grid_covers_the_region_once_and_stays_on_the_imagery():
    def boxes(sampler):
        return [shapely.box(x.start, y.start, x.stop, y.stop) for x, y, _ in sampler]

    def same_area(a, b):
        return shapely.symmetric_difference(a, b).area < 1e-6 * b.area

    mosaic = Mosaic(NC_BANDS)
    x, y, _ = mosaic.bounds
    rx, ry = mosaic.res
    scene = shapely.box(x.start, y.start, x.stop, y.stop)
    corner = shapely.box(x.start, y.stop - 32 * ry, x.start + 32 * rx, y.stop)  # a 32 px block in the north-west corner
    assert len(list(GridGeoSampler(mosaic, 64, 64, roi=corner))) == 0  # TorchGeo's grid: nothing to validate on
    (crop,) = boxes(RegionGridSampler(mosaic, 64, corner))
    assert crop.bounds == pytest.approx((x.start, y.stop - 64 * ry, x.start + 64 * rx, y.stop))  # shifted inside the scene
    strip = shapely.box(x.start + 200.5 * rx, y.start + 100 * ry, x.start + 210 * rx, y.start + 300 * ry)  # 9.5 px wide
    crops = boxes(RegionGridSampler(mosaic, 64, strip))
    assert len(crops) == 4 and shapely.union_all(crops).covers(strip)  # 200 px tall: four rows of crops
    for c in crops:
        assert c.bounds[2] - c.bounds[0] == pytest.approx(64 * rx) and scene.covers(c)
        assert (c.bounds[0] - x.start) / rx == pytest.approx(round((c.bounds[0] - x.start) / rx))  # on the pixel grid
    assert crops[0].bounds[1] == pytest.approx(strip.bounds[1])  # wide enough that way: starts at its edge
    # Scattered blocks: only the crops holding some of them, none twice.
    blocks = shapely.union_all([shapely.box(x.start + i * 64 * rx, y.start + j * 64 * ry, x.start + (i + 1) * 64 * rx,
                                            y.start + (j + 1) * 64 * ry) for i, j in ((0, 0), (3, 2), (5, 5))])
    crops = boxes(RegionGridSampler(mosaic, 64, blocks))
    assert len(crops) == 3 and same_area(shapely.union_all(crops), blocks)
    assert len(list(GridGeoSampler(mosaic, 64, 64, roi=blocks))) == 36

    # Sen1Floods11's chip, in degrees: 448 px (7 crops) of validation blocks are 7 crops plus float noise
    # to TorchGeo's grid, which adds an eighth row wholly above the imagery (an IndexError in validation).
    chip = Mosaic(S2_CHIP)
    x, y, _ = chip.bounds
    rx, ry = chip.res
    top = shapely.box(x.start, y.stop - 448 * ry, x.stop, y.stop)
    assert tile_to_chips(top.bounds, (64 * ry, 64 * rx))[0] == 8  # the noise
    crops = boxes(RegionGridSampler(chip, 64, top))
    assert len(crops) == 7 * 8 and shapely.box(x.start, y.start, x.stop, y.stop).covers(shapely.union_all(crops))
    assert same_area(shapely.union_all(crops), top) and sum(c.area for c in crops) == pytest.approx(top.area)


    with pytest.raises(GeossclError, match="region: does not overlap the dataset"):
        RegionGridSampler(mosaic, 64, shapely.box(0, 0, 1, 1))
    with pytest.raises(GeossclError, match="larger than the dataset"):
        RegionGridSampler(mosaic, 512, corner)


def test_region_boxes_keep_to_the_imagery_grid_with_vector_labels():
    import rasterio
    from rasterio.windows import from_bounds

    from geosscl.data import VectorLabels

    imagery = Mosaic(TUTORIAL_STACK)
    both = imagery & VectorLabels(TUTORIAL_POLYGONS, "id")
    (ox, oy), (rx, ry) = imagery.grid_origin, imagery.res
    x, y, _ = both.bounds
    off = lambda value, zero, step: abs((value - zero) / step - round((value - zero) / step))  # noqa: E731
    assert off(x.start, ox, rx) > 0.1 and off(y.stop, oy, ry) > 0.1  # the polygons end off the imagery's 30 m grid
    region = shapely.box(x.start, y.start, x.stop, y.stop)
    samplers = [RegionSampler(both, 32, region, length=40, generator=seeded(0), origin=(ox, oy)),
                RegionGridSampler(both, 32, region, origin=(ox, oy))]
    with rasterio.open(TUTORIAL_STACK) as src:
        for sampler in samplers:
            boxes = list(sampler)
            assert boxes and all(off(bx.start, ox, rx) < 1e-6 and off(by.stop, oy, ry) < 1e-6 for bx, by, _ in boxes)
            bx, by, _ = boxes[0]
            # On the grid a box is the file's own pixels, not resampled ones.
            image = both[bx.start : bx.stop : rx, by.start : by.stop : ry]["image"].numpy()
            stored = src.read(window=from_bounds(bx.start, by.start, bx.stop, by.stop, src.transform), boundless=True,
                              fill_value=src.nodata).astype(np.float32)
            valid = ~np.isnan(image)
            assert valid.mean() > 0.5 and np.array_equal(image[valid], stored[valid])
    # Left to the dataset's own corner (the old behaviour), boxes fall between the imagery's pixels.
    assert all(off(bx.start, ox, rx) > 0.1 for bx, _, _ in RegionSampler(both, 32, region, length=40, generator=seeded(0)))


def test_region_boxes_are_crop_size_pixels_on_both_axes_of_non_square_pixels(tmp_path):
    import rasterio
    from affine import Affine

    # The NC scene's first band, its rows relabelled 57 m tall (real pixels, 28.5 × 57 m).
    with rasterio.open(NC_BANDS[0]) as src:
        band, nodata = src.read(1), src.nodata
    tall = write_raster(tmp_path / "tall.tif", band, crs="EPSG:32119", nodata=nodata,
                        transform=Affine(28.5, 0.0, 600000.0, 0.0, -57.0, 300000.0))
    mosaic = Mosaic(tall)
    (rx, ry), (x, y, _) = mosaic.res, mosaic.bounds
    assert (rx, ry) == (28.5, 57.0)
    region = shapely.box(x.start, y.start, x.stop, y.stop)
    for sampler in (RegionSampler(mosaic, 64, region, length=10, generator=seeded(0)), RegionGridSampler(mosaic, 64, region)):
        boxes = list(sampler)
        assert boxes and all((bx.stop - bx.start) / rx == pytest.approx(64) and (by.stop - by.start) / ry == pytest.approx(64)
                             for bx, by, _ in boxes)
        bx, by, _ = boxes[0]
        assert mosaic[bx.start : bx.stop : rx, by.start : by.stop : ry]["image"].shape == (1, 64, 64)
    # In map units a box stays square.
    (bx, by, _), *_ = RegionGridSampler(mosaic, 64 * 57.0, region, units=Units.CRS)
    assert bx.stop - bx.start == by.stop - by.start == pytest.approx(64 * 57.0)


def test_samplers_import_first_in_a_fresh_interpreter():
    # samplers needs geosscl.errors, whose package imports the pair reader, which names
    # samplers.ViewPair: importing samplers before geosscl must not be circular.
    code = "from samplers import OverlappingPairSampler, ViewPair; import geosscl; print(ViewPair.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ViewPair"
