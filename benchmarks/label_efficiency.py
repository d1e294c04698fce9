"""Label efficiency: mIoU after fine-tuning with few labels, by initialisation and pretraining budget.

On the bundled NC Landsat scene (6 bands, 28.5 m) and its land-use classes
(`strata.tif`, 7 classes): for each pretraining budget (CPU minutes, the same for
both objectives), pretrain SSCCL (instance + spatial + semantic) and instance-only;
then for each label fraction and seed, fine-tune random / instance-only / SSCCL with
the same recipe and step budget, keeping the eastern third (`test_region.geojson`)
out of training and validation, and evaluate there. Prints one Markdown table per
budget (mean ± std over seeds) and ends with ``name=value`` lines.

Usage: ``python benchmarks/label_efficiency.py --budgets 2,10 --fractions 0.05,0.2 --seeds 0,1,2 --steps 150``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from geosscl.evaluation import evaluate
from geosscl.finetuning import FinetuneConfig, finetune
from geosscl.training import PretrainConfig, pretrain

DATA = Path(__file__).resolve().parent.parent / "sample_data" / "nc_landsat"
BANDS = [str(DATA / f"lsat7_2000_{b}.tif") for b in (10, 20, 30, 40, 50, 70)]
LABELS = [str(DATA / "strata.tif")]
TEST = str(DATA / "test_region.geojson")
CLASSES = str(DATA / "classes.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="2", help="pretraining budgets, CPU minutes, comma-separated")
    parser.add_argument("--fractions", default="0.05,0.2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=150, help="fine-tuning steps (same for every run)")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="geosscl-label-efficiency-"))
    common = dict(crop_size=args.crop, batch_size=args.batch, num_workers=2, quiet=True)
    final: dict[str, float] = {}
    print(f"# NC Landsat, {args.steps} fine-tuning steps, crop {args.crop}, batch {args.batch}, seeds {seeds}; work in {work}")
    for budget in budgets:
        inits = {"random": "random"}
        for name, weights in (("instance-only", {"instance": 1, "spatial": 0, "semantic": 0}),
                              ("SSCCL", {"instance": 1, "spatial": 1, "semantic": 0.5})):
            run = work / f"pretrain-{name}-{budget:g}min"
            if not (run / "last.ckpt").exists():
                start = time.time()
                pretrain(PretrainConfig(imagery=BANDS, out=str(run), max_steps=None, max_time=budget, weights=weights,
                                        seed=0, **common))
                print(f"# pretrained {name} for {time.time() - start:.0f} s")
            inits[name] = str(run / "last.ckpt")
        print(f"\n## pretraining budget {budget:g} CPU-minutes\n")
        print("| init | " + " | ".join(f"{f:.0%} labels: mIoU | OA" for f in fractions) + " |")
        print("|---|" + "---|---|" * len(fractions))
        for name, init in inits.items():
            cells = []
            for fraction in fractions:
                mious, oas = [], []
                for seed in seeds:
                    out = work / f"{name}-{budget:g}-{fraction:g}-{seed}.safetensors"
                    finetune(FinetuneConfig(imagery=BANDS, labels=LABELS, classes=CLASSES, out=str(out), init=init,
                                            label_fraction=fraction, max_steps=args.steps, holdout_region=TEST,
                                            seed=seed, overwrite=True, **common))
                    scores, _ = evaluate(str(out), BANDS, LABELS, region=TEST)
                    mious.append(100 * scores.miou)
                    oas.append(100 * scores.overall_accuracy)
                final[f"miou_{name}_{budget:g}min_{fraction:g}"] = statistics.mean(mious)
                cells.append(f"{statistics.mean(mious):.1f} ± {statistics.pstdev(mious):.1f} | "
                             f"{statistics.mean(oas):.1f} ± {statistics.pstdev(oas):.1f}")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print()
    for key, value in final.items():
        print(f"{key.replace('-', '_').replace('.', 'p')}={value:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
