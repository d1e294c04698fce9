"""How far scores over a model's own labels are from scores of held-out ground.

A model file made by ``finetune`` records the region whose labels trained it and the region whose
labels chose its weights (``geosscl.ground``). This fine-tunes random-init U-Nets on the NC scene with
a holdout test region and a label fraction, then scores each, by the tiled whole-scene inference of
``evaluate``, on five sets of labels: its training blocks, its validation blocks, every label of the
scene, the held-out labels (``held_out=True``: the test region and the training region's labels the
fraction left unread) and the test region alone.

  python benchmarks/held_out.py --fractions 0.05,0.2 --seeds 0,1,2 --steps 150 --threads 1

Prints a Markdown table (mIoU / OA, mean over seeds, and the pixels scored) and one line per run.
"""

from __future__ import annotations

import argparse
import statistics

import geopandas as gpd
from rasterio.crs import CRS

from scenes import SCENES, TESTS, start_run, test_region

from geosscl.evaluation import evaluate
from geosscl.finetuning import FinetuneConfig, finetune
from geosscl.ground import model_ground
from geosscl.modelfile import read_info

SETS = ("training blocks", "validation blocks", "every label", "held out", "test region")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fractions", default="0.05,0.2", help="label fractions of the training region")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=150, help="fine-tuning steps (batches of 16 crops of 64 px)")
    parser.add_argument("--test", choices=TESTS, default="east", help="the holdout test region")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", help="where models go (default: a new temporary folder)")
    args = parser.parse_args()
    seeds, work = start_run(args, "held_out_")
    scene = SCENES["nc"]
    test = test_region(args.test, work)
    table = {}
    for fraction in (float(f) for f in args.fractions.split(",")):
        for seed in seeds:
            model = str(work / f"model_{fraction}_{seed}.safetensors")
            finetune(FinetuneConfig(imagery=scene.imagery, labels=scene.labels, classes=scene.classes, out=model,
                                    holdout_region=test, label_fraction=fraction, crop_size=64, batch_size=16,
                                    max_steps=args.steps, num_workers=0, seed=seed, quiet=True, overwrite=True))
            info = read_info(model)
            ground = model_ground(info)
            regions = []
            for name, geometry in (("training", ground.training), ("validation", ground.validation)):
                path = work / f"{name}_{fraction}_{seed}.gpkg"  # GeoPackage: GeoJSON would lose the NC scene's CRS
                gpd.GeoDataFrame(geometry=[geometry], crs=CRS.from_wkt(info.crs)).to_file(path)
                regions.append({"region": str(path)})
            for name, options in zip(SETS, [*regions, {}, {"held_out": True}, {"region": test}]):
                scores, _ = evaluate(model, scene.imagery, scene.labels, **options)
                table.setdefault((fraction, name), []).append(
                    (scores.miou, scores.overall_accuracy, sum(map(sum, scores.confusion))))
            print(f"fraction={fraction} seed={seed} " + " ".join(
                f"{name.replace(' ', '_')}={100 * table[fraction, name][-1][0]:.1f}" for name in SETS), flush=True)
    print(f"\nNC scene, random init, {args.steps} steps, test region {args.test}, seeds {args.seeds}; "
          "mIoU / OA (labelled pixels scored), mean over seeds\n")
    print("| labels | " + " | ".join(SETS) + " |")
    print("|---" * (len(SETS) + 1) + "|")
    for fraction in sorted({f for f, _ in table}):
        cells = []
        for name in SETS:
            runs = table[fraction, name]
            miou, oa, pixels = (statistics.mean(r[i] for r in runs) for i in range(3))
            cells.append(f"{100 * miou:.1f} / {100 * oa:.1f} ({pixels:,.0f})")
        print(f"| {100 * fraction:g} % | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
