"""Exact correspondences between two augmented views of a pair.

A k×k grid of map points is placed inside the overlap box of each pair. Each point
is mapped through view box → view pixels → the view's augmentation matrix →
normalised coordinates of the augmented view, where dense features are sampled
with ``grid_sample``. Cell (i, j) of view A and cell (i, j) of view B are then the
same ground location, whatever the crop, scale, flip, rotation or affine warp.

Conventions (the known traps): Kornia's matrices act on pixel coordinates with
pixel centres at integers; ``grid_sample`` with ``align_corners=False`` puts -1 and
+1 on the outer pixel *edges*, so a continuous pixel coordinate ``p`` (centre at
integer) maps to ``(2p + 1) / W - 1``. Feature maps at stride ``s`` of an image of
``W`` pixels cover the same extent, so the same normalised coordinates apply.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def overlap_grid(overlap: Tensor, k: int) -> Tensor:
    """Centres of a k×k grid of cells over each overlap box.

    Args:
        overlap: ``B×4`` boxes ``(minx, miny, maxx, maxy)``, map units.
        k: points per side.

    Returns:
        ``B×k×k×2`` map coordinates ``(x, y)``; row 0 is the top (largest y).
    """
    steps = (torch.arange(k, device=overlap.device, dtype=overlap.dtype) + 0.5) / k
    x = overlap[:, 0:1] + steps[None] * (overlap[:, 2:3] - overlap[:, 0:1])  # B×k
    y = overlap[:, 3:4] - steps[None] * (overlap[:, 3:4] - overlap[:, 1:2])  # B×k
    return torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), dim=-1)


def map_to_view(points: Tensor, box: Tensor, size: int, matrix: Tensor | None = None) -> Tensor:
    """Normalised ``grid_sample`` coordinates of map points in an augmented view.

    Args:
        points: ``B×...×2`` map coordinates ``(x, y)``.
        box: ``B×4`` view boxes ``(minx, miny, maxx, maxy)``, same CRS.
        size: side of the view in pixels (before and after augmentation).
        matrix: ``B×3×3`` geometric augmentation matrices (input → output pixel
            coordinates, pixel centres at integers); None for no augmentation.

    Returns:
        ``B×...×2`` coordinates in [-1, 1] for ``grid_sample(align_corners=False)``.
    """
    batch = points.shape[0]
    flat = points.reshape(batch, -1, 2).to(torch.float64)
    box = box.to(torch.float64)
    # View pixel coordinates, centres at integers: x right from minx, y down from maxy.
    u = (flat[..., 0] - box[:, None, 0]) / (box[:, None, 2] - box[:, None, 0]) * size - 0.5
    v = (box[:, None, 3] - flat[..., 1]) / (box[:, None, 3] - box[:, None, 1]) * size - 0.5
    if matrix is not None:
        m = matrix.to(torch.float64)
        u, v = (
            m[:, None, 0, 0] * u + m[:, None, 0, 1] * v + m[:, None, 0, 2],
            m[:, None, 1, 0] * u + m[:, None, 1, 1] * v + m[:, None, 1, 2],
        )
    normalised = torch.stack([(2 * u + 1) / size - 1, (2 * v + 1) / size - 1], dim=-1)
    return normalised.reshape(points.shape).to(torch.float32)


def sample_at(features: Tensor, coords: Tensor) -> Tensor:
    """Bilinear samples of ``B×D×h×w`` features at ``B×k×k×2`` normalised coordinates.

    Returns:
        ``B×D×k×k``. Points outside the view take the nearest edge value; use
        :func:`inside` to drop them.
    """
    return F.grid_sample(features, coords.to(features.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def inside(coords: Tensor, size: int) -> Tensor:
    """``B×k×k`` bool: points at least half a pixel inside the view (no padding blends in)."""
    limit = 1.0 - 1.0 / size
    return (coords.abs() <= limit).all(dim=-1)


def usable(coords: Tensor, valid: Tensor) -> Tensor:
    """``B×k×k`` bool: points whose every bilinear neighbour is a valid pixel.

    Args:
        coords: ``B×k×k×2`` normalised coordinates in one augmented view.
        valid: ``B×1×H×W`` validity mask of that view (0 = nodata or padding).
    """
    return inside(coords, valid.shape[-1]) & (sample_at(valid, coords)[:, 0] > 1 - 1e-5)
