"""Linear probes of frozen encoders: what pretraining put into the features, free of fine-tuning noise.

On the bundled NC Landsat scene and its land-use classes (``--scene sen1floods11``: the
Sentinel-2 chip and its water mask), for each encoder (random, or
pretraining checkpoints given as NAME=PATH) and each set of encoder stages, a
multinomial logistic regression is fitted to the features of the labelled pixels of
the label blocks (:func:`geosscl.probing.linear_probe`: the blocks fine-tuning draws
for the same fraction and seed; L2 weight chosen on the validation blocks) and scored
in the test region (``--test``: the eastern third, or a third of the scene in seeded
blocks; see ``scenes.py``). A row of the bands alone is the per-pixel spectral floor.
With ``--evaluate`` each fitted probe is written as a model file (``geosscl probe -o``)
and scored by :func:`geosscl.evaluation.evaluate`, the tiled whole-scene inference that
scores fine-tuned models, so that the two kinds of model compare on one footing.

Prints a Markdown table (mean ± std over seeds, per seed in brackets) and ``name=value`` lines.

Usage: ``python benchmarks/encoder_probe.py SSCCL=run/last.ckpt instance=run2/last.ckpt --fractions 0.05,0.2 --seeds 0,1,2,3,4 --stages 1,auto,1+2``;
``--val-labels same --weight-decay 0.001``: validation labels as few as the training labels, and an L2 weight not chosen
on them; ``--val-labels none --weight-decay 0.001``: no validation region, every label drawn from the rest of the scene.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from geosscl.evaluation import evaluate
from geosscl.finetuning import FinetuneConfig
from geosscl.probing import linear_probe
from scenes import SCENES, TESTS, VAL_LABELS_HELP, class_weights, named_encoders, test_region, val_labels, validation
import stage_sets
from report import print_values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoders", nargs="*", metavar="NAME=CHECKPOINT", help="pretraining checkpoints to probe")
    parser.add_argument("--fractions", default="0.05,0.2")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--stages", default="1", type=stage_sets.parse, help=stage_sets.HELP)
    parser.add_argument("--crop", type=int, default=64, help="label-block side, pixels (fine-tuning's crop size)")
    parser.add_argument("--scene", default="nc", choices=sorted(SCENES),
                        help="labelled scene: the NC Landsat land use, the Sen1Floods11 water chip or the SpaceNet Atlanta "
                             "buildings (the last two with --test blocks)")
    parser.add_argument("--test", default="east", choices=TESTS, help="test region: the eastern third, or seeded blocks")
    parser.add_argument("--val-labels", default="all", type=val_labels, help=VAL_LABELS_HELP)
    parser.add_argument("--weight-decay", default="auto", type=lambda v: v if v == "auto" else float(v),
                        help="the probe's L2 weight: 'auto' (chosen on the validation blocks) or a number")
    parser.add_argument("--class-weights", default=None, type=class_weights,
                        help="class weights of the probe's loss: 'auto' (balanced) or W0,W1,...")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--evaluate", action="store_true",
                        help="score each probe's model file by tiled whole-scene inference (as fine-tuned models are scored)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoders = named_encoders(parser, args.encoders)
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    scratch = tempfile.TemporaryDirectory(prefix="geosscl-probe-")  # removed at exit
    scene = SCENES[args.scene]
    test = test_region(args.test, Path(scratch.name), scene)
    print(f"# {scene.name}, test region {args.test}; label blocks of {args.crop} px; seeds {seeds}; {args.threads} torch thread(s); "
          f"validation labels {args.val_labels}; L2 weight {args.weight_decay}; class weights {args.class_weights or 'none'}; scored {'by evaluate() on the model files' if args.evaluate else 'by the probe'}")
    print("\n| features | stages | " + " | ".join(f"{f:.0%} labels: mIoU | OA" for f in fractions) + " |")
    print("|---|---|" + "---|---|" * len(fractions), flush=True)
    rows = [("bands only", "random", "bands", None)]
    rows += [(name, path, "encoder", stages) for name, path in encoders.items() for stages in args.stages]
    final = {}
    for name, init, features, stages in rows:
        start, cells = time.time(), []
        label = "–" if features == "bands" else stage_sets.label(stages)
        for fraction in fractions:
            mious, oas = [], []
            for seed in seeds:
                model = str(Path(scratch.name) / "probe.safetensors") if args.evaluate else ""
                config = FinetuneConfig(imagery=scene.imagery, labels=scene.labels, classes=scene.classes,
                                        **scene.label_settings, init=init, out=model, overwrite=True,
                                        label_fraction=fraction, **validation(args.val_labels, fraction),
                                        crop_size=args.crop, holdout_region=test, seed=seed, class_weights=args.class_weights)
                scores = linear_probe(config, features=features, device=args.device,
                                      weight_decay=None if args.weight_decay == "auto" else args.weight_decay,
                                      **({"stages": stages} if features == "encoder" else {})).scores
                if args.evaluate:
                    scores, _ = evaluate(model, scene.imagery, scene.labels, region=test, device=args.device,
                                         **scene.label_settings)
                mious.append(100 * scores.miou)
                oas.append(100 * scores.overall_accuracy)
            final[f"probe_miou_{name}_{label}_{fraction:g}"] = statistics.mean(mious)
            cells.append(f"{statistics.mean(mious):.1f} ± {statistics.pstdev(mious):.1f} [{' '.join(f'{m:.1f}' for m in mious)}] | "
                         f"{statistics.mean(oas):.1f} ± {statistics.pstdev(oas):.1f}")
        print(f"| {name} | {label} | " + " | ".join(cells) + f" |  <!-- {time.time() - start:.0f} s -->", flush=True)
    print_values(final)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
