"""geosscl.data.PairDataset: both views of a pair agree where they overlap."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import from_bounds
from torch.utils.data import DataLoader
from torchgeo.datasets import stack_samples

from geosscl import GeossclError, Mosaic, PairDataset
from geosscl.data import resample_views
from samplers import OverlappingPairSampler, ViewPair
from conftest import NAIP, NC_BANDS, write_raster


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


def test_views_have_the_promised_shape_and_keys():
    mosaic = Mosaic(NAIP)
    pair = next(iter(OverlappingPairSampler(mosaic, 96, scale=(0.75, 1.5), length=1, generator=seeded(0))))
    sample = PairDataset(mosaic, view_size=96)[pair]
    assert sample["image_a"].shape == sample["image_b"].shape == (4, 96, 96)
    assert sample["image_a"].dtype == torch.float32
    assert tuple(sample["box_a"].tolist()) == pair.box_a
    assert tuple(sample["box_b"].tolist()) == pair.box_b
    assert tuple(sample["overlap"].tolist()) == pytest.approx(pair.overlap)
    assert sample["crs"] == mosaic.crs


def test_equal_scale_views_are_exact_crops_of_the_file():
    mosaic = Mosaic(NAIP)
    dataset = PairDataset(mosaic, 64)
    with rasterio.open(NAIP) as src:
        for pair in OverlappingPairSampler(mosaic, 64, scale=(1, 1), length=10, generator=seeded(1)):
            sample = dataset[pair]
            for key, box in (("image_a", pair.box_a), ("image_b", pair.box_b)):
                window = from_bounds(*box, transform=src.transform).round_offsets().round_lengths()
                expected = src.read(window=window).astype(np.float32)
                expected[expected == 0] = np.nan
                np.testing.assert_array_equal(sample[key].numpy(), expected)


def test_equal_scale_views_agree_at_every_overlap_pixel():
    mosaic = Mosaic(NAIP)
    dataset = PairDataset(mosaic, 64)
    for pair in OverlappingPairSampler(mosaic, 64, scale=(1, 1), length=10, generator=seeded(2)):
        sample = dataset[pair]
        res = mosaic.res[0]
        ox0, oy0, ox1, oy1 = pair.overlap
        # Pixel centres of the overlap, looked up in both views.
        x = np.arange(ox0 + res / 2, ox1, res)
        y = np.arange(oy1 - res / 2, oy0, -res)
        xx, yy = np.meshgrid(x, y)
        a = value_at(sample["image_a"].numpy(), pair.box_a, xx.ravel(), yy.ravel())
        b = value_at(sample["image_b"].numpy(), pair.box_b, xx.ravel(), yy.ravel())
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


def test_views_at_different_scales_agree_at_random_overlap_points():
    mosaic = Mosaic(NAIP)
    dataset = PairDataset(mosaic, 96)
    rng = np.random.default_rng(3)
    matched, shuffled = [], []
    for pair in OverlappingPairSampler(mosaic, 96, scale=(0.75, 1.5), length=20, generator=seeded(3)):
        sample = dataset[pair]
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
        sample = dataset[pair]
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
    path = write_raster(tmp_path / "half.tif", data, nodata=-9999)
    mosaic = Mosaic(path)
    xmin, ymin, xmax, ymax = mosaic.index.total_bounds
    # Two boxes straddling the nodata edge at x = xmin + 200, on whole pixels.
    pair = ViewPair((xmin + 100, ymin, xmin + 300, ymin + 200), (xmin + 150, ymin, xmin + 350, ymin + 200))
    sample = PairDataset(mosaic, 20)[pair]
    a = sample["image_a"][0].numpy()
    assert np.isnan(a[:, :10]).all()
    np.testing.assert_array_equal(a[:, 10:], data[0, 20:, 20:30])
    b = sample["image_b"][0].numpy()
    assert np.isnan(b[:, :5]).all() and np.isfinite(b[:, 5:]).all()


def test_resample_off_grid_boxes_matches_on_grid_path():
    # A linear ramp is reproduced exactly by bilinear interpolation, on or off grid.
    height, width = 50, 60
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = torch.from_numpy(np.stack([xx + 0.5, yy + 0.5]))  # pixel-centre coordinates
    bounds = (0.0, -float(height), float(width), 0.0)  # 1 map unit per pixel, y up
    boxes = [(10.0, -40.0, 30.0, -20.0), (10.25, -39.5, 30.75, -19.0)]
    views = resample_views(ramp, bounds, boxes, 16).numpy()
    for view, box in zip(views, boxes):
        centres = (np.arange(16) + 0.5) / 16
        np.testing.assert_allclose(view[0, 3], box[0] + centres * (box[2] - box[0]), atol=1e-4)
        np.testing.assert_allclose(view[1, :, 3], -(box[3] - centres * (box[3] - box[1])), atol=1e-4)


def test_dataloader_with_workers_and_stack_samples():
    mosaic = Mosaic(NC_BANDS)
    sampler = OverlappingPairSampler(mosaic, 48, scale=(0.75, 1.5), length=12, generator=seeded(5))
    loader = DataLoader(PairDataset(mosaic, 48), sampler=sampler, batch_size=4, num_workers=2, collate_fn=stack_samples)
    batches = list(loader)
    assert len(batches) == 3
    batch = batches[0]
    assert batch["image_a"].shape == (4, 6, 48, 48)
    assert batch["box_a"].shape == (4, 4) and batch["box_a"].dtype == torch.float64
    assert len(batch["crs"]) == 4


def test_bad_view_size():
    with pytest.raises(GeossclError, match="view_size: must be a positive whole number"):
        PairDataset(Mosaic(NAIP), 0)
