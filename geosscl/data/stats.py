"""Per-band statistics of a mosaic, for normalisation."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import GeossclError
from .mosaic import Mosaic

log = logging.getLogger("geosscl")


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


#: Every band's mean this many times the model's, or this many times smaller: other units, not other ground.
#: Measured on the bundled Landsat 7 scenes: DN (NC) against reflectance × 10,000 (tutorial) differ 5.6–50× in
#: every band; a hazy, partly cloudy date against a clear one 0.8–2.6× (the clear near infrared is brighter).
UNITS_FACTOR = 4.0


def scale_ratios(mean: Sequence[float], reference: Sequence[float]) -> tuple[float, float] | None:
    """``(smallest, largest)`` per-band ratio of ``mean`` to ``reference`` where every band's lies beyond
    :data:`UNITS_FACTOR` on one side: imagery in other units or scaling than the reference (DN against
    reflectance, reflectance 0-1 against 0-10,000). None otherwise, and where a mean is not positive
    (decibels, signed data: no ratio tells units there)."""
    if len(mean) != len(reference) or any(not m > 0 for m in (*mean, *reference)):
        return None
    ratios = [m / r for m, r in zip(mean, reference)]
    if min(ratios) > UNITS_FACTOR or max(ratios) < 1 / UNITS_FACTOR:
        return min(ratios), max(ratios)
    return None


def warn_other_units(mosaic: Mosaic, reference: Sequence[float], source: str, whose: str) -> None:
    """Warn where ``mosaic``'s values are on another scale than those of ``reference`` (the band means a
    network was trained on, ``whose``): the network normalises them with those statistics, so DN fed to a
    network of reflectance give nonsense without any error. A warning, not an error: no threshold tells
    units from ground for sure. Reads 16 windows of 64 px."""
    try:
        mean, _ = band_statistics(mosaic, windows=16, size=64)
    except GeossclError:
        return  # no valid pixel where sampled: nothing to compare
    ratios = scale_ratios(mean, reference)
    if ratios:
        log.warning(f"{source}: every band averages {ratios[0]:.3g}× to {ratios[1]:.3g}× {whose} (band "
                    f"{mosaic.band_indexes[0]}: {mean[0]:.4g} here, {reference[0]:.4g} there): other units or scaling "
                    f"(DN against reflectance, 0–1 against 0–10,000)? Rescale it as that imagery was")


def _extent_px(mosaic: Mosaic) -> tuple[float, float]:
    xmin, ymin, xmax, ymax = mosaic.index.total_bounds
    return (xmax - xmin) / mosaic.res[0], (ymax - ymin) / mosaic.res[1]
