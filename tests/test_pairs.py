"""geosscl.data.PairDataset: both views of a pair agree where they overlap."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import from_bounds
from torch.utils.data import DataLoader

from geosscl import GeossclError, Mosaic, PairDataset
from geosscl.data import collate_pairs, cut_views
from samplers import OverlappingPairSampler, ViewPair
from conftest import NAIP, NC_BANDS, TUTORIAL_2002, TUTORIAL_STACK, write_raster


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def value_at(image: np.ndarray, box, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear value of a ``C×S×S`` view of ``box`` at map points (x, y): ``C×N``."""
    size = image.shape[-1]
    col = (x - box[0]) / (box[2] - box[0]) * size - 0.5
    row = (box[3] - y) / (box[3] - box[1]) * size - 0.5
    c0, r0 = np.floor(col).astype(int), np.floor(row).astype(int)
    fc, fr = col - c0, row - r0
    c1, r1 = np.minimum(c0 + 1, size - 1), np.minimum(r0 + 1, size - 1)
    return (
        image[:, r0, c0] * (1 - fr) * (1 - fc)
        + image[:, r0, c1] * (1 - fr) * fc
        + image[:, r1, c0] * fr * (1 - fc)
        + image[:, r1, c1] * fr * fc
    )


def points_inside(rng: np.random.Generator, box, margin: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(box[0] + margin, box[2] - margin, n)
    y = rng.uniform(box[1] + margin, box[3] - margin, n)
    return x, y


def view(dataset: PairDataset, pair: ViewPair) -> dict:
    """Both views of one pair, unbatched: ``image_a``, ``image_b`` C×S×S."""
    views = dataset.views([pair])
    return {k: v[0] if isinstance(v, (torch.Tensor, list)) else v for k, v in views.items()}


def test_items_hold_the_union_as_stored_and_views_have_the_promised_shape():
    mosaic = Mosaic(NAIP)
    pair = next(iter(OverlappingPairSampler(mosaic, 96, scale=(0.75, 1.5), length=1, generator=seeded(0))))
    dataset = PairDataset(mosaic, view_size=96)
    item = dataset[pair]
    assert item["union"].dtype == np.uint8  # NAIP as stored: a quarter of float32's bytes
    with rasterio.open(NAIP) as src:
        window = from_bounds(*item["union_box"], transform=src.transform).round_offsets().round_lengths()
        np.testing.assert_array_equal(item["union"], src.read(window=window))
        # The file's nodata value (0) is not in this window: no value, no mask to test on the device.
        assert src.nodata == 0 and item["union"].min() > 0
        assert item["nodata"] is None and item["union_valid"] is None
    ux0, uy0, ux1, uy1 = item["union_box"]
    assert ux0 <= min(pair.box_a[0], pair.box_b[0]) and ux1 >= max(pair.box_a[2], pair.box_b[2])
    assert uy0 <= min(pair.box_a[1], pair.box_b[1]) and uy1 >= max(pair.box_a[3], pair.box_b[3])
    sample = view(dataset, pair)
    assert sample["image_a"].shape == sample["image_b"].shape == (4, 96, 96)
    assert sample["image_a"].dtype == torch.float32
    assert tuple(sample["box_a"].tolist()) == pair.box_a
    assert tuple(sample["box_b"].tolist()) == pair.box_b
    assert tuple(sample["overlap"].tolist()) == pytest.approx(pair.overlap)
    assert sample["crs"] == mosaic.crs


def test_collate_pads_unions_and_keeps_their_map_coordinates():
    mosaic = Mosaic(NAIP)
    dataset = PairDataset(mosaic, 64)
    pairs = list(OverlappingPairSampler(mosaic, 64, scale=(0.75, 1.5), length=6, generator=seeded(10)))
    items = [dataset[p] for p in pairs]
    batch = collate_pairs(items)
    height = max(i["union"].shape[1] for i in items)
    width = max(i["union"].shape[2] for i in items)
    assert batch["union"].shape == (6, 4, height, width) and batch["union"].dtype == torch.uint8
    assert batch["union_valid"] is None and not batch["has_nodata"].any()
    assert batch["union_size"].tolist() == [list(i["union"].shape[1:]) for i in items]
    for n, item in enumerate(items):
        h, w = item["union"].shape[1:]
        union = batch["union"][n]
        assert np.array_equal(union[:, :h, :w].numpy(), item["union"])
        # Padded by one pixel repeating the edge (all a bilinear sample inside can touch).
        if w < width:
            assert np.array_equal(union[:, :h, w].numpy(), item["union"][:, :, -1])
        if h < height:
            assert torch.equal(union[:, h, : w + 1], union[:, h - 1, : w + 1])
        # Same pixel size after padding: the union box grew by whole pixels, right and down.
        box = batch["union_box"][n].tolist()
        assert (box[2] - box[0]) / width == pytest.approx(mosaic.res[0])
        assert (box[3] - box[1]) / height == pytest.approx(mosaic.res[1])
        assert (box[0], box[3]) == (item["union_box"][0], item["union_box"][3])
    for key in ("box_a", "box_b", "overlap"):
        assert batch[key].dtype == torch.float64 and batch[key].shape == (6, 4)
        assert [tuple(b) for b in batch[key].tolist()] == [tuple(i[key]) for i in items]


def test_equal_scale_views_are_exact_crops_of_the_file():
    mosaic = Mosaic(NAIP)
    dataset = PairDataset(mosaic, 64)
    pairs = list(OverlappingPairSampler(mosaic, 64, scale=(1, 1), length=10, generator=seeded(1)))
    views = dataset.views(pairs)  # one batch: other pairs' padding must not leak in
    with rasterio.open(NAIP) as src:
        for n, pair in enumerate(pairs):
            for key, box in (("image_a", pair.box_a), ("image_b", pair.box_b)):
                window = from_bounds(*box, transform=src.transform).round_offsets().round_lengths()
                expected = src.read(window=window).astype(np.float32)
                expected[:, (expected == 0).any(axis=0)] = np.nan
                # Equal up to the float32 rounding of the sampling grid (~1e-5 px).
                np.testing.assert_allclose(views[key][n].numpy(), expected, rtol=0, atol=5e-3)


def test_views_across_dates_are_exact_crops_of_their_own_date():
    """Landsat 1999 and 2002 of one tile: view A from the date drawn, view B from the other, each exact."""
    mosaic = Mosaic([TUTORIAL_STACK, TUTORIAL_2002])
    pairs = list(OverlappingPairSampler(mosaic, 64, scale=(1, 1), length=10, generator=seeded(3), across_files=True))
    assert {pair.file_a for pair in pairs} == {str(TUTORIAL_STACK), str(TUTORIAL_2002)}
    assert all(pair.file_b != pair.file_a for pair in pairs)
    views = PairDataset(mosaic, 64).views(pairs)
    assert views["image_a"].shape == views["image_b"].shape == (10, 8, 64, 64)
    for n, pair in enumerate(pairs):
        for key, box, path in (("image_a", pair.box_a, pair.file_a), ("image_b", pair.box_b, pair.file_b)):
            with rasterio.open(path) as src:
                window = from_bounds(*box, transform=src.transform).round_offsets().round_lengths()
                expected = src.read(window=window).astype(np.float32)
            # Equal up to the float32 rounding of the sampling grid: ~1e-5 px of steps up to 16,000.
            np.testing.assert_allclose(views[key][n].numpy(), expected, rtol=0, atol=0.25)


def test_views_across_dates_hold_data_where_both_dates_do(tmp_path):
    early = np.full((2, 40, 40), 10, dtype=np.int16)
    early[:, 5, 15] = -1  # a gap in the first date
    late = np.full((2, 40, 40), 20, dtype=np.int16)
    write_raster(tmp_path / "d2.tif", late)
    with rasterio.open(write_raster(tmp_path / "d1.tif", early, nodata=-1)) as src:
        xmin, ymax = src.bounds.left, src.bounds.top
    mosaic = Mosaic([tmp_path / "d1.tif", tmp_path / "d2.tif"])
    box_a, box_b = (xmin, ymax - 200, xmin + 200, ymax), (xmin + 100, ymax - 200, xmin + 300, ymax)
    pair = ViewPair(box_a, box_b, str(tmp_path / "d2.tif"), str(tmp_path / "d1.tif"))
    item = PairDataset(mosaic, 20)[pair]
    assert item["stacked"] and item["union"].shape == (4, 20, 30) and item["nodata"] is None
    views = cut_views(collate_pairs([item]), 20)
    a, b = views["image_a"][0].numpy(), views["image_b"][0].numpy()
    assert np.isnan(a[:, 5, 15]).all() and np.isnan(b[:, 5, 5]).all()  # x = xmin + 155 in both
    np.testing.assert_allclose(a[np.isfinite(a)], 20, atol=1e-4)
    np.testing.assert_allclose(b[np.isfinite(b)], 10, atol=1e-4)
    assert np.isnan(a).sum() == 2 and np.isnan(b).sum() == 2
    with pytest.raises(ValueError, match="one date and of two dates"):
        collate_pairs([item, PairDataset(mosaic, 20)[ViewPair(box_a, box_b)]])


def test_equal_scale_views_agree_at_every_overlap_pixel():
    mosaic = Mosaic(NAIP)
    dataset = PairDataset(mosaic, 64)
    for pair in OverlappingPairSampler(mosaic, 64, scale=(1, 1), length=10, generator=seeded(2)):
        sample = view(dataset, pair)
        res = mosaic.res[0]
        ox0, oy0, ox1, oy1 = pair.overlap
        # Pixel centres of the overlap, looked up in both views.
        x = np.arange(ox0 + res / 2, ox1, res)
        y = np.arange(oy1 - res / 2, oy0, -res)
        xx, yy = np.meshgrid(x, y)
        a = value_at(sample["image_a"].numpy(), pair.box_a, xx.ravel(), yy.ravel())
        b = value_at(sample["image_b"].numpy(), pair.box_b, xx.ravel(), yy.ravel())
        np.testing.assert_allclose(a, b, rtol=0, atol=5e-3)


def test_views_at_different_scales_agree_at_random_overlap_points():
    mosaic = Mosaic(NAIP)
    dataset = PairDataset(mosaic, 96)
    rng = np.random.default_rng(3)
    matched, shuffled = [], []
    for pair in OverlappingPairSampler(mosaic, 96, scale=(0.75, 1.5), length=20, generator=seeded(3)):
        sample = view(dataset, pair)
        x, y = points_inside(rng, pair.overlap, margin=2 * mosaic.res[0], n=200)
        a = value_at(sample["image_a"].numpy(), pair.box_a, x, y)
        b = value_at(sample["image_b"].numpy(), pair.box_b, x, y)
        matched.append(np.abs(a - b).mean())
        shuffled.append(np.abs(a - b[:, rng.permutation(b.shape[1])]).mean())
    # Resampling blurs differently at different scales, so not exact; but corresponding
    # points agree far better than unrelated points of the same overlap.
    assert np.mean(matched) < 0.25 * np.mean(shuffled), (np.mean(matched), np.mean(shuffled))


def test_views_across_two_files_in_two_crs(naip_halves):
    left, right = naip_halves
    mosaic = Mosaic([left, right])
    dataset = PairDataset(mosaic, 64)
    seam = Mosaic(left).index.total_bounds[2]
    rng = np.random.default_rng(4)
    crossing = 0
    for pair in OverlappingPairSampler(mosaic, 64, scale=(1, 1), length=60, generator=seeded(4)):
        if not min(pair.box_a[0], pair.box_b[0]) < seam < max(pair.box_a[2], pair.box_b[2]):
            continue
        crossing += 1
        sample = view(dataset, pair)
        assert torch.isfinite(sample["image_a"]).float().mean() > 0.95
        x, y = points_inside(rng, pair.overlap, margin=10, n=100)
        a = value_at(sample["image_a"].numpy(), pair.box_a, x, y)
        b = value_at(sample["image_b"].numpy(), pair.box_b, x, y)
        ok = np.isfinite(a) & np.isfinite(b)
        np.testing.assert_allclose(a[ok], b[ok], atol=1e-3)
    assert crossing


def test_nodata_is_nan_and_does_not_spread(tmp_path):
    data = np.arange(40 * 40, dtype=np.float32).reshape(1, 40, 40)
    data[:, :, :20] = -9999
    data[:, 30:32, 25:27] = np.nan  # NaN is nodata too, beside the declared value
    path = write_raster(tmp_path / "half.tif", data, nodata=-9999)
    mosaic = Mosaic(path)
    xmin, ymin, xmax, ymax = mosaic.index.total_bounds
    # Two boxes straddling the nodata edge at x = xmin + 200, on whole pixels.
    pair = ViewPair((xmin + 100, ymin, xmin + 300, ymin + 200), (xmin + 150, ymin, xmin + 350, ymin + 200))
    sample = view(PairDataset(mosaic, 20), pair)
    a = sample["image_a"][0].numpy()
    assert np.isnan(a[:, :10]).all()
    assert np.isnan(a[10:12, 15:17]).all()
    np.testing.assert_allclose(a[:, 10:], data[0, 20:, 20:30], rtol=1e-6)  # float32 rounding of the grid
    b = sample["image_b"][0].numpy()
    assert np.isnan(b[:, :5]).all() and np.isnan(b[10:12, 10:12]).all()
    assert np.isfinite(b[:, 5:]).sum() == b[:, 5:].size - 4


def test_mask_band_and_nodata_value_and_no_nodata_mix_in_one_batch(tmp_path):
    # Three files of one grid, uint16: an internal mask, a nodata value, neither.
    data = (np.arange(40 * 40, dtype=np.uint16).reshape(1, 40, 40) + 1).repeat(2, axis=0)
    masked = write_raster(tmp_path / "masked.tif", data)
    with rasterio.open(masked, "r+") as dst:
        mask = np.full((40, 40), 255, dtype=np.uint8)
        mask[:, :20] = 0
        dst.write_mask(mask)
    valued = data.copy()
    valued[1, :, :20] = 9  # one band of two is nodata: the pixel is nodata
    valued_path = write_raster(tmp_path / "valued.tif", valued, nodata=9)
    plain = write_raster(tmp_path / "plain.tif", data)
    xmin, ymin = 500000.0, 5000000.0 - 400
    pair = ViewPair((xmin + 100, ymin, xmin + 300, ymin + 200), (xmin + 150, ymin, xmin + 350, ymin + 200))
    items = [PairDataset(Mosaic(path), 20)[pair] for path in (masked, valued_path, plain)]
    assert items[0]["union_valid"] is not None and items[0]["nodata"] is None
    assert items[1]["union_valid"] is None and items[1]["nodata"] == 9
    assert items[2]["union_valid"] is None and items[2]["nodata"] is None
    views = cut_views(collate_pairs(items), 20)
    for n in (0, 1):  # x < xmin + 200 is nodata in both bands
        a = views["image_a"][n].numpy()
        assert np.isnan(a[:, :, :10]).all()
        np.testing.assert_allclose(a[:, :, 10:], data[:, 20:, 20:30].astype(np.float32), rtol=1e-6)
    assert torch.isfinite(views["image_a"][2]).all() and torch.isfinite(views["image_b"][2]).all()
    np.testing.assert_allclose(views["image_a"][2].numpy(), data[:, 20:, 10:30].astype(np.float32), rtol=1e-6)


def test_a_batch_cuts_each_pair_as_it_would_alone(tmp_path):
    # Real NAIP with its right half set to nodata (0), some NaN in a float copy:
    # padding and batch-mates must not change any pair's views.
    with rasterio.open(NAIP) as src:
        data, profile = src.read(), src.profile
    data[:, :, data.shape[2] // 2 :] = 0
    half = write_raster(tmp_path / "half.tif", data, crs=profile["crs"], transform=profile["transform"], nodata=0)
    floats = data.astype(np.float32)
    floats[:, 100:140, 100:140] = np.nan
    floats[floats == 0] = np.nan
    nan = write_raster(tmp_path / "nan.tif", floats, crs=profile["crs"], transform=profile["transform"])
    for path in (half, nan):
        mosaic = Mosaic(path)
        dataset = PairDataset(mosaic, 48)
        pairs = list(OverlappingPairSampler(mosaic, 48, scale=(0.75, 1.5), length=12, generator=seeded(7)))
        items = [dataset[p] for p in pairs]
        assert len({i["union"].shape for i in items}) > 1  # padding happens
        assert any(i["nodata"] is not None or i["union_valid"] is not None for i in items)
        assert any(i["nodata"] is None and i["union_valid"] is None for i in items)
        batched = dataset.views(pairs)
        for n, pair in enumerate(pairs):
            alone = dataset.views([pair])
            for key in ("image_a", "image_b"):
                # Equal to the float32 rounding of grid coordinates (the padded extent differs).
                torch.testing.assert_close(batched[key][n], alone[key][0], rtol=1e-5, atol=1e-3, equal_nan=True)
        assert torch.isnan(batched["image_a"]).any() and torch.isfinite(batched["image_a"]).any()


def test_off_grid_boxes_reproduce_a_ramp():
    # A linear ramp is reproduced exactly by bilinear interpolation, on or off grid.
    height, width = 50, 60
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = torch.from_numpy(np.stack([xx + 0.5, yy + 0.5]))  # pixel-centre coordinates
    bounds = (0.0, -float(height), float(width), 0.0)  # 1 map unit per pixel, y up
    boxes = [(10.0, -40.0, 30.0, -20.0), (10.25, -39.5, 30.75, -19.0)]
    batch = {
        "union": ramp[None], "union_size": torch.tensor([[height, width]]), "union_valid": None,
        "nodata": torch.zeros(1), "has_nodata": torch.tensor([False]),
        "union_box": torch.tensor([bounds], dtype=torch.float64), "box_a": torch.tensor([boxes[0]], dtype=torch.float64),
        "box_b": torch.tensor([boxes[1]], dtype=torch.float64), "overlap": torch.zeros(1, 4), "crs": [None],
    }
    views = cut_views(batch, 16)
    for key, box in zip(("image_a", "image_b"), boxes):
        image = views[key][0].numpy()
        centres = (np.arange(16) + 0.5) / 16
        np.testing.assert_allclose(image[0, 3], box[0] + centres * (box[2] - box[0]), atol=1e-4)
        np.testing.assert_allclose(image[1, :, 3], -(box[3] - centres * (box[3] - box[1])), atol=1e-4)


def test_dataloader_with_workers_and_collate_pairs():
    mosaic = Mosaic(NC_BANDS)
    sampler = OverlappingPairSampler(mosaic, 48, scale=(0.75, 1.5), length=12, generator=seeded(5))
    loader = DataLoader(PairDataset(mosaic, 48), sampler=sampler, batch_size=4, num_workers=2, collate_fn=collate_pairs)
    batches = list(loader)
    assert len(batches) == 3
    batch = cut_views(batches[0], 48)
    assert batch["image_a"].shape == (4, 6, 48, 48)
    assert batch["box_a"].shape == (4, 4) and batch["box_a"].dtype == torch.float64
    assert len(batch["crs"]) == 4


def test_bad_view_size():
    with pytest.raises(GeossclError, match="view_size: must be a positive whole number"):
        PairDataset(Mosaic(NAIP), 0)
