"""Linear probe, then fine-tune (LP-FT), against plain fine-tuning of the whole U-Net, with few labels.

Fine-tuning a pretrained network under a new, randomly initialised head lets the head's first,
random gradients reach the pretrained layers; fitting the head first on the frozen network
(``finetune --linear-probe``) and then fine-tuning everything from that model (``finetune
--init MODEL``) is the usual remedy (Kumar et al., ICLR 2022). For each seed this makes three
models on the same label blocks and scores them on the test region:

  plain  finetune --init INIT                      (STEPS steps)
  lp     finetune --init INIT --linear-probe       (STEPS steps: the head alone)
  lpft   finetune --init lp.safetensors            (STEPS steps, every layer, from lp)

  python benchmarks/lp_ft.py random=random SSCCL=RUN/last.ckpt --seeds 0,1,2,3,4 --threads 1

Models are kept in ``--workdir`` (a rerun scores them without training again). Ends with a
Markdown table (mIoU, mean ± std over the seeds, and per seed) and ``name=value`` lines.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path


from scenes import SCENES, TESTS, start_run, test_region

from geosscl.evaluation import evaluate
from geosscl.finetuning import FinetuneConfig, finetune

KINDS = ("plain", "lp", "lpft")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inits", nargs="+", metavar="NAME=INIT", help="'random' or a pretraining run's last.ckpt")
    parser.add_argument("--fraction", type=float, default=0.05, help="label fraction [default: 0.05]")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=150, help="steps of each stage [default: 150]")
    parser.add_argument("--crop", type=int, default=64, help="crop and label-block side, pixels [default: 64]")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--test", choices=TESTS, default="blocks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir")
    args = parser.parse_args()
    seeds, work = start_run(args, "geosscl-lp-ft-")
    scene = SCENES["nc"]
    test = test_region(args.test, work, scene)
    data = dict(imagery=scene.imagery, labels=scene.labels, classes=scene.classes, **scene.label_settings)
    common = dict(crop_size=args.crop, batch_size=args.batch, num_workers=0 if args.threads == 1 else 2, quiet=True,
                  label_fraction=args.fraction, max_steps=args.steps, holdout_region=test)
    print(f"# NC scene, test region {args.test}, {args.fraction:g} of the labels, {args.steps} steps a stage, crop "
          f"{args.crop}, batch {args.batch}, seeds {seeds}; work in {work}\n", flush=True)
    print("| init | fine-tuning | mIoU | per seed |\n|---|---|---|---|")
    final = {}
    for item in args.inits:
        name, _, init = item.partition("=")
        scores: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for seed in seeds:
            stem = work / f"{name}-{args.fraction:g}-{args.steps}-{seed}"
            paths = {kind: Path(f"{stem}-{kind}.safetensors") for kind in KINDS}
            starts = {"plain": (init, False), "lp": (init, True), "lpft": (str(paths["lp"]), False)}
            for kind in KINDS:  # lp before lpft, which starts from it
                start, head_only = starts[kind]
                if not paths[kind].exists():
                    finetune(FinetuneConfig(**data, **common, out=str(paths[kind]), init=start, seed=seed,
                                            linear_probe=head_only))
                result, _ = evaluate(str(paths[kind]), scene.imagery, scene.labels, region=test, **scene.label_settings)
                scores[kind].append(100 * result.miou)
        for kind in KINDS:
            values = scores[kind]
            final[f"miou_{name}_{kind}"] = statistics.mean(values)
            print(f"| {name} | {kind} | {statistics.mean(values):.1f} ± {statistics.pstdev(values):.1f} | "
                  f"{', '.join(f'{v:.1f}' for v in values)} |", flush=True)
    print()
    for key, value in final.items():
        print(f"{key}={value:.2f}")


if __name__ == "__main__":
    main()
