"""Seconds to index a mosaic of many files (``Mosaic(folder)``), against opening each file once, in one process.

A survey or a tiled product is thousands of files. The tiles are cut from the bundled
NAIP scene (4 bands, uint8, 5 m), ``--tile`` px each on a grid of ``--step`` px (they
overlap where step < tile), written to a temporary folder. Peers, each from cold caches
(handles and headers dropped), round by round (the best round of each counts):

* geosscl: ``Mosaic(folder)``, every file's header read once (:func:`geosscl.data.files.raster_header`),
  each file opened with GDAL_DISABLE_READDIR_ON_OPEN=TRUE;
* the same with GDAL's default (FALSE), which lists the folder at every open to find the
  file's sidecars: the longer, the more files the folder holds;
* the indexing before both: every look at a header through the cache of open handles (256 a
  process), which a mosaic of more files than that reopened at every look, folders listed;
* the floor: ``rasterio.open`` of every file once (GDAL's default), and nothing else.

Usage: ``python benchmarks/mosaic_index.py [--tile 32] [--step 20] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import rasterio
from rasterio.windows import Window

from geosscl.data import Mosaic, files, mosaic
from report import print_values

NAIP = Path(__file__).resolve().parent.parent / "sample_data" / "naip" / "m_4709963_se_14_1_20200831.tif"


def _tiles(folder: Path, tile: int, step: int) -> list[str]:
    paths = []
    with rasterio.open(NAIP) as src:
        profile = {k: v for k, v in src.profile.items() if k not in ("blockxsize", "blockysize", "tiled")}
        for row in range(0, src.height - tile + 1, step):
            for col in range(0, src.width - tile + 1, step):
                window = Window(col, row, tile, tile)
                path = folder / f"tile_{row:04d}_{col:04d}.tif"
                with rasterio.open(path, "w", **{**profile, "width": tile, "height": tile,
                                                 "transform": src.window_transform(window)}) as dst:
                    dst.write(src.read(window=window))
                paths.append(str(path))
    return paths


def _cold() -> None:
    files._local.handles = collections.OrderedDict()  # this thread's open handles (closed by rasterio on collection)
    files._header.cache_clear()
    mosaic._masked_by_alpha.cache_clear()


def _header_at_every_look(path: str, stamp=None) -> files.RasterHeader:
    """A header read from the handle cache at every call: how indexing looked at files before (no header kept,
    by the process or by the indexing)."""
    return files._header.__wrapped__(path, stamp if stamp is not None else files.file_stamp(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--step", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        paths = _tiles(Path(scratch), args.tile, args.step)

        def geosscl() -> None:
            Mosaic(scratch)

        def listing() -> None:
            with mock.patch.dict(os.environ, {"GDAL_DISABLE_READDIR_ON_OPEN": "FALSE"}):
                Mosaic(scratch)

        def every_look() -> None:
            with mock.patch.object(mosaic, "raster_header", _header_at_every_look), \
                    mock.patch.dict(os.environ, {"GDAL_DISABLE_READDIR_ON_OPEN": "FALSE"}):
                Mosaic(scratch)

        def floor() -> None:
            for path in paths:
                rasterio.open(path).close()

        peers = {"geosscl": geosscl, "folder_listed_at_every_open": listing, "header_at_every_look": every_look,
                 "open_each_file_once": floor}
        best = {name: float("inf") for name in peers}
        for _ in range(args.rounds):
            for name, run in peers.items():
                _cold()
                start = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - start)
    print(f"{len(paths)} files of {args.tile} px")
    for name, seconds in best.items():
        print(f"{name}: {seconds:.2f} s ({1000 * seconds / len(paths):.2f} ms a file)")
    print_values({
        "files": len(paths),
        **{f"{name}_s": seconds for name, seconds in best.items()},
        "ratio_vs_folder_listed_at_every_open": best["geosscl"] / best["folder_listed_at_every_open"],
        "ratio_vs_header_at_every_look": best["geosscl"] / best["header_at_every_look"],
        "ratio_vs_open_each_file_once": best["geosscl"] / best["open_each_file_once"],
    })


if __name__ == "__main__":
    main()
