"""The masked InfoNCE against a hand computation, and the same-place exclusions."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import NC_BANDS
from geosscl import Mosaic
from geosscl.correspondence import overlap_grid
from geosscl.losses import MaskedInfoNCE, boxes_intersect, grid_points_near
from samplers import OverlappingPairSampler


def test_infonce_matches_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = 0.5
    loss = MaskedInfoNCE(t)(q, k)
    kn = k / k.norm(dim=1, keepdim=True)
    s = q @ kn.T / t
    expected = -0.5 * (
        (s[0, 0] - torch.logsumexp(s[0], 0)) + (s[1, 1] - torch.logsumexp(s[1], 0))
    )
    assert math.isclose(loss.item(), expected.item(), rel_tol=1e-6)


def test_excluded_negatives_do_not_count():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    loss = MaskedInfoNCE(0.2)
    full = loss(q, k)
    # Row 0 and row 2 are the same place: neither is the other's negative.
    exclude = torch.zeros(3, 3, dtype=torch.bool)
    exclude[0, 2] = exclude[2, 0] = True
    masked = loss(q, k, exclude=exclude)
    assert masked < full
    # Excluding every negative leaves only positives: loss 0.
    assert loss(q, k, exclude=torch.ones(3, 3, dtype=torch.bool)).item() == 0.0
    # Extra negatives (a queue) raise the loss; excluded ones do not.
    queue = torch.tensor([[1.0, 0.05]])
    assert loss(q, k, extra=queue) > full
    keep_out = torch.cat([torch.zeros(3, 3, dtype=torch.bool), torch.ones(3, 1, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(loss(q, k, extra=queue, exclude=keep_out), full)


def test_same_place_helpers():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0], [10.0, 0.0, 20.0, 10.0]], dtype=torch.float64)
    hit = boxes_intersect(boxes, boxes)
    assert hit.tolist() == [[True, True, False], [True, True, True], [False, True, True]]
    nan_box = torch.full((1, 4), float("nan"), dtype=torch.float64)
    assert not boxes_intersect(boxes, nan_box).any()


@pytest.mark.parametrize("crop, batch", [(64, 16), (32, 64)])
def test_near_grid_points_are_every_pair_of_points_within_half_a_cell(crop, batch):
    # Real pairs of the NC scene (about 200 distinct 32 px places, so a batch of 64 holds pairs over
    # the same ground), their 8×8 overlap grids, some points left out as invalid views leave them.
    mosaic = Mosaic(NC_BANDS)
    sampler = OverlappingPairSampler(mosaic, crop, length=batch, generator=torch.Generator().manual_seed(7))
    overlap = torch.tensor([pair.overlap for pair in sampler], dtype=torch.float64)
    points = overlap_grid(overlap, 8)
    valid = torch.rand(points.shape[:3], generator=torch.Generator().manual_seed(1)) > 0.2
    half_cell = (overlap[:, 2:] - overlap[:, :2]).amin(dim=1) / 8 / 2
    near = grid_points_near(points, valid, overlap, half_cell)
    # Against every point compared with every other, each row with its own grid's distance.
    where = points[valid]
    distance = half_cell[:, None, None].expand(valid.shape)[valid]
    every = (where[:, None] - where[None]).abs().amax(dim=-1) < distance[:, None]
    assert torch.equal(near, every)
    pair = torch.arange(batch)[:, None, None].expand(valid.shape)[valid]
    assert (near & (pair[:, None] != pair[None])).any()  # points of other pairs over the same ground were found
