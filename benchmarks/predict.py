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
2. Ground without imagery (one process): the engine over the NC scene (a rotated swath, 37.6 % of its
   rectangle nodata) and over two copies of the first size 4 blocks apart both ways (a mosaic of places far
   apart), with its default ``skip_empty`` against the peer run of every tile; ``empty_ratio_*`` = seconds
   running every tile ÷ seconds skipping, with the tiles each ran, and whether both gave the same classes.
3. Memory: ``geosscl predict`` in a fresh process per size; peak RSS of each (from
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
from rasterio.transform import Affine
from rasterio.windows import Window

from geosscl.data import Mosaic
from geosscl.inference import TiledSegmenter
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


def shifted_copy(scene: Path, path: Path, blocks: int, block: int = 1024) -> Path:
    """``scene`` again, ``blocks`` blocks of ``block`` px east and south of it."""
    with rasterio.open(scene) as src:
        profile, data = src.profile, src.read()
    profile["transform"] = profile["transform"] @ Affine.translation(blocks * block, blocks * block)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def skip_against_every_tile(network, info, mosaic: Mosaic, device: str, batch: int) -> dict[str, float]:
    """Seconds and tiles run by the engine over ``mosaic`` skipping ground without input, and running every tile."""
    runs: list[int] = []
    hook = network.register_forward_hook(lambda module, args, output: runs.append(len(args[0])))
    x, y, _ = mosaic.bounds
    area = (x.start, y.start, x.stop, y.stop)
    result: dict[str, float] = {}
    classes = {}
    try:
        for skip in (True, False):
            runs.clear()
            engine = TiledSegmenter(network, info, device=device, batch_size=batch, skip_empty=skip)
            start = time.perf_counter()
            classes[skip] = [block.classes for block in engine.blocks(mosaic, area)]
            result[f"seconds_{skip}"] = time.perf_counter() - start
            result[f"tiles_{skip}"] = sum(runs)
    finally:
        hook.remove()
    # Blocks no file reaches are left out of the skipping plan; the peer run has them, without a class.
    kept = [c for c in classes[False] if bool((c >= 0).any())]
    result["same"] = float(len(kept) == len(classes[True]) and all(torch.equal(a, b) for a, b in zip(kept, classes[True])))
    return result


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
    from geosscl.modelfile import load_model

    network, info = load_model(model)
    predict([str(scenes[sizes[0]])], (network, info), work / "warmup.tif", device=args.device)
    runs: list[int] = []
    hook = network.register_forward_hook(lambda module, inputs, output: runs.append(len(inputs[0])))
    start = time.perf_counter()
    predict([str(scenes[size])], (network, info), work / "timed.tif", batch_size=args.batch, device=args.device)
    predict_s = time.perf_counter() - start
    hook.remove()
    tiles = sum(runs)  # those holding input: the tiled scene repeats the NC collar
    start = time.perf_counter()
    predict([str(scenes[size])], (network, info), work / "timed_bf16.tif", batch_size=args.batch, device=args.device,
            precision="bf16")
    bf16_s = time.perf_counter() - start
    engine = TiledSegmenter(network, info, device=args.device, batch_size=args.batch)
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

    # -- ground without imagery ----------------------------------------------------------------------
    far = shifted_copy(scenes[sizes[0]], work / "far.tif", 4)
    empty = {"NC scene (37.6 % collar)": skip_against_every_tile(network, info, Mosaic(BANDS), args.device, args.batch),
             f"two {sizes[0]}² scenes 4 blocks apart": skip_against_every_tile(
                 network, info, Mosaic([str(scenes[sizes[0]]), str(far)]), args.device, args.batch)}
    print("\n| ground without imagery | tiles run: skipping / every tile | seconds: skipping / every tile | ratio "
          "| same classes |\n|---|---|---|---|---|")
    for name, r in empty.items():
        print(f"| {name} | {r['tiles_True']:.0f} / {r['tiles_False']:.0f} | {r['seconds_True']:.1f} / "
              f"{r['seconds_False']:.1f} | {r['seconds_False'] / r['seconds_True']:.2f} | {bool(r['same'])} |")

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
    for key, r in zip(("collar", "scattered"), empty.values()):
        print(f"empty_ratio_{key}={r['seconds_False'] / r['seconds_True']:.3f}")


if __name__ == "__main__":
    main()
