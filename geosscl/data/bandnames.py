"""What each band of a mosaic is, from its file name or GDAL band description, and the check
that imagery gives a model the bands it was trained on, in its order.

A model reads bands by position. Files listed in another order (``B4 B3 B2`` for ``B2 B3 B4``),
a stack of more bands than the model's, or tiles whose bands are stacked differently give it
other bands without any error: the map comes out wrong. Names catch this where files carry
them. TorchGeo's ``RasterDataset.all_bands`` names bands by a dataset class written for one
product; a mosaic of any files needs them from the files themselves, hence this module.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

from ..errors import GeossclError

log = logging.getLogger("geosscl")

#: A band named by its number: ``B4``, ``B04``, ``SR_B4``, ``band3``, ``B8A`` (whole text).
_NUMBERED = re.compile(r"(?i)(?:(?:sr|st)_)?(?:b|band)0*(\d{1,2})(a?)")
#: A description that only counts bands, naming nothing: what some writers put in every file (``Band 1``; GDAL's
#: ERDAS IMAGINE writer ``Layer_1``, which gdal_translate carries on; R's raster ``layer.1`` and terra ``lyr1``).
#: ``band3`` is not among them: Landsat and Sentinel-2 tools name band 3 so.
_POSITION = re.compile(r"(?i)band[\s_.\-]+\d+|(?:layer|lyr)(?:[\s_.\-]*\d+)?")
#: The band of a per-band file, in its name: ``_SR_B4.TIF``, ``_ST_B10.TIF`` (Landsat),
#: ``_B8A_20m`` (Sentinel-2), ``band3``.
BAND_IN_NAME = re.compile(r"(?i)(?<![a-z0-9])(?:(?:sr|st)_)?(?:b|band)\d{1,2}a?(?![a-z0-9])")


def band_label(text: str | None) -> str | None:
    """A band's name as geosscl keeps it: ``B4`` for every spelling of a band number
    (``B04``, ``SR_B4``, ``band4``), other text with its spaces collapsed; None for none, and
    for ``Band 4`` or ``Layer_4``, which some writers give every file's fourth band, whatever it holds."""
    if text is None or not text.strip() or _POSITION.fullmatch(text.strip()):
        return None
    numbered = _NUMBERED.fullmatch(text.strip())
    if numbered:
        return f"B{int(numbered.group(1))}{numbered.group(2).upper()}"
    return " ".join(text.split())


def band_number(label: str | None) -> tuple[int, str]:
    """Sort key of a band's name in band-number order (``B8`` < ``B8A`` < ``B9`` < ``B10``); names that
    are no band number (and None) sort after every numbered band."""
    numbered = re.fullmatch(r"B(\d+)(A?)", label or "")
    return (int(numbered.group(1)), numbered.group(2)) if numbered else (1 << 30, "")


def name_in_file(path: str) -> str | None:
    """The band a per-band file's name holds (``…_SR_B4.TIF`` → ``B4``), if it holds exactly one."""
    found = BAND_IN_NAME.findall(os.path.basename(path))
    return band_label(found[0]) if len(found) == 1 else None


def place_band_names(layout: Sequence[tuple[str, int, Sequence[str | None]]]) -> list[str | None]:
    """Names of every band of one place, in band order.

    Args:
        layout: the place's files in stacking order, each ``(path, band count, GDAL band descriptions)``.

    A single-band file is named by its file name (per-band products: the band is in the name, the
    description usually empty), else by its description; a file of several bands by its descriptions.
    """
    names: list[str | None] = []
    for path, count, descriptions in layout:
        if count == 1 and name_in_file(path):
            names.append(name_in_file(path))
        else:
            names.extend(band_label(descriptions[i] if i < len(descriptions) else None) for i in range(count))
    return names


def _key(name: str | None) -> str | None:
    return None if name is None else name.casefold()


def misplaced(expected: Sequence[str | None], found: Sequence[str | None]) -> tuple[int, int] | None:
    """The first band ``i`` of ``found`` whose name is that of band ``j != i`` of ``expected``
    (both 0-based), or None: bands that agree, or differ without being the other's bands."""
    keys = [_key(n) for n in expected]
    for i, name in enumerate(found):
        key = _key(name)
        if key is not None and (i >= len(keys) or keys[i] != key) and key in keys:
            return i, keys.index(key)
    return None


