"""Prediction: ``geosscl predict`` throughput against the forward-only limit, and peak memory by scene size.

Scenes are built by tiling the bundled NC Landsat scene (6 bands, written block by
block, never whole in memory) to the sizes asked. The model is a ResNet-18 U-Net with
the NC metadata (random weights: speed and memory do not depend on them), or
``--model`` (a model of the six NC bands, e.g. the bundled one, at its own tile size).

1. Throughput (one process): ``predict`` on the second size, against the same model
   on the same number of tiles, pre-loaded in memory, same batch size: the limit of
   any engine that runs those tiles. ``ratio_vs_forward_only`` = forward-only time ÷
   predict time. Then ``predict --precision bf16`` on the same scene: ``bf16_vs_32`` =
   float32 time ÷ bf16 time; and how many pixels keep their class under bf16
   (``bf16_same_class``), with the bundled NC model (trained: a random one's ties
   would say nothing) on the NC scene.
2. Memory: ``geosscl predict`` in a fresh process per size; peak RSS of each (from
   ``wait4``). ``rss_growth`` = largest scene's ÷ smallest scene's.

Usage: ``python benchmarks/predict.py [--sizes 1024,2048,4096] [--tile 256] [--batch 8] [--model MODEL]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from geosscl.data import Mosaic
from geosscl.inference import TiledSegmenter, _starts
from geosscl.modelfile import ModelInfo, default_colors, save_model
from geosscl.models import SegmentationNetwork
from geosscl.prediction import predict, segment

DATA = Path(__file__).resolve().parent.parent / "sample_data" / "nc_landsat"
BANDS = [DATA / f"lsat7_2000_{b}.tif" for b in (10, 20, 30, 40, 50, 70)]
BUNDLED = DATA.parent / "models" / "nc_landuse.safetensors"


def tiled_scene(path: Path, size: int) -> Path:
    """A ``size × size`` 6-band GeoTIFF made of copies of the NC scene, written window by window."""
    with rasterio.open(BANDS[0]) as src:
        profile, nodata = src.profile, src.nodata
    tile = np.stack([rasterio.open(p).read(1) for p in BANDS])
    h, w = tile.shape[1:]
    profile.update(width=size, height=size, count=6, tiled=True, blockxsize=512, blockysize=512, compress="DEFLATE",
                   nodata=nodata, BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 512):
            for col in range(0, size, 512):
                rows = (np.arange(row, min(row + 512, size)) % h)[:, None]
                cols = (np.arange(col, min(col + 512, size)) % w)[None, :]
                dst.write(tile[:, rows, cols], window=Window(col, row, cols.shape[1], rows.shape[0]))
    return path


def make_model(path: Path, tile: int) -> Path:
    torch.manual_seed(0)
    names = [f"class {i}" for i in range(8)]
    with rasterio.open(BANDS[0]) as src:
        crs, res = src.crs.to_wkt(), list(src.res)
    info = ModelInfo(arch="unet", encoder="resnet18", bands=list(range(1, 7)), band_mean=[80.0] * 6, band_std=[30.0] * 6,
                     class_names=names, class_colors=default_colors(8), res=res, crs=crs, tile_size=tile,
                     tile_overlap=tile // 8)
    save_model(path, SegmentationNetwork(6, 8).eval(), info, overwrite=True)
    return path


def engine_tile(model: Path) -> int:
    from geosscl.modelfile import read_info

    return read_info(model).tile_size


def tile_count(engine: TiledSegmenter, mosaic: Mosaic) -> int:
    x, y, _ = mosaic.bounds
    count = 0
    for bounds in engine.plan(mosaic, (x.start, y.start, x.stop, y.stop)):
        w = round((bounds[2] - bounds[0]) / mosaic.res[0]) + 2 * engine.overlap
        h = round((bounds[3] - bounds[1]) / mosaic.res[1]) + 2 * engine.overlap
        count += len(_starts(max(h, engine.tile), engine.tile, engine.overlap)) * len(
            _starts(max(w, engine.tile), engine.tile, engine.overlap))
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048,4096", help="scene sides in pixels, comma-separated")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--model", type=Path, help="a model file of the NC bands to time instead (at its own tile size)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="geosscl-predict-bench-"))
    model = args.model or make_model(work / "model.safetensors", args.tile)
    scenes = {size: tiled_scene(work / f"scene_{size}.tif", size) for size in sizes}
    print(f"# scenes {sizes} px (tiled NC Landsat), model {model.name}, tile {engine_tile(model)}, batch {args.batch}, device {args.device}, "
          f"{torch.get_num_threads()} torch threads; work in {work}")

    # -- throughput, one process ---------------------------------------------------------------
    size = sizes[1] if len(sizes) > 1 else sizes[0]
    mpx = size * size / 1e6
    predict([str(scenes[sizes[0]])], str(model), work / "warmup.tif", device=args.device)
    start = time.perf_counter()
    predict([str(scenes[size])], str(model), work / "timed.tif", batch_size=args.batch, device=args.device)
    predict_s = time.perf_counter() - start
    start = time.perf_counter()
    predict([str(scenes[size])], str(model), work / "timed_bf16.tif", batch_size=args.batch, device=args.device,
            precision="bf16")
    bf16_s = time.perf_counter() - start
    from geosscl.modelfile import load_model

    network, info = load_model(model)
    engine = TiledSegmenter(network, info, device=args.device, batch_size=args.batch)
    tiles = tile_count(engine, Mosaic(str(scenes[size])))
    batch = torch.randn(args.batch, 6, engine.tile, engine.tile, device=engine.device)
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, tiles, args.batch):
            engine.network(batch[: min(args.batch, tiles - i)]).float().softmax(1).cpu()
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    forward_s = time.perf_counter() - start
    print(f"\n| {size}² scene ({tiles} tiles) | seconds | Mpx/s |\n|---|---|---|")
    print(f"| geosscl predict | {predict_s:.1f} | {mpx / predict_s:.2f} |")
    print(f"| geosscl predict --precision bf16 | {bf16_s:.1f} | {mpx / bf16_s:.2f} |")
    print(f"| forward only | {forward_s:.1f} | {mpx / forward_s:.2f} |")
    bundled = load_model(BUNDLED)
    maps = [segment(BANDS, bundled, device=args.device, precision=p)[0] for p in ("32", "bf16")]
    valid = maps[0] != 255
    same = float((maps[0] == maps[1])[valid].mean())
    print(f"\nbundled NC model on the NC scene, bf16 against float32: {same:.2%} of {valid.sum()} pixels keep their class")

    # -- peak memory, a fresh process per size ---------------------------------------------------
    print("\n| scene | Mpx | peak RSS MiB | seconds |\n|---|---|---|---|")
    rss = {}
    for s in sizes:
        out = work / f"rss_{s}.tif"
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "geosscl", "predict", str(scenes[s]), "-m", str(model), "-o",
                                    str(out), "--batch-size", str(args.batch), "--device", args.device, "-q"])
        _, status, usage = os.wait4(process.pid, 0)
        if status != 0:
            raise SystemExit(f"predict failed on the {s}² scene")
        rss[s] = usage.ru_maxrss / 1024
        print(f"| {s}² | {s * s / 1e6:.1f} | {rss[s]:.0f} | {time.perf_counter() - start:.1f} |")
    print()
    print(f"predict_mpx_per_s={mpx / predict_s:.3f}")
    print(f"forward_only_mpx_per_s={mpx / forward_s:.3f}")
    print(f"ratio_vs_forward_only={forward_s / predict_s:.3f}")
    print(f"bf16_vs_32={predict_s / bf16_s:.3f}")
    print(f"bf16_same_class={same:.4f}")
    print(f"rss_growth={rss[sizes[-1]] / rss[sizes[0]]:.3f}")


if __name__ == "__main__":
    main()
