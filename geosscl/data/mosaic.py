"""A directory, glob or list of GeoTIFFs read as one TorchGeo raster dataset."""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import rasterio
import shapely
import torch
from affine import Affine
from geopandas import GeoDataFrame, GeoSeries
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.warp import calculate_default_transform, reproject, transform_bounds
from rasterio.windows import Window
from torchgeo.datasets import RasterDataset
from torchgeo.datasets.utils import GeoSlice

from ..errors import GeossclError
from .bandnames import BAND_IN_NAME, band_number, check_places, name_in_file, place_band_names
from .files import (RasterHeader, file_stamp, find_rasters, headers_kept, open_raster, raster_header,
                    warped_raster)
from .grid import ALIGN_TOL, MapGrid, snap_down, snap_up

log = logging.getLogger("geosscl")

#: Seconds of reading file headers before progress is logged, and between two logs.
HEADERS_QUIET_S, HEADERS_EVERY_S = 5.0, 15.0

Bounds = tuple[float, float, float, float]
"""``(minx, miny, maxx, maxy)`` in map units of a CRS."""

#: A date in a file name: ``20200101``, ``2020-01-01`` (also in ``20200101T101401``).
DATE_IN_NAME = re.compile(r"(?<!\d)(?:19|20)\d\d(-?)(?:0[1-9]|1[0-2])\1(?:0[1-9]|[12]\d|3[01])(?!\d)")


def acquisitions(paths: list[str]) -> list[list[str]]:
    """Single-band files of one grid, split into the acquisitions their names tell apart.

    - Per-band products name each file after its scene and its band
      (``LC08_…_20200101_…_SR_B4.TIF``, ``T33UUP_20200101T101401_B04_10m.jp2``): files
      whose paths differ in the band alone are one acquisition.
    - Otherwise, where every name holds a date (``S1A_…_20200101T055950_…_VV.tif``,
      ``pan_2019-06-01.tif``) and they hold several: files of one date (its first in
      the name) and folder are one acquisition, so single-band dates (radar,
      panchromatic) are dates, and the polarisations of one date its bands.
    - Otherwise (``red.tif``, ``nir.tif``) the files are one acquisition, as always.

    Two dates of a tile in one folder are then two places, not one of twice the bands.
    Files that name no band among files that do are refused.

    Returns:
        the acquisitions in the order of their first files in path order; each its files in
        band-number order where the names give the bands (``B1``, ``B2``, …, ``B8``, ``B8A``,
        ``B9``, ``B10``), otherwise in path order.

    Raises:
        GeossclError: naming a file that names no band where others do (a quality layer of a
            per-band product), with a glob of the band files.
    """
    # A file that names no band among band files is a product's quality or angle layer
    # (Landsat's QA_PIXEL, Sentinel-2's SCL): stacked as a band, it would be read as reflectance.
    banded = [p for p in paths if _without_band(os.path.basename(p)) is not None]
    if banded and len(banded) < len(paths):
        other = next(p for p in paths if p not in banded)
        head, name = os.path.split(banded[0])
        pattern = BAND_IN_NAME.sub(lambda m: re.sub(r"(?i)\d+a?$", "*", m.group(0)), name)
        raise GeossclError(
            f"{other}: names no band, where single-band files on its grid do ({name}); a mosaic stacks band "
            f"files alone: pass them alone (e.g. {os.path.join(head, pattern)!r})"
        )
    # The band rule applies whenever every name holds one band, also where it finds one
    # acquisition; the date rule only where it finds several (bands of one date then stack).
    for key in (_without_band, _first_date):
        by_key: dict[str, list[str]] = {}
        for path in paths:
            found = key(os.path.basename(path))
            if found is None:
                break
            by_key.setdefault(os.path.join(os.path.dirname(path), found), []).append(path)
        else:
            if key is _without_band:
                # Path order would stack B10 and B11 between B1 and B2, so `-b 4,3,2` would read B2, B11, B10.
                return [sorted(group, key=lambda p: band_number(name_in_file(p))) for group in by_key.values()]
            if len(by_key) > 1:
                return list(by_key.values())
    return [paths]


def named_as_bands(paths: list[str]) -> bool:
    """Whether the names of ``paths`` say they are bands of one acquisition: each names its band, or all name
    one date (the polarisations of one radar scene)."""
    names = [os.path.basename(p) for p in paths]
    if all(_without_band(n) is not None for n in names):
        return True
    dates = [_first_date(n) for n in names]
    return None not in dates and len(set(dates)) == 1


def files_label(paths: Sequence[str]) -> str:
    """Files in messages: the first, and how many more."""
    return paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} more)"


def _without_band(name: str) -> str | None:
    """``name`` without its band, if it holds exactly one."""
    return BAND_IN_NAME.sub("", name) if len(BAND_IN_NAME.findall(name)) == 1 else None


def _first_date(name: str) -> str | None:
    """The first date in ``name``, digits only, if it holds one."""
    found = DATE_IN_NAME.search(name)
    return found.group(0).replace("-", "") if found else None


