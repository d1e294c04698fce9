"""Finding raster files and keeping them open.

A mosaic is read thousands of times per second by DataLoader workers, and opening a
GeoTIFF costs far more than reading a 128 px window of it: :func:`open_raster` keeps
one handle per file per process. Handles are never shared across ``fork`` (GDAL file
offsets would be shared too) nor across threads (a GDAL handle is not thread-safe), so
each thread of each process has its own cache.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import rasterio
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.env import get_gdal_config
from rasterio.io import DatasetReader
from rasterio.transform import array_bounds
from rasterio.vrt import WarpedVRT

from ..errors import GeossclError

#: File name patterns searched for inside a directory.
RASTER_SUFFIXES = (".tif", ".tiff", ".gtif", ".vrt", ".jp2", ".img")

log = logging.getLogger("geosscl")

_MAX_OPEN = 256
# Each warped view holds a handle of its own, on top of open_raster's: kept fewer, so that
# the two caches of a thread stay well inside a process's file-descriptor limit.
_MAX_WARPED = 64
_local = threading.local()


def find_rasters(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Resolve files, directories and glob patterns to a sorted list of raster paths.

    Args:
        paths: a file, a directory (searched recursively for ``*.tif``, ``*.tiff``,
            ``*.gtif``, ``*.vrt``, ``*.jp2``, ``*.img``), a glob pattern, or a list of
            any of these.

    Returns:
        Absolute paths, sorted, without duplicates, and without the VRTs whose sources are all
        among them (logged).

    Raises:
        GeossclError: if a path does not exist or nothing is found.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: set[str] = set()
    for item in paths:
        text = os.fspath(item)
        if os.path.isdir(text):
            hits = [
                p
                for p in glob.iglob(os.path.join(text, "**", "*"), recursive=True)
                if p.lower().endswith(RASTER_SUFFIXES) and os.path.isfile(p)
            ]
            if not hits:
                raise GeossclError(f"{text}: directory holds no raster files ({', '.join(RASTER_SUFFIXES)})")
            found.update(hits)
        elif os.path.isfile(text) or text.startswith("/vsi"):
            found.add(text)
        elif glob.has_magic(text):
            hits = [p for p in glob.glob(text, recursive=True) if os.path.isfile(p)]
            if not hits:
                raise GeossclError(f"{text}: pattern matches no files")
            found.update(hits)
        else:
            raise GeossclError(f"{text}: no such file or directory")
    if not found:
        raise GeossclError("no imagery given")
    return _without_vrts_of_others(sorted(str(Path(p).absolute()) if not p.startswith("/vsi") else p for p in found))


def _without_vrts_of_others(paths: list[str]) -> list[str]:
    """``paths`` less the VRTs that mosaic or stack others of them (``gdalbuildvrt`` writes its VRT beside the
    tiles, so a folder holds both): read with their sources, each pixel would be read twice, the VRT taken for
    another date of every tile. A VRT of only some of its sources among ``paths`` is kept, with a warning."""
    given = set(paths)
    kept = []
    for path in paths:
        if path.lower().endswith(".vrt"):
            sources = {os.path.abspath(f) for f in open_raster(path).files[1:]} - {path}
            among = sources & given
            if among and among == sources:
                log.info(f"{path}: left out, a VRT of {len(among):,} of the other files given, which are read instead")
                continue
            if among:
                log.warning(f"{path}: {len(among):,} of its {len(sources):,} source files are given too, and will be "
                            "read twice (once through the VRT); give the VRT or its files")
        kept.append(path)
    return kept


def file_stamp(path: str) -> tuple[int, int]:
    """``(mtime_ns, size)`` of a local file, ``(0, 0)`` for GDAL virtual paths."""
    try:
        stat = os.stat(path)
    except OSError:
        return 0, 0
    return stat.st_mtime_ns, stat.st_size


def _open_config() -> dict[str, str]:
    """GDAL options of :func:`open_raster`: unless the user set it (environment, ``rasterio.Env``, GDAL's
    config), GDAL_DISABLE_READDIR_ON_OPEN=TRUE. By default GDAL lists a file's directory at every open, to find
    its sidecars (``.aux.xml``, ``.ovr``, ``.msk``, world files); in a folder of thousands of tiles, or on a
    network file system, that listing costs more than the open. With TRUE it asks for each sidecar by name
    instead, and still finds them all (EMPTY_DIR would not)."""
    if get_gdal_config("GDAL_DISABLE_READDIR_ON_OPEN") is not None:
        return {}
    return {"GDAL_DISABLE_READDIR_ON_OPEN": "TRUE"}


def open_raster(path: str, stamp: tuple[int, int] | None = None) -> DatasetReader:
    """Return an open, cached rasterio handle for ``path`` in this thread.

    Args:
        path: the raster.
        stamp: :func:`file_stamp` of the file when its reader was set up; a file
            rewritten since gets a fresh handle instead of a stale one (default:
            stamp it now).

    Raises:
        GeossclError: if GDAL cannot read the file as a raster.
    """
    if getattr(_local, "pid", None) != os.getpid():
        # New thread, or a forked child whose inherited handles share file offsets
        # with the parent: start an empty cache without touching those handles.
        _local.pid = os.getpid()
        _local.handles = OrderedDict()
    _handles: OrderedDict[tuple, DatasetReader] = _local.handles
    key = (path, stamp if stamp is not None else file_stamp(path))
    src = _handles.get(key)
    if src is not None:
        _handles.move_to_end(key)
        return src
    try:
        with rasterio.Env(**_open_config()):
            src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise GeossclError(f"{path}: not a readable raster ({_first_line(exc)})") from None
    _handles[key] = src
    if len(_handles) > _MAX_OPEN:
        _, old = _handles.popitem(last=False)
        old.close()
    return src


@dataclass(frozen=True)
class RasterHeader:
    """What a raster's header says, kept after its handle is closed: the attributes of
    rasterio's ``DatasetReader`` of the same names that indexing a mosaic reads."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    nodatavals: tuple[float | None, ...]
    descriptions: tuple[str | None, ...]
    mask_flag_enums: tuple[tuple[MaskFlags, ...], ...]
    colorinterp: tuple[ColorInterp, ...]

    @property
    def bounds(self) -> BoundingBox:
        """``(left, bottom, right, top)`` in :attr:`crs`, as rasterio gives them."""
        return BoundingBox(*array_bounds(self.height, self.width, self.transform))


