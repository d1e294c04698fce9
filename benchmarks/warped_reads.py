"""Pairs per second of ``PairDataset`` on a mosaic read in another CRS than its files', in one process.

The bundled NC Landsat scene (six single-band files, EPSG:32119) read as a mosaic in
EPSG:3857 at 28.5 m, so that every read is warped. Peers, on the same pairs of 64 px
views, round by round (the best round of each counts):

* geosscl: ``PairDataset[pair]`` (each file warped once onto the mosaic grid by a
  cached GDAL warped VRT; a window of it per read);
* the per-read warp it replaced: the same reads with :func:`rasterio.warp.reproject`
  of every file into each window (what ``Mosaic`` does off its grid);
* the same scene in its own CRS (no warp): the ceiling.

Usage: ``python benchmarks/warped_reads.py [--pairs N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from geosscl.data import Mosaic, PairDataset
from report import print_values
from samplers import OverlappingPairSampler

DATA = Path(__file__).resolve().parent.parent / "sample_data" / "nc_landsat"
BANDS = [str(DATA / f"lsat7_2000_{b}.tif") for b in (10, 20, 30, 40, 50, 70)]


class _PerReadWarp(Mosaic):
    """The mosaic as it read before: every warped read re-projects into the window."""

    def _read_warped(self, source, part, transform, out):  # noqa: D102
        shifted = transform * transform.translation(1e-3, 0)  # off the grid: the general path
        super()._read_warped(source, part, shifted, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warped = Mosaic(BANDS, crs="EPSG:3857", res=28.5)
    pairs = list(OverlappingPairSampler(warped, 64, length=args.pairs, generator=torch.Generator().manual_seed(0)))
    native = Mosaic(BANDS)
    native_pairs = list(OverlappingPairSampler(native, 64, length=args.pairs, generator=torch.Generator().manual_seed(0)))
    peers = {
        "geosscl_warped": (PairDataset(warped, 64), pairs),
        "per_read_reproject": (PairDataset(_PerReadWarp(BANDS, crs="EPSG:3857", res=28.5), 64), pairs),
        "native_crs": (PairDataset(native, 64), native_pairs),
    }
    best = {name: 0.0 for name in peers}
    for _ in range(args.rounds):
        for name, (dataset, drawn) in peers.items():
            start = time.perf_counter()
            for pair in drawn:
                dataset[pair]
            best[name] = max(best[name], len(drawn) / (time.perf_counter() - start))
    for name, rate in best.items():
        print(f"{name}: {rate:.0f} pairs/s")
    print_values({
        **{f"{name}_pairs_per_s": rate for name, rate in best.items()},
        "ratio_vs_per_read_reproject": best["geosscl_warped"] / best["per_read_reproject"],
        "ratio_vs_native_crs": best["geosscl_warped"] / best["native_crs"],
    })


if __name__ == "__main__":
    main()
