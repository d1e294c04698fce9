"""Pairs per second of geosscl's pair loading against its peers, in one process.

Peers, on the same pairs of 128 px views from the bundled NAIP scene, at two levels.

Per pair, the dataset alone (the issue's targets):

* geosscl: ``PairDataset[pair]``: one read of the union of both boxes, as stored
  (uint8 here) with its validity mask. The views are cut from it later, batched, on
  the training device (:func:`geosscl.data.cut_views`);
* TorchGeo 0.8.1: a ``RasterDataset`` over the same file, reading each view as its own
  query ``ds[xmin:xmax:res, ymin:ymax:res]`` at the view's resolution (how a TorchGeo
  pipeline reads two views);
* the bare limit: rasterio reading the union window of each pair from an open
  handle, with the window computed arithmetically, and nothing else.

Per batch of 32, what a DataLoader worker does (``worker_*``): the above plus the
collate function (:func:`~geosscl.data.collate_pairs`; TorchGeo's ``stack_samples``
of its two views). ``cut_views_*`` time the cut on the CPU (and on CUDA when
present); ``cpu_pipeline_pairs_per_s`` is a worker plus the CPU cut: the rate of a
pipeline with no GPU, views ready to augment.

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
from torchgeo.datasets import RasterDataset, stack_samples

from geosscl.data import Mosaic, PairDataset, collate_pairs, cut_views
from samplers import OverlappingPairSampler

NAIP = Path(__file__).resolve().parent.parent / "sample_data" / "naip" / "m_4709963_se_14_1_20200831.tif"
VIEW = 128
BATCH = 32


class NAIPFile(RasterDataset):
    """TorchGeo's own reader for the file (all bands, float32)."""

    filename_glob = NAIP.name


def cut_rate(dataset: PairDataset, pairs, device: str, rounds: int, batch: int = BATCH) -> float:
    """Pairs per second of :func:`cut_views` on ``device``, batches of ``batch`` collated pairs."""
    batches = []
    for i in range(0, min(len(pairs), 10 * batch), batch):
        collated = collate_pairs([dataset[p] for p in pairs[i : i + batch]])
        batches.append({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collated.items()})
    cut_views(batches[0], VIEW)  # warm up
    best = 0.0
    for _ in range(rounds):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for b in batches:
            cut_views(b, VIEW)
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, sum(len(b["box_a"]) for b in batches) / (time.perf_counter() - start))
    return best


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

    batches = [pairs[i : i + BATCH] for i in range(0, len(pairs), BATCH)]

    def geosscl_read(pair):
        dataset[pair]

    def geosscl_worker(batch):
        collate_pairs([dataset[pair] for pair in batch])

    def torchgeo_views(pair):
        views = []
        for box in (pair.box_a, pair.box_b):
            res = (box[2] - box[0]) / VIEW
            views.append(torchgeo[box[0] : box[2] : res, box[1] : box[3] : res])
        return views

    def torchgeo_worker(batch):
        views = [torchgeo_views(pair) for pair in batch]
        stack_samples([a for a, _ in views]), stack_samples([b for _, b in views])

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

    torchgeo_batches = batches[: max(1, args.torchgeo_pairs // BATCH)]
    peers = {
        "geosscl": (geosscl_read, pairs, None),
        "torchgeo": (torchgeo_views, pairs[: args.torchgeo_pairs], None),
        "union": (union_read, pairs, None),
        "worker": (geosscl_worker, batches, len),
        "torchgeo_worker": (torchgeo_worker, torchgeo_batches, len),
        "mosaic_window": (mosaic_window, windows, None),
        "torchgeo_window": (torchgeo_window, windows, None),
    }
    for read, items, _ in peers.values():  # warm caches and handles
        read(items[0])
    best = dict.fromkeys(peers, 0.0)
    for _ in range(args.rounds):
        for name, (read, items, per_item) in peers.items():
            start = time.perf_counter()
            for item in items:
                read(item)
            count = sum(per_item(i) for i in items) if per_item else len(items)
            best[name] = max(best[name], count / (time.perf_counter() - start))

    cut = {"cpu": cut_rate(dataset, pairs, "cpu", args.rounds)}
    if torch.cuda.is_available():
        cut["cuda"] = cut_rate(dataset, pairs, "cuda", args.rounds)
    cpu_pipeline = 1.0 / (1.0 / best["worker"] + 1.0 / cut["cpu"])

    print(f"# {len(pairs)} pairs of {VIEW} px views, overlap 0.3-0.8, scale {scale[0]:g}-{scale[1]:g}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"# sampler alone: {sampler_rate:.0f} pairs/s")
    print("# targets: ratio_vs_torchgeo >= 5, ratio_vs_union_read >= 0.5 (within 2x of the bare read)")
    print(f"pairs_per_s={best['geosscl']:.1f}")
    print(f"torchgeo_pairs_per_s={best['torchgeo']:.1f}")
    print(f"union_read_pairs_per_s={best['union']:.1f}")
    print(f"worker_pairs_per_s={best['worker']:.1f}")
    print(f"torchgeo_worker_pairs_per_s={best['torchgeo_worker']:.1f}")
    for device, value in cut.items():
        print(f"cut_views_{device}_pairs_per_s={value:.1f}")
    print(f"cpu_pipeline_pairs_per_s={cpu_pipeline:.1f}")
    print(f"mosaic_windows_per_s={best['mosaic_window']:.1f}")
    print(f"torchgeo_windows_per_s={best['torchgeo_window']:.1f}")
    print(f"window_ratio_vs_torchgeo={best['mosaic_window'] / best['torchgeo_window']:.2f}")
    print(f"worker_ratio_vs_torchgeo={best['worker'] / best['torchgeo_worker']:.2f}")
    print(f"worker_ratio_vs_union_read={best['worker'] / best['union']:.2f}")
    print(f"cpu_pipeline_ratio_vs_torchgeo={cpu_pipeline / best['torchgeo_worker']:.2f}")
    print(f"ratio_vs_torchgeo={best['geosscl'] / best['torchgeo']:.2f}")
    print(f"ratio_vs_union_read={best['geosscl'] / best['union']:.2f}")


if __name__ == "__main__":
    main()
