"""Fine-tuning on sparse labels: crops drawn near the labels against crops drawn anywhere in the training region.

A user's labels are often a few small patches or polygons over a scene. ``finetune`` draws its
training crops near them (``geosscl.splits.near_labels``): every crop holds labelled pixels. Drawn
anywhere in the training region, as before, most crops of a large scene hold none and their steps
teach nothing. This makes such labels from the NC scene's land-use raster: ``--patches`` squares of
``--patch`` pixels, drawn at random outside the test region (one set per seed), every other pixel
nodata. For each seed, both samplings fine-tune a random-init U-Net for the same steps, on the same
patches, in the same process, and are scored on the test region by tiled whole-scene inference.
``--repeat K`` tiles the scene and its labels K × K times (one GeoTIFF each, the CRS kept): the same
patches then lie over a scene K² times larger, as a few polygons over a large scene do; it is scored
in the test blocks of the first copy.

  python benchmarks/sparse_labels.py --patches 40 --patch 8 --seeds 0,1,2,3,4 --steps 150 --threads 1 [--repeat 3]

Prints a Markdown table (labelled pixels per crop, crops without a label, seconds, mIoU, OA per
seed and mean) and ``name=value`` lines, among them the ratio of labelled pixels per crop and the
mIoU difference (near − anywhere).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path
from unittest import mock

import numpy as np
import rasterio
import geopandas as gpd
import shapely
from rasterio.features import geometry_mask
from rasterio.windows import Window

from scenes import SCENES, TESTS, Scene, start_run, test_region

import geosscl.finetuning
from geosscl.data.labels import IGNORE_INDEX
from geosscl.evaluation import evaluate
from geosscl.finetuning import FinetuneConfig, finetune, loaders, prepare
from geosscl.splits import read_region

SAMPLINGS = ("near", "anywhere")


def sparse_labels(path: Path, labels: str, test: str, patches: int, patch: int, seed: int) -> int:
    """Write ``patches`` squares of ``patch`` px of ``labels`` outside ``test`` (the rest nodata); their labelled pixels."""
    with rasterio.open(labels) as src:
        truth, profile = src.read(1), src.profile
        outside = geometry_mask([read_region(test, src.crs)], truth.shape, src.transform) & (truth != src.nodata)
    rng = np.random.default_rng(1000 + seed)
    keep = np.zeros(truth.shape, bool)
    placed = 0
    while placed < patches:
        row, col = rng.integers(0, truth.shape[0] - patch), rng.integers(0, truth.shape[1] - patch)
        window = (slice(row, row + patch), slice(col, col + patch))
        if outside[window].all() and not keep[row - 1 : row + patch + 1, col - 1 : col + patch + 1].any():
            keep[window] = True
            placed += 1
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.where(keep, truth, profile["nodata"]).astype(truth.dtype), 1)
    return int(keep.sum())


def tiled(path: Path, sources: list[str], repeat: int) -> str:
    """The bands of ``sources`` stacked in one GeoTIFF, the scene repeated ``repeat`` times along each axis
    (the CRS kept, the transform extended), written window by window: a large scene of real imagery."""
    with rasterio.open(sources[0]) as src:
        profile, (h, w) = src.profile, src.shape
    stack = np.stack([rasterio.open(p).read(1) for p in sources])
    profile.update(width=w * repeat, height=h * repeat, count=len(sources), tiled=True, blockxsize=256, blockysize=256,
                   compress="DEFLATE")
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(repeat):
            for col in range(repeat):
                dst.write(stack, window=Window(col * w, row * h, w, h))
    return str(path)


def crop_census(config: FinetuneConfig, boxes: int = 300) -> tuple[float, float]:
    """Mean labelled pixels per training crop, and the share of crops holding none, over ``boxes`` crops."""
    setup = prepare(config)
    loader, _ = loaders(config, setup, steps=max(1, boxes // config.batch_size))
    counts = []
    for batch in loader:
        counts.extend((batch["mask"] != IGNORE_INDEX).flatten(1).sum(1).tolist())
    return statistics.mean(counts), sum(c == 0 for c in counts) / len(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=40, help="labelled squares [default: 40]")
    parser.add_argument("--patch", type=int, default=8, help="their side, pixels [default: 8]")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1,
                        help="the scene tiled K × K times, its labels too: sparser labels over a larger scene [default: 1]")
    parser.add_argument("--test", choices=TESTS, default="blocks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir")
    args = parser.parse_args()
    seeds, work = start_run(args, "geosscl-sparse-")
    scene = SCENES["nc"]
    scored = test = test_region(args.test, work, scene)
    if args.repeat > 1:
        if args.test != "blocks":
            parser.error("--repeat takes --test blocks")
        scene = Scene(f"NC Landsat, {args.repeat} × {args.repeat}", [tiled(work / f"nc_x{args.repeat}.tif", scene.imagery, args.repeat)],
                      [tiled(work / f"strata_x{args.repeat}.tif", scene.labels, args.repeat)], scene.classes)
        scored = test = test_region("blocks", work, scene)
        # Scored in the first copy of the scene only: the others hold the same ground, and a whole-scene pass would cost
        # more than the fine-tuning.
        with rasterio.open(SCENES["nc"].labels[0]) as src:
            first = shapely.box(*src.bounds)
        frame = gpd.read_file(test)
        scored = str(work / f"test_first_copy_x{args.repeat}.gpkg")
        gpd.GeoDataFrame(geometry=[frame.union_all().intersection(first)], crs=frame.crs).to_file(scored)
    print(f"# {scene.name}, {args.patches} labelled squares of {args.patch} px outside the test region ({args.test}), "
          f"random init, {args.steps} steps, crop {args.crop}, batch {args.batch}, seeds {seeds}; work in {work}\n",
          flush=True)
    print("| sampling | seed | labelled px per crop | crops without a label | seconds | mIoU | OA |\n|---|---|---|---|---|---|---|")
    rows: dict[str, list[tuple[float, float, float, float, float]]] = {s: [] for s in SAMPLINGS}
    for seed in seeds:
        labels = work / f"sparse-{args.patches}x{args.patch}-{seed}.tif"
        labelled = sparse_labels(labels, scene.labels[0], test, args.patches, args.patch, seed)
        for sampling in SAMPLINGS:
            config = FinetuneConfig(imagery=scene.imagery, labels=[str(labels)], classes=scene.classes, init="random",
                                    holdout_region=test, crop_size=args.crop, batch_size=args.batch,
                                    num_workers=0 if args.threads == 1 else 2, quiet=True, max_steps=args.steps,
                                    seed=seed, out=str(work / f"{sampling}-{seed}.safetensors"), overwrite=True)
            # The peer: crops drawn anywhere in the training blocks, as before near_labels.
            anywhere = mock.patch.object(geosscl.finetuning, "near_labels", lambda labels, region, *a, **k: region)
            with anywhere if sampling == "anywhere" else contextlib.nullcontext():
                per_crop, empty = crop_census(config)
                start = time.perf_counter()
                finetune(config)
                seconds = time.perf_counter() - start
            scores, _ = evaluate(config.out, scene.imagery, scene.labels, region=scored)
            rows[sampling].append((per_crop, empty, seconds, 100 * scores.miou, 100 * scores.overall_accuracy))
            print(f"| {sampling} | {seed} | {per_crop:.0f} | {100 * empty:.0f} % | {seconds:.0f} | {100 * scores.miou:.1f} | "
                  f"{100 * scores.overall_accuracy:.1f} |", flush=True)
        print(f"<!-- seed {seed}: {labelled} labelled pixels -->", flush=True)
    means = {s: [statistics.mean(column) for column in zip(*rows[s])] for s in SAMPLINGS}
    for sampling in SAMPLINGS:
        per_crop, empty, seconds, miou, oa = means[sampling]
        print(f"| {sampling} | mean | {per_crop:.0f} | {100 * empty:.0f} % | {seconds:.0f} | {miou:.1f} | {oa:.1f} |")
    print()
    print(f"labelled_px_per_crop_ratio={means['near'][0] / means['anywhere'][0]:.2f}")
    print(f"empty_crops_near={means['near'][1]:.3f}")
    print(f"empty_crops_anywhere={means['anywhere'][1]:.3f}")
    print(f"miou_near_minus_anywhere={means['near'][3] - means['anywhere'][3]:.2f}")
    print(f"seconds_ratio_near_vs_anywhere={means['near'][2] / means['anywhere'][2]:.2f}")


if __name__ == "__main__":
    main()
