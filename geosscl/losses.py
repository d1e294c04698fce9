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


def points_near(a: Tensor, b: Tensor, distance: Tensor | float) -> Tensor:
    """``N×M`` bool: map point ``a[i]`` lies within ``distance`` of ``b[j]`` (L∞)."""
    return ((a[:, None, :] - b[None, :, :]).abs().amax(dim=-1) < distance)
