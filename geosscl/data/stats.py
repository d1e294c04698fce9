"""Per-band statistics of a mosaic, for normalisation."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import GeossclError
from .mosaic import Mosaic


def band_statistics(mosaic: Mosaic, windows: int = 64, size: int = 128, seed: int = 0) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of each band over random windows, nodata ignored.

    Where places overlap (dates of one tile), each window is read from one of the
    places that hold it, drawn at random, so every date counts.

    Args:
        mosaic: the imagery.
        windows: number of windows read.
        size: window side in pixels of ``mosaic.res``.
        seed: seed of the window locations.

    Returns:
        ``(mean, std)``, one value per band, in the bands' own units.
    """
    from torchgeo.samplers import RandomGeoSampler

    side = min(size, *(int(v) for v in _extent_px(mosaic)))
    sampler = RandomGeoSampler(mosaic, size=side, length=windows, generator=torch.Generator().manual_seed(seed))
    total = np.zeros(mosaic.num_bands)
    total_sq = np.zeros(mosaic.num_bands)
    count = np.zeros(mosaic.num_bands)
    rng = np.random.default_rng(seed)
    for query in sampler:
        holding = mosaic.places_at((query[0].start, query[1].start, query[0].stop, query[1].stop))
        first = holding[rng.integers(len(holding))] if len(holding) > 1 else None
        image = mosaic.sample(query, first)["image"].numpy()
        image = image.reshape(mosaic.num_bands, -1).astype(np.float64)
        valid = ~np.isnan(image)
        total += np.where(valid, image, 0).sum(1)
        total_sq += np.where(valid, image**2, 0).sum(1)
        count += valid.sum(1)
    if (count == 0).any():
        raise GeossclError(f"{mosaic.files[0]}: no valid pixel found in {windows} random windows; is it all nodata?")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean.tolist(), std.tolist()


def _extent_px(mosaic: Mosaic) -> tuple[float, float]:
    xmin, ymin, xmax, ymax = mosaic.index.total_bounds
    return (xmax - xmin) / mosaic.res[0], (ymax - ymin) / mosaic.res[1]
