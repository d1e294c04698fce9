"""Contrastive losses of SSCCL: one masked InfoNCE, three ways to feed it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskedInfoNCE(nn.Module):
    r"""InfoNCE with aligned positives and excluded negatives.

    For queries :math:`q_i` and keys :math:`k_j` (L2-normalised), with row
    :math:`i`'s positive :math:`k_i` and candidate negatives the other keys plus
    ``extra`` ones:

    .. math::
        \mathcal{L} = -\frac{1}{N}\sum_i \log
        \frac{\exp(q_i \cdot k_i / \tau)}{\sum_{j \notin X_i} \exp(q_i \cdot k_j / \tau)}

    where :math:`X_i` are the negatives ``exclude`` marks: the same ground location
    seen in another pair is not a negative.

    Args:
        temperature: :math:`\tau`.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, q: Tensor, k: Tensor, extra: Tensor | None = None, exclude: Tensor | None = None) -> Tensor:
        """Loss of ``N×D`` queries against ``N×D`` keys and ``M×D`` extra negatives.

        Args:
            q: queries, ``N×D``.
            k: keys, ``N×D``; ``k[i]`` is the positive of ``q[i]``.
            extra: more negatives, ``M×D`` (e.g. a queue).
            exclude: ``N×(N+M)`` bool, True where a key must not count as a negative
                (the diagonal is ignored).
        """
        q = F.normalize(q, dim=1)
        keys = F.normalize(k, dim=1)
        if extra is not None:
            keys = torch.cat([keys, F.normalize(extra, dim=1)])
        logits = q @ keys.T / self.temperature  # N×(N+M)
        if exclude is not None:
            exclude = exclude.clone()
            exclude.diagonal().fill_(False)
            logits = logits.masked_fill(exclude, float("-inf"))
        target = torch.arange(q.shape[0], device=q.device)
        return F.cross_entropy(logits, target)


def boxes_intersect(a: Tensor, b: Tensor) -> Tensor:
    """``N×M`` bool: box ``a[i]`` intersects box ``b[j]`` (``(minx, miny, maxx, maxy)``)."""
    return (
        (a[:, None, 0] < b[None, :, 2])
        & (a[:, None, 2] > b[None, :, 0])
        & (a[:, None, 1] < b[None, :, 3])
        & (a[:, None, 3] > b[None, :, 1])
    )


def grid_points_near(points: Tensor, valid: Tensor, boxes: Tensor, distance: Tensor) -> Tensor:
    """``N×N`` bool over the ``N`` valid points of ``B`` grids: point ``i`` lies within its grid's
    ``distance`` of point ``j`` (L∞).

    The same as comparing every valid point with every other, without doing so: at a batch of
    64 pairs with 8×8 grids that N×N×2 difference was the largest single cost of a CPU step (157
    of 638 ms) and grows to gigabytes at GPU batch sizes. Points of two grids can only be near
    where one grid's box, grown by its distance, meets the other's, so only those pairs of grids
    (each grid with itself, and pairs over the same ground) are compared point by point.

    Args:
        points: ``B×k×k×2`` map coordinates, each grid inside its box.
        valid: ``B×k×k`` bool, the points kept (rows and columns of the result, in order).
        boxes: ``B×4`` boxes ``(minx, miny, maxx, maxy)`` holding each grid.
        distance: ``B``, how near counts as the same point, per grid (of the row's point).
    """
    grids = points.shape[0]
    flat = points.reshape(grids, -1, 2)  # B×K×2
    grown = boxes + torch.stack([-distance, -distance, distance, distance], dim=1)
    grid_a, grid_b = boxes_intersect(grown, boxes).nonzero(as_tuple=True)  # grid pairs worth comparing
    near = (flat[grid_a][:, :, None] - flat[grid_b][:, None]).abs().amax(dim=-1) < distance[grid_a][:, None, None]
    meeting, i, j = near.nonzero(as_tuple=True)
    # Position of each valid point among the valid ones (-1: left out).
    keep = valid.reshape(grids, -1)
    n = int(keep.sum())
    index = torch.full(keep.shape, -1, dtype=torch.long, device=points.device)
    index[keep] = torch.arange(n, device=points.device)
    row, col = index[grid_a[meeting], i], index[grid_b[meeting], j]
    both = (row >= 0) & (col >= 0)
    out = torch.zeros(n, n, dtype=torch.bool, device=points.device)
    out[row[both], col[both]] = True
    return out
