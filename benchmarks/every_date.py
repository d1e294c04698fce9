"""One set of labels, two dates: does training on every date make a model that holds on both?

The tutorial tile (Landsat 7, 250 × 250 px of 30 m) was imaged on 1999-11-18 and on
2002-04-16: autumn and spring. Its labels (30 polygons, 5 land-cover classes) hold on
both. For each seed the labelled area is cut into 64 px blocks; a third of them is the
test region, the rest trains and validates (``finetune`` draws its own validation blocks).
Each model is then scored on the test region of each date separately
(``evaluate --every-date``: each date's file on its own):

  1999          finetune 1999.gtif                      (the date the labels were drawn on)
  2002          finetune 2002.gtif
  every date    finetune 1999.gtif 2002.gtif --every-date

and the same three as frozen-feature probes (``probe --stages 1 -o``, random encoder), which
take seconds. The peers run in the same process, on the same blocks and seeds.

  python benchmarks/every_date.py --seeds 0,1,2,3,4 --steps 300 --threads 2

Models are kept in ``--workdir`` (a rerun scores them without training again). Ends with a
Markdown table (mIoU on each date, mean ± std over the seeds, and the two dates' mean) and
``name=value`` lines.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import geopandas as gpd
import shapely
import torch

from geosscl.data import Mosaic
from geosscl.evaluation import evaluate_each_date
from geosscl.finetuning import FinetuneConfig, finetune
from geosscl.probing import linear_probe
from geosscl.splits import block_split

TILE = Path(__file__).resolve().parent.parent / "sample_data" / "landsat_tutorial"
DATES = {"1999": str(TILE / "LE70220491999322EDC01_stack.gtif"), "2002": str(TILE / "LE70220492002106EDC00_stack.gtif")}
LABELS = [str(TILE / "training_data.gtif")]  # 0 = unlabelled (its nodata), classes 1..5
TRAININGS = {"1999": ([DATES["1999"]], False), "2002": ([DATES["2002"]], False), "every date": (list(DATES.values()), True)}


def test_blocks(seed: int, folder: Path, block: int) -> str:
    """A third of the tile in ``block`` px blocks, drawn with ``seed``, as a GeoPackage."""
    path = folder / f"test_{seed}.gpkg"
    if not path.exists():
        mosaic = Mosaic([DATES["1999"]])
        x, y, _ = mosaic.bounds
        area = shapely.box(x.start, y.start, x.stop, y.stop)
        blocks = block_split(area, block * mosaic.res[0], {"test": 1 / 3, "rest": 2 / 3}, seed=seed)["test"]
        gpd.GeoDataFrame(geometry=[blocks], crs=mosaic.crs).to_file(path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps [default: 300]")
    parser.add_argument("--crop", type=int, default=64, help="crop and block side, pixels [default: 64]")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--kinds", default="probe,finetune", help="probe, finetune or both [default: both]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    kinds = args.kinds.split(",")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="geosscl-every-date-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# tutorial tile, test: a third of it in {args.crop} px blocks (by seed); fine-tuning {args.steps} steps, "
          f"crop {args.crop}, batch {args.batch}; seeds {seeds}; work in {work}\n", flush=True)
    print("| model | trained on | mIoU on 1999 | mIoU on 2002 | mean of both |\n|---|---|---|---|---|", flush=True)
    final = {}
    for kind in kinds:
        for name, (imagery, every_date) in TRAININGS.items():
            scores: dict[str, list[float]] = {date: [] for date in DATES}
            for seed in seeds:
                test = test_blocks(seed, work, args.crop)
                path = work / f"{kind}-{name.replace(' ', '_')}-{args.steps}-{seed}.safetensors"
                config = FinetuneConfig(imagery=imagery, labels=LABELS, out=str(path), every_date=every_date,
                                        crop_size=args.crop, batch_size=args.batch, holdout_region=test, seed=seed,
                                        max_steps=args.steps, num_workers=0 if args.threads == 1 else 2, quiet=True)
                if not path.exists():
                    if kind == "probe":
                        linear_probe(config, stages=[1])
                    else:
                        finetune(config)
                _, by_file, _ = evaluate_each_date(str(path), list(DATES.values()), LABELS, region=test)
                for date, file in DATES.items():
                    scores[date].append(100 * by_file[file].miou)
            means = {date: statistics.mean(values) for date, values in scores.items()}
            both = statistics.mean(means.values())
            key = name.replace(" ", "_")
            final.update({f"miou_{kind}_{key}_{date}": value for date, value in means.items()})
            print(f"| {kind} | {name} | " + " | ".join(f"{means[d]:.1f} ± {statistics.pstdev(scores[d]):.1f}" for d in DATES)
                  + f" | {both:.1f} |", flush=True)
    print()
    for key, value in final.items():
        print(f"{key}={value:.2f}")


if __name__ == "__main__":
    main()
