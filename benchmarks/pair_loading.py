"""Pairs per second of geosscl's pair loading against its peers, in one process.

Peers, on the same pairs of 128 px views from the bundled NAIP scene:

* geosscl: ``PairDataset[pair]`` (one read of the union at the native grid, two
  resampled views);
* TorchGeo 0.8.1: a ``RasterDataset`` over the same file, reading each view as its own
  query ``ds[xmin:xmax:res, ymin:ymax:res]`` at the view's resolution (how a TorchGeo
  pipeline reads two views);
* the bare limit: rasterio reading the union window of each pair from an open
  handle, with the window computed arithmetically, and nothing else.

It also times single 128 px windows read through each dataset's TorchGeo interface
(``Mosaic[query]`` against ``RasterDataset[query]``).

Each peer runs several rounds in turn; the best round of each counts. Sampling is
timed on its own. Usage: ``python benchmarks/pair_loading.py [--pairs N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import rasterio
import torch
from rasterio.windows import Window
from torchgeo.datasets import RasterDataset

from geosscl.data import Mosaic, PairDataset
from samplers import OverlappingPairSampler

NAIP = Path(__file__).resolve().parent.parent / "sample_data" / "naip" / "m_4709963_se_14_1_20200831.tif"
VIEW = 128


class NAIPFile(RasterDataset):
    """TorchGeo's own reader for the file (all bands, float32)."""

    filename_glob = NAIP.name


def rate(read, pairs) -> float:
    start = time.perf_counter()
    for pair in pairs:
        read(pair)
    return len(pairs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--torchgeo-pairs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", default="0.75,1.5", help="LO,HI scale range of the views (1,1: no resampling)")
    args = parser.parse_args()

    mosaic = Mosaic(NAIP)
    start = time.perf_counter()
    scale = tuple(float(v) for v in args.scale.split(","))
    sampler = OverlappingPairSampler(mosaic, VIEW, overlap=(0.3, 0.8), scale=scale, length=args.pairs,
                                     generator=torch.Generator().manual_seed(0))
    pairs = list(sampler)
    sampler_rate = len(pairs) / (time.perf_counter() - start)

    dataset = PairDataset(mosaic, VIEW)
    torchgeo = NAIPFile(paths=str(NAIP.parent))
    src = rasterio.open(NAIP)
    t = src.transform

    def geosscl_read(pair):
        dataset[pair]

    def torchgeo_read(pair):
        for box in (pair.box_a, pair.box_b):
            res = (box[2] - box[0]) / VIEW
            torchgeo[box[0] : box[2] : res, box[1] : box[3] : res]

    def union_read(pair):
        x0, y0, x1, y1 = pair.union
        col, row = round((x0 - t.c) / t.a), round((t.f - y1) / -t.e)
        src.read(window=Window(col, row, round((x1 - x0) / t.a), round((y1 - y0) / -t.e)))

    # Single 128 px windows through each dataset's TorchGeo interface (RandomGeoSampler queries).
    from torchgeo.samplers import RandomGeoSampler

    windows = list(RandomGeoSampler(mosaic, VIEW, length=args.torchgeo_pairs, generator=torch.Generator().manual_seed(1)))

    def mosaic_window(query):
        mosaic[query]

    def torchgeo_window(query):
        torchgeo[query]

    for read, items in ((geosscl_read, pairs), (torchgeo_read, pairs), (union_read, pairs),
                        (mosaic_window, windows), (torchgeo_window, windows)):  # warm caches and handles
        read(items[0])
    best = {"geosscl": 0.0, "torchgeo": 0.0, "union": 0.0, "mosaic_window": 0.0, "torchgeo_window": 0.0}
    for _ in range(args.rounds):
        best["geosscl"] = max(best["geosscl"], rate(geosscl_read, pairs))
        best["torchgeo"] = max(best["torchgeo"], rate(torchgeo_read, pairs[: args.torchgeo_pairs]))
        best["union"] = max(best["union"], rate(union_read, pairs))
        best["mosaic_window"] = max(best["mosaic_window"], rate(mosaic_window, windows))
        best["torchgeo_window"] = max(best["torchgeo_window"], rate(torchgeo_window, windows))

    print(f"# {len(pairs)} pairs of {VIEW} px views, overlap 0.3-0.8, scale {scale[0]:g}-{scale[1]:g}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"# sampler alone: {sampler_rate:.0f} pairs/s")
    print("# targets: ratio_vs_torchgeo >= 5, ratio_vs_union_read >= 0.5 (within 2x of the bare read)")
    print(f"pairs_per_s={best['geosscl']:.1f}")
    print(f"torchgeo_pairs_per_s={best['torchgeo']:.1f}")
    print(f"union_read_pairs_per_s={best['union']:.1f}")
    print(f"mosaic_windows_per_s={best['mosaic_window']:.1f}")
    print(f"torchgeo_windows_per_s={best['torchgeo_window']:.1f}")
    print(f"window_ratio_vs_torchgeo={best['mosaic_window'] / best['torchgeo_window']:.2f}")
    print(f"ratio_vs_torchgeo={best['geosscl'] / best['torchgeo']:.2f}")
    print(f"ratio_vs_union_read={best['geosscl'] / best['union']:.2f}")


if __name__ == "__main__":
    main()