def ground_sampling_distance(crs: CRS, res: tuple[float, float], bounds: Bounds) -> float | None:
    """Mean pixel side in metres; degrees are converted at the centre latitude of ``bounds``
    (None for a CRS without linear units)."""
    if crs.is_geographic:
        lat = (bounds[1] + bounds[3]) / 2
        return math.sqrt(res[0] * 111_320 * math.cos(math.radians(lat)) * res[1] * 110_574)
    try:
        factor = crs.linear_units_factor[1]
    except Exception:  # a CRS without linear units: nothing to compare
        return None
    return math.sqrt(res[0] * res[1]) * factor


# Where a warped integer file has no data (a float32 value no integer type reaches).
_NO_DATA_INTEGER = -1e30


class RawWindow(NamedTuple):
    """Pixels of a mosaic as stored (:meth:`Mosaic.read_raw`).

    A pixel holds data where ``valid`` is True (when there is a mask) and ``image``
    differs from ``nodata`` in every band (when there is a value). Non-finite float
    values are masked (and set to 0).
    """

    image: np.ndarray
    """``C×H×W`` in :attr:`Mosaic.dtype`."""
    valid: np.ndarray | None
    """``H×W`` bool mask (True = data), or None when the file has no mask."""
    nodata: float | int | None
    """Value marking nodata, in ``image``'s type; None when the file declares none
    or the window holds none."""
    transform: Affine
    """Of the pixel grid: pixel (0, 0) at ``(minx, maxy)``."""


@dataclass(frozen=True)
class _FileBands:
    """Which bands of one file feed which output channels."""

    path: str
    stamp: tuple[int, int]  # file_stamp() when indexed: a rewritten file gets a new handle
    bidx: tuple[int, ...]  # 1-based band indexes in the file
    channels: slice | list[int]  # output channels they fill (a slice when contiguous)
    nodata: float | None
    use_mask: bool  # no nodata value, but an internal mask or alpha band


@dataclass(frozen=True)
class _Source:
    """One place of the mosaic: a file, or single-grid files stacked as bands."""

    paths: tuple[str, ...]
    crs: CRS
    transform: Affine
    width: int
    height: int
    bounds: Bounds  # in the mosaic CRS
    reads: tuple[_FileBands, ...]


def masked_by_alpha(path: str) -> int | None:
    """The 1-based band of ``path`` that GDAL calls alpha, if it holds a mask: no more than two
    values (0 and opaque) in 4 windows of 64 px (a band of data holds many in any of them).

    rasterio writes a 4-band byte file as RGB plus alpha unless told otherwise, so an RGB +
    near-infrared stack often has its near infrared labelled alpha: that band is data.
    """
    return _masked_by_alpha(path, file_stamp(path))


@functools.lru_cache(maxsize=4096)
def _masked_by_alpha(path: str, stamp: tuple[int, int]) -> int | None:
    """:func:`masked_by_alpha` of the file as it is at ``stamp`` (a file rewritten is looked at again)."""
    alpha = [i for i, kind in enumerate(raster_header(path, stamp).colorinterp, 1) if kind == ColorInterp.alpha]
    if len(alpha) != 1:
        return None
    src = open_raster(path, stamp)
    rng = np.random.default_rng(0)
    width, height = min(64, src.width), min(64, src.height)
    values: set[float] = set()
    for _ in range(4):
        col, row = rng.integers(0, src.width - width + 1), rng.integers(0, src.height - height + 1)
        values.update(np.unique(src.read(alpha[0], window=Window(col, row, width, height))).tolist())
        if len(values) > 2:
            return None
    return alpha[0]


def places_of(files: Sequence[str]) -> list[list[str]]:
    """The places of a mosaic's files: single-band files of one grid (same CRS, transform
    and size) together, one place per acquisition their names tell apart (see
    :func:`acquisitions`), every other file a place of its own.

    Returns:
        the files of each place in path order, the places in the order of their first files.

    Raises:
        GeossclError: naming the file, if one has no CRS or a rotated geotransform.
    """
    groups: dict[tuple, list[str]] = {}
    start = time.monotonic()
    report_at = start + HEADERS_QUIET_S
    for done, path in enumerate(files):
        if done and time.monotonic() >= report_at:
            # A survey of 100,000 tiles takes minutes to index: say so, where the bars of the work
            # that follows are not up yet (and lines reach QGIS's log, where bars do not).
            left = (time.monotonic() - start) / done * (len(files) - done)
            log.info(f"{files_label(files)}: {done:,} of {len(files):,} file headers read, "
                     f"about {_duration(left)} left")
            report_at = time.monotonic() + HEADERS_EVERY_S
        src = raster_header(path)
        if src.crs is None:
            raise GeossclError(f"{path}: raster has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:XXXX)")
        if src.transform.b != 0 or src.transform.d != 0:
            raise GeossclError(f"{path}: rotated or sheared geotransforms are not supported; warp the file first")
        key = _grid(src)
        if src.count > 1:
            # A file of all its bands on the grid of another is another date of that
            # place, not more bands: stacking two 8-band dates would make one of 16.
            key = (*key, path)
        groups.setdefault(key, []).append(path)
    return [part for group in groups.values() for part in acquisitions(group)]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _grid(src: RasterHeader) -> tuple:
    return src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height


