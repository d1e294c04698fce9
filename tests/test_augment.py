"""Photometric augmentation of real multispectral views: what each jitter setting changes."""

from __future__ import annotations

import pytest
import torch

from geosscl import GeossclError, Mosaic, PairDataset
from geosscl.augment import BandJitter, BandStats, PairAugmentation
from geosscl.data.stats import band_statistics
from geosscl.tasks import SSCCLTask
from samplers import OverlappingPairSampler
from conftest import NC_BANDS


@pytest.fixture(scope="module")
def nc_views() -> torch.Tensor:
    """Normalised 64 px views of the NC Landsat scene without nodata, ``B×6×64×64``."""
    mosaic = Mosaic([str(p) for p in NC_BANDS])
    sampler = OverlappingPairSampler(mosaic, 64, length=16, generator=torch.Generator().manual_seed(0))
    batch = PairDataset(mosaic, 64).views(sampler)
    mean, std = band_statistics(mosaic)
    images, valid = BandStats(torch.tensor(mean), torch.tensor(std))(batch["image_a"])
    whole = valid.flatten(1).all(dim=1)
    assert whole.sum() >= 8
    return images[whole]


def factor_and_shift(before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and band, the contrast factor and brightness shift that turn ``before`` into ``after``."""
    mean_before, mean_after = before.mean(dim=(2, 3)), after.mean(dim=(2, 3))
    spread_before = (before - mean_before[..., None, None]).std(dim=(2, 3))
    spread_after = (after - mean_after[..., None, None]).std(dim=(2, 3))
    return spread_after / spread_before, mean_after - mean_before  # B×C each


def test_per_band_jitter_moves_bands_apart(nc_views):
    torch.manual_seed(0)
    factor, shift = factor_and_shift(nc_views, BandJitter(p=1.0)(nc_views))
    # Each band of an image gets its own factor and shift: the spectral signature changes.
    assert (factor.amax(dim=1) - factor.amin(dim=1)).min() > 0.05
    assert (shift.amax(dim=1) - shift.amin(dim=1)).min() > 0.05


def test_per_image_jitter_moves_all_bands_alike(nc_views):
    torch.manual_seed(0)
    factor, shift = factor_and_shift(nc_views, BandJitter(p=1.0, per_band=False)(nc_views))
    # One factor and one shift per image, shared by its six bands ...
    assert torch.allclose(factor, factor[:, :1].expand_as(factor), atol=1e-4)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-4)
    # ... and they do differ between images (the augmentation is not a no-op).
    assert factor[:, 0].std() > 0.05 and shift[:, 0].std() > 0.05


def test_no_jitter_leaves_values_alone(nc_views):
    augment = PairAugmentation(jitter="none", blur=0, noise=0, flips=False, rotate90=False, affine_degrees=0)
    images, valid, matrix = augment(nc_views, torch.ones_like(nc_views[:, :1]))
    assert torch.equal(images, nc_views)
    assert torch.equal(matrix, torch.eye(3).expand(len(nc_views), 3, 3))


def test_unknown_jitter_is_refused():
    with pytest.raises(GeossclError, match="jitter: 'spectral' is not one of band, image, none"):
        SSCCLTask(in_channels=6, band_mean=[0.0] * 6, band_std=[1.0] * 6, jitter="spectral")


def test_nodata_is_the_ground_beside_it_mirrored():
    # A 64 px crop across the NC scene's western collar (columns 20-83; the swath starts near column 52), and
    # one with no ground at all: what training crops, views and inference tiles give the network.
    mosaic = Mosaic([str(p) for p in NC_BANDS])
    x0, y1 = mosaic.bounds[0].start + 20 * 28.5, mosaic.bounds[1].stop - 150 * 28.5
    crop, _, _ = mosaic.read((x0, y1 - 64 * 28.5, x0 + 64 * 28.5, y1))
    empty, _, _ = mosaic.read((mosaic.bounds[0].start, y1 - 64 * 28.5, mosaic.bounds[0].start + 16 * 28.5, y1))
    mean, std = band_statistics(mosaic)
    stats = BandStats(torch.tensor(mean), torch.tensor(std))
    images, valid = stats(torch.from_numpy(crop)[None])
    ground = ~torch.isnan(torch.from_numpy(crop)).any(0)
    assert torch.equal(valid[0, 0] > 0, ground) and 0.1 < ground.float().mean() < 0.9
    plain = (torch.from_numpy(crop) - stats.mean[0]) / stats.std[0]
    assert torch.equal(images[0][:, ground], plain[:, ground])  # the ground as it was
    checked = 0
    for row in range(64):
        first = int(torch.nonzero(ground[row])[0])
        if ground[row, first:].all() and not ground[:, :first].any():  # a plain western edge on this row
            reach = min(first, 64 - first - 1)
            for j in range(1, reach + 1):
                assert torch.equal(images[0, :, row, first - j], images[0, :, row, first + j])
                checked += 1
    assert checked > 500
    nothing, valid = stats(torch.from_numpy(empty)[None])
    assert not valid.any() and not nothing.any()  # no ground to mirror: the band means