def raster_header(path: str, stamp: tuple[int, int] | None = None) -> RasterHeader:
    """The header of ``path`` (as it is at ``stamp``: see :func:`open_raster`), read once per process.

    Indexing a mosaic looks at every file's header several times (grouping the places,
    their bands, names, types and nodata); through :func:`open_raster` alone, a mosaic of
    more files than its cache keeps open (256) opened each file at every look, 7 times in all.

    Raises:
        GeossclError: if GDAL cannot read the file as a raster.
    """
    key = (path, stamp if stamp is not None else file_stamp(path))
    kept = getattr(_local, "headers", None)
    if kept is None:
        return _header(*key)
    header = kept.get(key)
    if header is None:
        header = kept[key] = _header(*key)
    return header


@contextlib.contextmanager
def headers_kept() -> Iterator[None]:
    """While open (or around a function it decorates), every header :func:`raster_header` reads in this thread
    is kept, however many. Indexing looks at all the files' headers in one loop after another: past the
    :data:`HEADERS_CACHED` the process keeps, a cache evicts each header just before its next look (the loops
    go in one order), and every file would be opened at every look again."""
    if getattr(_local, "headers", None) is not None:
        yield
        return
    _local.headers = {}
    try:
        yield
    finally:
        _local.headers = None


#: Headers the process keeps once read (about 1.6 kB each).
HEADERS_CACHED = 1 << 17


@functools.lru_cache(maxsize=HEADERS_CACHED)
def _header(path: str, stamp: tuple[int, int]) -> RasterHeader:
    src = open_raster(path, stamp)
    crs = None if src.crs is None else _crs(src.crs.to_wkt())
    return RasterHeader(crs, src.transform, src.width, src.height, src.count, tuple(src.dtypes), tuple(src.nodatavals),
                        tuple(src.descriptions), tuple(tuple(f) for f in src.mask_flag_enums), tuple(src.colorinterp))


@functools.lru_cache(maxsize=1024)
def _crs(wkt: str) -> CRS:
    # One object per CRS: the tiles of a survey share theirs, and headers of many files then hold little.
    return CRS.from_wkt(wkt)


def warped_raster(path: str, stamp: tuple[int, int], crs: CRS, transform: Affine, width: int, height: int,
                  resampling: Resampling, src_nodata: float | None, nodata: float) -> WarpedVRT:
    """Return a cached GDAL warped view (float32) of ``path`` on a fixed grid, in this thread.

    :func:`rasterio.warp.reproject` of a window sets GDAL's warper up again at every
    call (12-16 ms for a 100 px window of a Landsat band on this machine); a warped
    VRT sets it up once, and a window of it costs what the warp itself costs (about
    0.3 ms). Its values also do not depend on the window read: GDAL's approximate
    transformer is fitted per VRT block, not per request. The VRT has its own dataset
    handle, so :func:`open_raster` closing its handles cannot pull the file from under it.

    Args:
        nodata: value of the VRT where the file has none. NaN suits float files only:
            GDAL then warps an integer file as all nodata (seen with uint8 NAIP).
    """
    if getattr(_local, "vrt_pid", None) != os.getpid():
        _local.vrt_pid = os.getpid()
        _local.vrts = OrderedDict()
    vrts: OrderedDict[tuple, tuple[DatasetReader, WarpedVRT]] = _local.vrts
    key = (path, stamp, crs.to_wkt(), tuple(transform)[:6], width, height, resampling, repr(src_nodata), repr(nodata))  # NaN != NaN
    held = vrts.get(key)
    if held is not None:
        vrts.move_to_end(key)
        return held[1]
    src = rasterio.open(path)
    vrt = WarpedVRT(src, crs=crs, transform=transform, width=width, height=height, resampling=resampling,
                    src_nodata=src_nodata, nodata=nodata, dtype="float32")
    vrts[key] = (src, vrt)
    if len(vrts) > _MAX_WARPED:
        _, (old_src, old_vrt) = vrts.popitem(last=False)
        old_vrt.close()
        old_src.close()
    return vrt


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
