"""Exactness of view-to-view correspondences through reading, resampling and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from affine import Affine

from geosscl import Mosaic, PairDataset
from geosscl.augment import PairAugmentation
from geosscl.correspondence import map_to_view, overlap_grid, sample_at, usable
from samplers import OverlappingPairSampler
from conftest import DEVICES, NAIP, write_raster

RES = 10.0
ORIGIN = (500000.0, 5000000.0)


@pytest.fixture(scope="module")
def ramp_mosaic(tmp_path_factory) -> Mosaic:
    """A raster whose two bands hold each pixel centre's map x and y (km from the origin)."""
    size = 400
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    ramp = np.stack([(cols + 0.5) * RES / 1000, -(rows + 0.5) * RES / 1000]).astype(np.float32)
    path = tmp_path_factory.mktemp("ramp") / "ramp.tif"
    write_raster(path, ramp, transform=Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1]))
    return Mosaic(path)


def geometric_only(**kwargs) -> PairAugmentation:
    augment = PairAugmentation(blur=0, noise=0, **kwargs)
    augment.photometric = torch.nn.Sequential()  # values must stay coordinates
    return augment


def ramp_error(mosaic: Mosaic, augment: PairAugmentation, scale, use_matrix: bool = True, seed: int = 0,
               device: str = "cpu") -> float:
    """Largest error, in native pixels, of the map coordinates read back at mapped grid points."""
    size = 64
    torch.manual_seed(seed)
    sampler = OverlappingPairSampler(mosaic, size, scale=scale, length=16, generator=torch.Generator().manual_seed(seed))
    batch = PairDataset(mosaic, size).views(sampler, device)
    points = overlap_grid(batch["overlap"], 8)
    expected = torch.stack([(points[..., 0] - ORIGIN[0]) / 1000, (points[..., 1] - ORIGIN[1]) / 1000], dim=1)
    worst = 0.0
    for image, box in (("image_a", "box_a"), ("image_b", "box_b")):
        views, valid, matrix = augment(batch[image], torch.ones_like(batch[image][:, :1]))
        coords = map_to_view(points, batch[box], size, matrix if use_matrix else None)
        ok = usable(coords, valid)
        values = sample_at(views, coords)  # B×2×k×k
        error = (values - expected.to(values.dtype)).abs().amax(dim=1)
        assert ok.float().mean() > 0.5
        worst = max(worst, float(error[ok].max()) * 1000 / RES)
    return worst


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("flips", {"flips": True, "rotate90": False, "affine_degrees": 0}),
        ("rotate90", {"flips": False, "rotate90": True, "affine_degrees": 0}),
        ("flip+rotate90", {"flips": True, "rotate90": True, "affine_degrees": 0}),
        ("all", {"flips": True, "rotate90": True, "affine_degrees": 15}),
    ],
)
@pytest.mark.parametrize("scale", [(1.0, 1.0), (0.6, 1.6)])
@pytest.mark.parametrize("device", DEVICES)
def test_ramp_reads_back_its_map_coordinates(ramp_mosaic, name, kwargs, scale, device):
    for seed in range(3):
        assert ramp_error(ramp_mosaic, geometric_only(**kwargs), scale, seed=seed, device=device) < 0.05


@pytest.mark.parametrize("device", DEVICES)
def test_ignoring_the_augmentation_matrix_is_caught(ramp_mosaic, device):
    augment = geometric_only(flips=True, rotate90=True, affine_degrees=0)
    assert ramp_error(ramp_mosaic, augment, (1.0, 1.0), use_matrix=False, device=device) > 5


@pytest.mark.parametrize("device", DEVICES)
def test_real_imagery_equal_scale_views_agree_at_mapped_points(device):
    mosaic = Mosaic(NAIP)
    size = 64
    torch.manual_seed(0)
    sampler = OverlappingPairSampler(mosaic, size, scale=(1, 1), length=16, generator=torch.Generator().manual_seed(1))
    batch = PairDataset(mosaic, size).views(sampler, device)
    # Grid points on pixel centres of the native grid, so no interpolation happens at all.
    res = mosaic.res[0]
    k = 8
    overlap = batch["overlap"]
    cells = ((overlap[:, 2] - overlap[:, 0]) / res).floor()
    assert (cells >= k).all()
    points = overlap_grid(overlap, k)
    points = torch.stack(
        [
            mosaic.grid_origin[0] + (((points[..., 0] - mosaic.grid_origin[0]) / res).floor() + 0.5) * res,
            mosaic.grid_origin[1] + (((points[..., 1] - mosaic.grid_origin[1]) / res).floor() + 0.5) * res,
        ],
        dim=-1,
    )
    augment = geometric_only(flips=True, rotate90=True, affine_degrees=0)
    values = []
    for image, box in (("image_a", "box_a"), ("image_b", "box_b")):
        views, _, matrix = augment(batch[image], torch.ones_like(batch[image][:, :1]))
        values.append(sample_at(views, map_to_view(points, batch[box], size, matrix)))
    torch.testing.assert_close(values[0], values[1], rtol=1e-4, atol=1e-4, equal_nan=True)  # float rounding
    assert torch.isfinite(values[0]).float().mean() > 0.9