class Mosaic(MapGrid, RasterDataset):
    """GeoTIFFs of one or many files, CRSs and resolutions, read as one image.

    A TorchGeo :class:`~torchgeo.datasets.RasterDataset`: it composes with ``&``,
    ``|``, TorchGeo samplers and :func:`~torchgeo.datasets.stack_samples`, and is
    indexed by ``mosaic[xmin:xmax:xres, ymin:ymax:yres]`` in map units of
    :attr:`crs`.

    Single-band files that share one grid (same CRS, transform and size) are stacked
    as bands, so per-band products (``B1.tif``, ``B2.tif``, …) form one image: in
    band-number order where every name gives its band (``B2`` before ``B10``),
    otherwise in path order; where their names tell acquisitions apart (``X_B1.tif``, ``X_B2.tif``,
    ``Y_B1.tif``, ``Y_B2.tif``: see :func:`acquisitions`), each acquisition is stacked
    on its own, a place of its own (:func:`places_of`). Every other file is a place of
    its own: files on different grids lie side by side, and files of several bands on
    one grid (acquisitions of one tile on several dates) overlap. Every place must have
    the same number of bands, but for an alpha band ending some (RGBA tiles among RGB
    ones). Files in other CRSs are warped on the fly.

    Nodata is known per file (its nodata value, or its internal mask or alpha band)
    and returned as NaN in the float32 image: ``torch.isnan(image)`` is the mask.
    Where files overlap, the first file in path order wins, pixel by pixel, unless a
    read names the file to take first (``first``: how every date of a place is
    pretrained on).

    Reads at the native grid of a file in the mosaic CRS are plain window reads
    through a handle kept open per process (see :mod:`geosscl.data.files`), which is
    what makes :class:`~geosscl.data.PairDataset` fast; anything else is warped with
    GDAL.

    .. versionadded:: 0.1
    """

    filename_glob = "*"

    @headers_kept()
    def __init__(
        self,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        bands: Sequence[int] | None = None,
        crs: Any = None,
        res: float | tuple[float, float] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        resampling: Resampling = Resampling.bilinear,
        nodata: float | None = None,
    ) -> None:
        """Index the files of a mosaic.

        Args:
            paths: files, directories (searched recursively) and glob patterns.
            bands: 1-based indexes of the bands to read, in output order, counted
                over the stacked bands of one place (default: all but alpha bands,
                which mask their file's pixels instead).
            crs: CRS of the mosaic, anything :meth:`rasterio.crs.CRS.from_user_input`
                takes (default: the first file's).
            res: resolution in units of ``crs``, ``xres`` or ``(xres, yres)``
                (default: the first file's, in ``crs``).
            transforms: function applied to each sample dict.
            resampling: resampling used when a read is warped or rescaled.
            nodata: value that means "no data" in every band of every file, over what
                the files declare (their value, mask or alpha): for imagery whose fill
                (a black collar, zeros outside the scene) is not declared.

        Raises:
            GeossclError: naming the file or parameter, if a path finds nothing, a
                file is not a raster or has no CRS, places disagree in band count, or
                a band index is out of range.
        """
        files = find_rasters(paths)
        self.paths = files
        self.transforms = transforms
        self.cache = True
        self._resampling = resampling
        self.nodata = None if nodata is None else float(nodata)
        """The nodata value given over the files' own (None: each file's)."""

        places = places_of(files)

        first = raster_header(files[0])
        try:
            self._crs = CRS.from_user_input(crs) if crs is not None else first.crs
        except rasterio.errors.CRSError as exc:
            raise GeossclError(f"crs: {crs!r} is not a CRS ({exc})") from None

        # Band layout of each place: the count of bands must agree everywhere, but for an alpha band
        # ending some places: RGBA tiles among RGB ones (gdalwarp -dstalpha, drone orthomosaics) are
        # the same bands, the alpha masking its tile. The bands of such a mosaic are those all have.
        layouts = [[(p, raster_header(p).count) for p in group] for group in places]
        counts = [sum(c for _, c in layout) for layout in layouts]
        ends_in_alpha = [False] * len(layouts)
        if len(set(counts)) > 1:
            ends_in_alpha = [masked_by_alpha(layout[-1][0]) == layout[-1][1] for layout in layouts]
        data_counts = [c - a for c, a in zip(counts, ends_in_alpha)]
        n_all = counts[0] if len(set(counts)) == 1 else data_counts[0]
        grids = [_grid(raster_header(group[0])) for group in places]
        alpha_note = " and an alpha band"
        for layout, count, alpha, grid in zip(layouts, data_counts, ends_in_alpha, grids):
            if count != data_counts[0]:
                # Files of one grid that did not stack: say why (an RGB file and a NIR file, say).
                why = (" (single-band files on one grid stack as bands, one stack per scene their names tell apart; "
                       "a file of several bands is a place of its own)"
                       if grid == grids[0] else "")
                raise GeossclError(
                    f"{layout[0][0]}: has {count} band(s){alpha_note * alpha} where {layouts[0][0][0]} has "
                    f"{data_counts[0]}{alpha_note * ends_in_alpha[0]}; every place of a mosaic needs the same bands{why}"
                )
        #: The alpha band some places have beyond the others' (None: every place has the same bands).
        self._alpha_of = next((layout[-1][0] for layout, a in zip(layouts, ends_in_alpha) if a), None)
        named = [place_band_names([(p, c, raster_header(p).descriptions) for p, c in layout])[:n_all] for layout in layouts]
        check_places([(layout[0][0], names) for layout, names in zip(layouts, named)])
        self.all_band_names: list[str | None] = named[0]
        """Name of every band of a place (:func:`~geosscl.data.bandnames.place_band_names`; None: unnamed)."""
        if bands is None:
            # An alpha band is its file's mask (drone orthomosaics are RGBA), not a band of the image:
            # read as one, it would be an input channel, and RGB files of the same ground would not fit.
            alpha = [b == masked_by_alpha(p) for p, c in layouts[0] for b in range(1, c + 1)]
            bands = [b for b in range(1, n_all + 1) if not alpha[b - 1]] or list(range(1, n_all + 1))
        bands = [int(b) for b in bands]
        if not bands:
            raise GeossclError("bands: empty band list")
        for b in bands:
            if b == n_all + 1 and self._alpha_of is not None:
                raise GeossclError(f"bands: band {b} is the alpha band of {self._alpha_of}, which other files of the "
                                   f"mosaic lack; the mosaic has {n_all} band(s), numbered 1..{n_all}")
            if not 1 <= b <= n_all:
                raise GeossclError(f"bands: band {b} is out of range; the mosaic has {n_all} band(s), numbered 1..{n_all}")
        self.band_indexes = bands
        self.bands = [str(b) for b in bands]

        self._sources = [self._make_source(layout) for layout in layouts]
        band_dtypes = {
            (part.path, part.bidx): {np.dtype(raster_header(part.path).dtypes[b - 1]) for b in part.bidx}
            for source in self._sources for part in source.reads
        }
        self._dtype = np.result_type(*set().union(*band_dtypes.values()))
        # Reads that need no conversion: asking rasterio for the type a file already
        # has still costs a copy (a third of a small window's read time).
        self._as_stored = {key for key, kinds in band_dtypes.items() if kinds == {self._dtype}}
        self._nodata_values = {
            (part.path, part.bidx): self._nodata_value(part.nodata) for source in self._sources for part in source.reads
        }
        # Reads of every band in order: rasterio reads those faster without an index list.
        self._all_bands = {key for key in band_dtypes if key[1] == tuple(range(1, raster_header(key[0]).count + 1))}

        if res is None:
            res = self._native_res(self._sources[0])
        if isinstance(res, int | float):
            res = (float(res), float(res))
        if not (res[0] > 0 and res[1] > 0):
            raise GeossclError(f"res: resolution must be positive, got {res}")
        self._res = (float(res[0]), float(res[1]))
        self._build_index()

    # -- construction ---------------------------------------------------------

    def _make_source(self, layout: list[tuple[str, int]]) -> _Source:
        """Map the selected bands of one place onto its files."""
        offsets = np.cumsum([0] + [count for _, count in layout])
        reads = []
        for i, (path, _) in enumerate(layout):
            pairs = [
                (b - offsets[i], ch)
                for ch, b in enumerate(self.band_indexes)
                if offsets[i] < b <= offsets[i + 1]
            ]
            if not pairs:
                continue
            src = raster_header(path)
            # Bands of one file may declare different nodata values (a VRT of
            # per-band files, say): bands that share one are read together.
            groups: dict[tuple[float | None, bool], list[tuple[int, int]]] = {}
            for b, ch in pairs:
                nodata = self.nodata if self.nodata is not None else src.nodatavals[int(b) - 1]
                flags = src.mask_flag_enums[int(b) - 1]
                use_mask = nodata is None and (MaskFlags.per_dataset in flags or MaskFlags.alpha in flags)
                if MaskFlags.alpha in flags and masked_by_alpha(path) is None:
                    use_mask = False  # the "alpha" band holds data: no mask at all
                groups.setdefault((None if nodata is None else float(nodata), use_mask), []).append((int(b), ch))
            for (nodata, use_mask), members in groups.items():
                bidx = tuple(b for b, _ in members)
                chans = [ch for _, ch in members]
                contiguous = chans == list(range(chans[0], chans[0] + len(chans)))
                reads.append(_FileBands(path, file_stamp(path), bidx,
                                        slice(chans[0], chans[-1] + 1) if contiguous else chans, nodata, use_mask))
        src = raster_header(layout[0][0])
        bounds = tuple(src.bounds)
        if src.crs != self._crs:
            bounds = transform_bounds(src.crs, self._crs, *bounds, densify_pts=21)
        return _Source(
            paths=tuple(p for p, _ in layout),
            crs=src.crs,
            transform=src.transform,
            width=src.width,
            height=src.height,
            bounds=tuple(float(v) for v in bounds),
            reads=tuple(reads),
        )

    def _native_res(self, source: _Source) -> tuple[float, float]:
        if source.crs == self._crs:
            return abs(source.transform.a), abs(source.transform.e)
        src = raster_header(source.paths[0])
        transform, _, _ = calculate_default_transform(src.crs, self._crs, src.width, src.height, *src.bounds)
        return abs(transform.a), abs(transform.e)

    def _build_index(self) -> None:
        self._bounds = np.array([s.bounds for s in self._sources], dtype=np.float64).reshape(-1, 4)
        self._place_of = {path: i for i, s in enumerate(self._sources) for path in s.paths}
        always = pd.IntervalIndex.from_tuples(
            [(pd.Timestamp.min, pd.Timestamp.max)] * len(self._sources), closed="both", name="datetime"
        )
        self.index = GeoDataFrame(
            {"filepath": [s.paths[0] for s in self._sources]},
            index=always,
            geometry=[shapely.box(*s.bounds) for s in self._sources],
            crs=self._crs,
        )

    # -- TorchGeo contract ----------------------------------------------------

    @headers_kept()
    def _reproject(self) -> None:
        self._sources = [self._make_source([(p, raster_header(p).count) for p in s.paths]) for s in self._sources]
        self._build_index()

    @property
    def bounds(self) -> tuple[slice, slice, slice]:
        """``(x, y, t)`` slices of the mosaic's extent, steps = :attr:`res`.

        TorchGeo computes this from the GeoDataFrame on every query (about 0.2 ms);
        a mosaic has no time axis, so it is kept as numbers.
        """
        xmin, ymin = self._bounds[:, 0].min(), self._bounds[:, 1].min()
        xmax, ymax = self._bounds[:, 2].max(), self._bounds[:, 3].max()
        return (
            slice(float(xmin), float(xmax), self.res[0]),
            slice(float(ymin), float(ymax), self.res[1]),
            slice(pd.Timestamp.min, pd.Timestamp.max, 1),
        )

    @property
    def resampling(self) -> Resampling:
        """Resampling used for warped or rescaled reads."""
        return self._resampling

    @property
    def dtype(self) -> np.dtype:
        """The data type that holds every selected band of every file (numpy's promotion)."""
        return self._dtype

    @property
    def num_bands(self) -> int:
        """Number of bands (channels) of every image read."""
        return len(self.band_indexes)

    @property
    def band_names(self) -> list[str | None]:
        """Name of each band read, in order (from file names or band descriptions; None: unnamed)."""
        return [self.all_band_names[b - 1] for b in self.band_indexes]

    @property
    def known_band_names(self) -> list[str | None] | None:
        """:attr:`band_names`, or None where no band read is named (what a model file keeps)."""
        return self.band_names if any(n is not None for n in self.band_names) else None

    @property
    def nodata_values(self) -> set[float]:
        """The nodata values its files declare (or :attr:`nodata`, given over them)."""
        return {r.nodata for s in self._sources for r in s.reads if r.nodata is not None}

    @property
    def source(self) -> str:
        """The mosaic in messages: its first file, and how many more."""
        return files_label(self.paths)

    @property
    def files(self) -> list[str]:
        """All files of the mosaic, sorted."""
        return list(self.paths)

    @property
    def gsd(self) -> float | None:
        """Mean pixel side in metres at :attr:`res` (None for a CRS without linear units)."""
        x, y, _ = self.bounds
        return ground_sampling_distance(self.crs, self.res, (x.start, y.start, x.stop, y.stop))

    def __getitem__(self, query: GeoSlice) -> dict[str, Any]:
        """Read ``mosaic[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax]``.

        Returns:
            ``{"image": float32 tensor C×H×W (NaN = nodata), "crs": CRS,
            "bounds": query}`` with ``H = (ymax - ymin) / yres`` and
            ``W = (xmax - xmin) / xres`` (rounded), pixel (0, 0) at (xmin, ymax).

        Raises:
            IndexError: if the query does not intersect the mosaic.
        """
        sample = self._sample(query)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def sample(self, query: GeoSlice, first: str | None = None) -> dict[str, Any]:
        """``mosaic[query]`` as one date shows it: read with file ``first`` first (see :meth:`read`).

        Raises:
            IndexError: if the query does not intersect the mosaic.
            GeossclError: if ``first`` is not a file of the mosaic.
        """
        sample = self._sample(query, first)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _sample(self, query: GeoSlice, first: str | None = None) -> dict[str, Any]:
        x, y, _ = self._disambiguate_slice(query)
        bounds = (float(x.start), float(y.start), float(x.stop), float(y.stop))
        if not self._intersecting(bounds).size:
            raise IndexError(f"query: {query} not found in index with bounds: {self.bounds}")
        image, _, _ = self.read(bounds, (float(x.step), float(y.step)), first=first)
        return {"image": torch.from_numpy(image), "crs": self.crs, "bounds": query}

    def __str__(self) -> str:
        nodata = sorted({str(r.nodata) if r.nodata is not None else ("mask" if r.use_mask else "none") for s in self._sources for r in s.reads})
        xmin, ymin, xmax, ymax = self.index.total_bounds
        return (
            f"Mosaic of {len(self.paths)} file(s) in {len(self._sources)} place(s)\n"
            f"    crs: {self.crs.to_string()}\n"
            f"    res: {self.res[0]:g} x {self.res[1]:g}\n"
            f"    bounds: ({xmin:.6g}, {ymin:.6g}, {xmax:.6g}, {ymax:.6g})\n"
            f"    bands: {','.join(map(str, self.band_indexes))}\n"
            f"    nodata: {', '.join(nodata)}"
        )

    # -- reading --------------------------------------------------------------

    def _intersecting(self, bounds: Bounds) -> np.ndarray:
        if len(self._sources) == 1:  # numpy's fixed cost is most of a pair's budget here
            b = self._sources[0].bounds
            hit = b[0] < bounds[2] and b[2] > bounds[0] and b[1] < bounds[3] and b[3] > bounds[1]
            return np.arange(1 if hit else 0)
        b = self._bounds
        hit = (b[:, 0] < bounds[2]) & (b[:, 2] > bounds[0]) & (b[:, 1] < bounds[3]) & (b[:, 3] > bounds[1])
        return np.flatnonzero(hit)

    @property
    def has_dates(self) -> bool:
        """Whether two places share ground (an area, not only an edge): dates of one tile."""
        boxes = self.index.geometry.values
        first, second = shapely.STRtree(boxes).query(boxes, predicate="intersects")
        pairs = first < second
        return bool(np.any(shapely.area(shapely.intersection(boxes[first[pairs]], boxes[second[pairs]])) > 0))

    def require_dates(self, option: str) -> None:
        """Refuse ``option``, a setting that needs several dates of a place, unless :attr:`has_dates`.

        Raises:
            GeossclError: naming ``option``, where no two places share ground.
        """
        if not self.has_dates:
            raise GeossclError(f"{option}: no two files of the imagery cover the same ground; it needs several "
                               "dates (or other acquisitions) of a place")

    @property
    def places(self) -> list[tuple[str, ...]]:
        """The files of each place (one file, or single-band files stacked as its bands), in path order."""
        return [source.paths for source in self._sources]

    def places_at(self, bounds: Bounds) -> list[str]:
        """One file of each place holding part of ``bounds`` (the dates of a tile there), in path order:
        what :meth:`read`'s ``first`` takes to read each of them."""
        files = self.index["filepath"].to_numpy()
        return [str(files[i]) for i in self._intersecting(bounds)]

    def footprint(self) -> GeoSeries:
        """The area the files cover (the union of their bounds), in :attr:`crs`."""
        return GeoSeries([shapely.union_all(self.index.geometry.values)], crs=self._crs)

    @property
    def grid_origin(self) -> tuple[float, float]:
        """``(x, y)`` of a pixel corner of the mosaic's native grid, in map units.

        The grid has spacing :attr:`res`; it is the first file's grid when that file
        is in the mosaic CRS at :attr:`res`, otherwise the one whose corner is the
        mosaic's top-left. Reads on it need no resampling wherever files share it.
        """
        rx, ry = self.res
        first = self._sources[0]
        if first.crs == self._crs and math.isclose(abs(first.transform.a), rx) and math.isclose(abs(first.transform.e), ry):
            return first.transform.c, first.transform.f
        return float(self._bounds[:, 0].min()), float(self._bounds[:, 3].max())

    def snap(self, bounds: Bounds) -> Bounds:
        """Grow ``bounds`` outwards to whole pixels of the grid of :attr:`grid_origin`."""
        (rx, ry), (x0, y0) = self.res, self.grid_origin
        return snap_down(bounds[0], x0, rx), snap_down(bounds[1], y0, ry), snap_up(bounds[2], x0, rx), snap_up(bounds[3], y0, ry)

    def read(self, bounds: Bounds, res: tuple[float, float] | None = None,
             first: str | None = None) -> tuple[np.ndarray, Affine, bool]:
        """Read the grid of pixels covering ``bounds`` at ``res``.

        Args:
            bounds: ``(minx, miny, maxx, maxy)`` in the mosaic CRS.
            res: ``(xres, yres)`` in map units (default: :attr:`res`).
            first: a file of the mosaic. Where its place covers ``bounds``, the read
                is that place's alone, nodata and all: a view is one acquisition, not a
                patchwork of dates. Otherwise it wins where files overlap and the
                others fill its gaps in path order (default: path order throughout).

        Returns:
            ``(image, transform, complete)``: float32 array ``C×H×W`` with NaN where
            no file has valid data; the affine transform of its pixel grid (pixel
            (0, 0) at ``(minx, maxy)``); whether no pixel is NaN.
        """
        rx, ry = res if res is not None else self.res
        minx, miny, maxx, maxy = bounds
        width = max(1, round((maxx - minx) / rx))
        height = max(1, round((maxy - miny) / ry))
        transform = Affine(rx, 0.0, minx, 0.0, -ry, maxy)
        hits = self._first(self._intersecting(bounds), first, bounds)
        origins = [self._aligned_window(self._sources[i], transform) for i in hits]
        if len(hits) == 1 and origins[0] is not None:
            source = self._sources[hits[0]]
            if len(source.reads) == 1 and self._covers(source, bounds):
                # The common case: one file covers the query on its own grid. GDAL
                # converts the type straight into the output, no temporary array.
                part = source.reads[0]
                src = open_raster(part.path, part.stamp)
                window = Window(origins[0][0], origins[0][1], width, height)
                out = src.read(part.bidx, window=window, out=np.empty((self.num_bands, height, width), np.float32))
                return out, transform, not self._mask_nodata(part, src, window, out)
        out = np.full((self.num_bands, height, width), np.nan, dtype=np.float32)
        for i, origin in zip(hits, origins):
            for part in self._sources[i].reads:
                if origin is not None:
                    self._read_window(part, origin, out)
                else:
                    self._read_warped(self._sources[i], part, transform, out)
        return out, transform, not np.isnan(out).any()

    def read_raw(self, bounds: Bounds, first: str | None = None) -> RawWindow:
        """Read the pixels covering ``bounds`` at :attr:`res` as stored, nodata as a value or a mask.

        The cheapest read there is: where one file covers ``bounds`` on its own grid, a
        single window read with no type conversion and no pass over the pixels; its
        nodata is then the file's value (or its mask band). It is what
        :class:`~geosscl.data.PairDataset` reads, leaving every per-pixel step
        (conversion to float, the nodata test, resampling) to the training device.
        Other reads (warped, several files) come back with a mask.

        Args:
            bounds: ``(minx, miny, maxx, maxy)`` in the mosaic CRS.
            first: a file of the mosaic to read first, as in :meth:`read`.

        Returns:
            a :class:`RawWindow`.
        """
        rx, ry = self.res
        minx, miny, maxx, maxy = bounds
        width, height = max(1, round((maxx - minx) / rx)), max(1, round((maxy - miny) / ry))
        transform = Affine(rx, 0.0, minx, 0.0, -ry, maxy)
        hits = self._first(self._intersecting(bounds), first, bounds)
        if len(hits) == 1:
            source = self._sources[hits[0]]
            origin = self._aligned_window(source, transform)
            if origin is not None and len(source.reads) == 1 and self._covers(source, bounds):
                part = source.reads[0]
                src = open_raster(part.path, part.stamp)
                window = Window(origin[0], origin[1], width, height)
                key = (part.path, part.bidx)
                data = src.read(None if key in self._all_bands else part.bidx, window=window,
                                out_dtype=None if key in self._as_stored else self._dtype)
                if part.use_mask:
                    return RawWindow(data, src.read_masks(part.bidx[0], window=window) != 0, None, transform)
                return self._flag_nodata(data, self._nodata_values[key], transform)
        image, transform, _ = self.read(bounds, first=first)
        valid = np.isfinite(image).all(axis=0)
        if np.issubdtype(self._dtype, np.integer):
            info = np.iinfo(self._dtype)
            image = np.clip(np.rint(image), info.min, info.max)
        return RawWindow(np.where(valid, image, 0).astype(self._dtype), valid, None, transform)

    @staticmethod
    def _flag_nodata(data: np.ndarray, nodata: float | int | None, transform: Affine) -> RawWindow:
        """``data`` with its nodata value, if the window holds it; non-finite floats masked."""
        lo, hi = data.min(), data.max()  # two reductions: a fraction of a per-pixel mask's cost
        finite = data.dtype.kind != "f" or bool(np.isfinite(lo) and np.isfinite(hi))
        if nodata is not None and finite and not lo <= nodata <= hi:
            nodata = None  # most windows hold none: the device then skips the test
        if not finite:
            valid = np.isfinite(data).all(axis=0)
            data[:, ~valid] = 0
            return RawWindow(data, valid, nodata, transform)
        return RawWindow(data, None, nodata, transform)

    def _nodata_value(self, nodata: float | None) -> float | int | None:
        """``nodata`` as a value of :attr:`dtype`; None if it has none (or none can occur)."""
        if nodata is None or math.isnan(nodata):
            return None  # NaN nodata is found by a finiteness test, which float data always gets
        value = np.asarray(nodata).astype(self._dtype)
        return value.item() if value == nodata else None

    def _first(self, hits: np.ndarray, first: str | None, bounds: Bounds) -> np.ndarray:
        """The places to read ``bounds`` from, in order, when file ``first`` goes first."""
        if first is None:
            return hits
        place = self._place_of.get(first)
        if place is None:
            raise GeossclError(f"{first}: not a file of this mosaic")
        if len(hits) < 2:
            return hits
        if place in hits and self._covers(self._sources[place], bounds):
            return np.array([place])
        return np.concatenate([hits[hits == place], hits[hits != place]])

    @staticmethod
    def _covers(source: _Source, bounds: Bounds) -> bool:
        b = source.bounds
        return b[0] <= bounds[0] and b[1] <= bounds[1] and b[2] >= bounds[2] and b[3] >= bounds[3]

    def _aligned_window(self, source: _Source, transform: Affine) -> tuple[int, int] | None:
        """``(col, row)`` of ``transform``'s origin in ``source``, if both grids coincide."""
        t = source.transform
        if source.crs != self._crs or t.e >= 0:
            return None
        if not (math.isclose(t.a, transform.a, rel_tol=1e-9) and math.isclose(t.e, transform.e, rel_tol=1e-9)):
            return None
        col = (transform.c - t.c) / t.a
        row = (transform.f - t.f) / t.e
        if abs(col - round(col)) > ALIGN_TOL or abs(row - round(row)) > ALIGN_TOL:
            return None
        return round(col), round(row)

    def _read_window(self, part: _FileBands, origin: tuple[int, int], out: np.ndarray) -> None:
        """Read ``part`` into ``out``, whose pixel (0, 0) is pixel ``origin`` (col, row) of the file."""
        src = open_raster(part.path, part.stamp)
        _, height, width = out.shape
        col, row = origin
        c0, r0 = max(col, 0), max(row, 0)
        c1, r1 = min(col + width, src.width), min(row + height, src.height)
        if c1 <= c0 or r1 <= r0:
            return
        window = Window(c0, r0, c1 - c0, r1 - r0)
        data = src.read(part.bidx, window=window, out_dtype=np.float32)
        self._mask_nodata(part, src, window, data)
        self._merge(out, part.channels, slice(r0 - row, r1 - row), slice(c0 - col, c1 - col), data)

    @staticmethod
    def _mask_nodata(part: _FileBands, src: rasterio.DatasetReader, window: Window, data: np.ndarray) -> bool:
        """Set the nodata pixels of ``data`` (read from ``window``) to NaN; return whether any."""
        if part.nodata is not None and not math.isnan(part.nodata):
            hit = data == np.float32(part.nodata)
        elif part.use_mask:
            hit = np.broadcast_to(src.read_masks(part.bidx[0], window=window) == 0, data.shape)
        else:
            return bool(np.isnan(data).any())  # NaN nodata, or NaN in a float file without nodata
        if not hit.any():
            return False
        data[hit] = np.nan
        return True

    def _read_warped(self, source: _Source, part: _FileBands, transform: Affine, out: np.ndarray) -> None:
        src = open_raster(part.path, part.stamp)
        rx, ry = self.res
        x0, y0 = self.grid_origin
        col, row = (transform.c - x0) / rx, (y0 - transform.f) / ry
        on_grid = (math.isclose(transform.a, rx, rel_tol=1e-9) and math.isclose(-transform.e, ry, rel_tol=1e-9)
                   and abs(col - round(col)) < ALIGN_TOL and abs(row - round(row)) < ALIGN_TOL)
        if on_grid and not part.use_mask:
            # On the mosaic's grid (every pair, tile and label read): a window of the file
            # warped once onto that grid. Files with a mask band keep the general path.
            left, bottom, right, top = self.snap(source.bounds)
            width, height = round((right - left) / rx), round((top - bottom) / ry)
            integer = np.issubdtype(np.dtype(src.dtypes[part.bidx[0] - 1]), np.integer)
            empty = _NO_DATA_INTEGER if integer else float("nan")  # no integer file holds it
            vrt = warped_raster(part.path, part.stamp, self._crs, Affine(rx, 0.0, left, 0.0, -ry, top), width, height,
                                self._resampling, part.nodata, empty)
            _, out_h, out_w = out.shape
            col, row = round(col) - round((left - x0) / rx), round(row) - round((y0 - top) / ry)  # in the VRT
            c0, r0, c1, r1 = max(col, 0), max(row, 0), min(col + out_w, width), min(row + out_h, height)
            if c1 <= c0 or r1 <= r0:
                return
            data = vrt.read(part.bidx, window=Window(c0, r0, c1 - c0, r1 - r0))
            if integer:
                data[data == np.float32(empty)] = np.nan
            self._merge(out, part.channels, slice(r0 - row, r1 - row), slice(c0 - col, c1 - col), data)
            return
        _, height, width = out.shape
        data = np.full((len(part.bidx), height, width), np.nan, dtype=np.float32)
        reproject(
            rasterio.band(src, list(part.bidx)),
            data,
            src_nodata=part.nodata,
            dst_transform=transform,
            dst_crs=self._crs,
            dst_nodata=np.nan,
            resampling=self._resampling,
        )
        self._merge(out, part.channels, slice(None), slice(None), data)

    @staticmethod
    def _merge(out: np.ndarray, channels: slice | list[int], ys: slice, xs: slice, data: np.ndarray) -> None:
        """First file wins: fill only the pixels still NaN."""
        held = out[channels, ys, xs]
        hole = np.isnan(held)
        if hole.all():
            out[channels, ys, xs] = data
        elif hole.any():
            out[channels, ys, xs] = np.where(hole, data, held)