def check_band_names(
    expected: Sequence[str | None] | None,
    names: Sequence[str | None],
    bands: Sequence[int],
    source: str,
    whose: str,
    chosen: bool = False,
) -> None:
    """Check that ``bands`` of imagery whose bands are called ``names`` are the bands ``expected``.

    Args:
        expected: the name of each band the model reads, in its order (None, or None items: unknown).
        names: the name of every band of the imagery (1-based band ``b`` is ``names[b - 1]``).
        bands: the 1-based bands of the imagery fed to the model, in order.
        source: the imagery, for messages.
        whose: the model (its file), for messages.
        chosen: ``bands`` were given by the user (``-b``): a disagreement is then only warned about.

    Raises:
        GeossclError: where a band the model reads is at another position of the imagery (files in
            another order, a stack of other bands), with the ``-b`` that reads them in the model's order
            when every band is named once.
    """
    # Names as kept now: models made before a generic description (Layer_1) counted as unnamed kept it as a name.
    expected = [band_label(n) for n in expected or ()]
    if not any(expected):
        return
    # Padded to the model's count: where the imagery has fewer bands, the count check that follows says so.
    found = [names[b - 1] if 0 < b <= len(names) else None for b in bands][: len(expected)]
    found += [None] * (len(expected) - len(found))
    keys = [_key(n) for n in names]
    differ = [i for i, (want, got) in enumerate(zip(expected, found))
              if want is not None and got is not None and _key(want) != _key(got)]
    # A band the model reads that the imagery holds, but elsewhere: the imagery's order is not the model's.
    moved = [i for i in range(len(expected)) if expected[i] is not None and _key(found[i]) != _key(expected[i])
             and _key(expected[i]) in keys]
    if moved:
        i = moved[0]
        at = keys.index(_key(expected[i])) + 1
        here = (f"band {bands[i]} here is {found[i]!r}" if found[i] is not None
                else f"band {bands[i]} here is unnamed" if i < len(bands) else f"there is no band {i + 1} here")
        where = [keys.index(k) + 1 if k is not None and keys.count(k) == 1 else None for k in map(_key, expected)]
        unnamed = [b for b in range(1, len(names) + 1) if keys[b - 1] is None and b not in where]
        if where.count(None) == 1 and len(unnamed) == 1:  # one unnamed band each side (a stack's last, say)
            where[where.index(None)] = unnamed[0]
        fix = (f"pass -b/--bidx {','.join(map(str, where))} to read them in its order" if None not in where
               else "pass -b/--bidx to read them in its order")
        message = (f"{source}: the model's band {i + 1} is {expected[i]!r}, which is band {at} here ({here}); "
                   f"{whose} reads {_listing(expected)}")
        if chosen:
            log.warning(f"{message}; reading the bands -b/--bidx gives, as asked")
            return
        raise GeossclError(f"{message}: {fix}")
    if differ:
        i = differ[0]
        more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
        log.warning(f"{source}: band {bands[i]} is {found[i]!r} where the model's band {i + 1} is {expected[i]!r}{more}; "
                    f"check these are the bands {whose} was trained on, in its order")


def only_these_bands(expected: Sequence[str | None] | None, names: Sequence[str | None]) -> bool:
    """Whether imagery of bands ``names`` holds the bands ``expected`` alone, all named, in their order."""
    expected = [band_label(n) for n in expected or ()]
    return (bool(expected) and len(expected) == len(names) and None not in expected
            and all(_key(want) == _key(got) for want, got in zip(expected, names)))


def _listing(names: Sequence[str | None]) -> str:
    return ", ".join("?" if n is None else n for n in names)


def check_places(places: Sequence[tuple[str, Sequence[str | None]]]) -> None:
    """Refuse places of a mosaic whose named bands are other bands, or the same in another order.

    Args:
        places: each place's first file and the names of its bands.

    Raises:
        GeossclError: naming both files and the band, where a band of one place is named as another
            band of the first, or by another band number than the first's band at its position.
            Other names that differ (``blue`` against ``B2``: two products' words) are warned about
            once; bands left unnamed on either side are not compared.
    """
    first, names = places[0]
    for path, other in places[1:]:
        found = misplaced(names, other)
        if found:
            i, j = found
            raise GeossclError(f"{path}: band {i + 1} is {other[i]!r}, band {j + 1} of {first}; every place of a mosaic "
                               "needs the same bands in the same order")
        for i, (want, got) in enumerate(zip(names, other)):
            if want is None or got is None or _key(want) == _key(got):
                continue
            message = f"{path}: band {i + 1} is {got!r} where {first} has {want!r}"
            if _BAND_NUMBER.fullmatch(want) and _BAND_NUMBER.fullmatch(got):
                # Per-band files on different grids (Sentinel-2's 10 m and 20 m bands) are places, not bands.
                why = (" (single-band files stack as bands only on one grid: warp them to one first)"
                       if len(names) == 1 else "")
                raise GeossclError(f"{message}; every place of a mosaic needs the same bands in the same order{why}")
            if (path, first) not in _WARNED:
                _WARNED.add((path, first))
                log.warning(f"{message}; check the files hold the same bands in the same order")
            break


#: A band number as :func:`band_label` keeps it.
_BAND_NUMBER = re.compile(r"B\d{1,2}A?")
#: Pairs of files already warned about (a mosaic is opened more than once per command).
_WARNED: set[tuple[str, str]] = set()
