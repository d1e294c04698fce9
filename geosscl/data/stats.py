"""Per-band statistics of a mosaic, for normalisation."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import GeossclError
from .mosaic import Mosaic

log = logging.getLogger("geosscl")


#: Values that fill the pixels without data of files that do not declare them as nodata (a black collar, a
#: band stacked under another band's nodata): with the lowest value of an integer type, each is counted in the
#: sampled pixels, and reported where it fills :data:`FILL_SHARE` of a band of imagery: of a band with more than
#: :data:`CATEGORIES` distinct values in some window (a mask or class band, such as Fmask's 0 = clear, is not).
FILLS = (0.0, -9999.0, -32768.0, -99999.0, float(np.finfo(np.float32).min))
FILL_SHARE = 0.05
CATEGORIES = 32


def band_statistics(mosaic: Mosaic, windows: int = 64, size: int = 128, seed: int = 0) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of each band over random windows, nodata ignored.

    Where places overlap (dates of one tile), each window is read from one of the
    places that hold it, drawn at random, so every date counts. Warns where a band's
    pixels hold a usual fill value (:data:`FILLS`) that is not nodata, in
    :data:`FILL_SHARE` of them or more: statistics, training and maps would take it
    for ground.

    Args:
        mosaic: the imagery.
        windows: number of windows read.
        size: window side in pixels of ``mosaic.res``.
        seed: seed of the window locations.

    Returns:
        ``(mean, std)``, one value per band, in the bands' own units.
    """
    from torchgeo.samplers import RandomGeoSampler

    side = min(size, _largest_fit_px(mosaic))
    sampler = RandomGeoSampler(mosaic, size=side, length=windows, generator=torch.Generator().manual_seed(seed))
    total = np.zeros(mosaic.num_bands)
    total_sq = np.zeros(mosaic.num_bands)
    count = np.zeros(mosaic.num_bands)
    fills = np.array(sorted({*FILLS, *([float(np.iinfo(mosaic.dtype).min)] if np.issubdtype(mosaic.dtype, np.integer)
                                       else [])}))
    filled = np.zeros((mosaic.num_bands, fills.size))
    distinct = np.zeros(mosaic.num_bands, dtype=np.int64)
    rng = np.random.default_rng(seed)
    for query in _drawn(sampler, seed):
        holding = mosaic.places_at((query[0].start, query[1].start, query[0].stop, query[1].stop))
        first = holding[rng.integers(len(holding))] if len(holding) > 1 else None
        image = mosaic.sample(query, first)["image"].numpy()
        image = image.reshape(mosaic.num_bands, -1).astype(np.float64)
        valid = ~np.isnan(image)
        total += np.where(valid, image, 0).sum(1)
        total_sq += np.where(valid, image**2, 0).sum(1)
        count += valid.sum(1)
        filled += (image[:, :, None] == fills[None, None, :]).sum(1)
        distinct = np.maximum(distinct, [np.unique(band[ok]).size for band, ok in zip(image, valid)])
    if (count == 0).any():
        raise GeossclError(f"{mosaic.files[0]}: no valid pixel found in {windows} random windows; is it all nodata?")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    _warn_fills(mosaic, fills, np.where((distinct > CATEGORIES)[:, None], filled / count[:, None], 0.0))
    return mean.tolist(), std.tolist()


def _drawn(sampler, seed: int) -> list:
    """The sampler's windows, the same whatever torch's global random state. TorchGeo 0.8.1's
    RandomGeoSampler draws each window's place with ``torch.multinomial`` and without the generator it is
    given, so over several places the windows (and the statistics) would follow whatever drew from torch's
    global generator before: two calls in one process, or tests run in another order, would disagree."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return list(sampler)


def _warn_fills(mosaic: Mosaic, fills: np.ndarray, shares: np.ndarray) -> None:
    """One warning per fill value that :data:`FILL_SHARE` or more of some band's sampled pixels hold, those
    bands named (as ``-b`` numbers them) with the share of each (``shares``: bands × fills, 0 where not told)."""
    for j, value in enumerate(fills):
        bands = [(b, share) for b, share in zip(mosaic.band_indexes, shares[:, j]) if share >= FILL_SHARE]
        if not bands:
            continue
        lo, hi = (f"{100 * f([share for _, share in bands]):.0f}" for f in (min, max))
        which = f"band {bands[0][0]} holds" if len(bands) == 1 else f"bands {', '.join(str(b) for b, _ in bands)} hold"
        share = f"{lo} %" if lo == hi else f"{lo}–{hi} %"
        others = sorted(mosaic.nodata_values - {value})
        if others:
            # One nodata value serves every band of a file: a band stacked under another band's keeps its own fill.
            remedy = (f"the files declare {', '.join(f'{v:g}' for v in others)} as nodata, which --nodata would replace: "
                      f"write {others[0]:g} where the band holds {value:g}")
        else:
            remedy = f"give --nodata {value:g} (nodata= in Python)"
        log.warning(f"{mosaic.source}: {which} {value:g} in {share} of the sampled pixels, a value the files do not "
                    f"declare as nodata: a fill (a collar, ground outside the scene)? If so, {remedy}; else it is "
                    "read as ground")


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


def _largest_fit_px(mosaic: Mosaic) -> int:
    """The side of the largest square window that fits in one of the mosaic's places, in pixels of its
    resolution (at least 1). TorchGeo's random sampler draws windows inside one place's bounds: a mosaic of
    tiles or chips smaller than the window asked for (64 px chips, say) has no place to draw them from."""
    bounds = mosaic.index.bounds
    sides = np.minimum((bounds.maxx - bounds.minx) / mosaic.res[0], (bounds.maxy - bounds.miny) / mosaic.res[1])
    return max(1, int(np.floor(sides.max() + 1e-6)))
