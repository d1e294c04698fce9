"""Label efficiency: mIoU after fine-tuning with few labels, by initialisation and pretraining budget.

On the bundled NC Landsat scene (6 bands, 28.5 m) and its land-use classes
(`strata.tif`, 7 classes). Each objective (SSCCL = instance + spatial + semantic, and
instance-only) is pretrained once; the run is resumed from one budget to the next, so
the budgets are points on one training curve (wall-clock minutes with ``--threads``
torch threads; Lightning's timer carries over a resume). At every budget, for each
label fraction and seed, random / instance-only / SSCCL initialisations are
fine-tuned with the same recipe and step budget, and linearly probed (encoder and
decoder frozen, head trained); with ``--encoder-probe`` each encoder is also read by
the frozen-encoder probe (:func:`geosscl.probing.linear_probe`, ``geosscl probe``) on
label blocks of ``--label-block`` pixels. The test region (``--test``: the eastern third, or a
third of the scene in seeded blocks; see ``scenes.py``) is kept out of training and
validation, and evaluated.

Prints one Markdown table per budget (mean ± std over seeds), the pretraining steps
each objective reached (equal wall-clock is not equal steps), then the budget curve:
per label fraction, every reading of every objective against the budget, beside the
random encoder's; ends with ``name=value`` lines.

Usage: ``python benchmarks/label_efficiency.py --budgets 5,15,40 --fractions 0.05,0.2 --seeds 0,1,2 --steps 150``;
the budget curve of the stage-1 probe alone: ``--steps 0 --probe-steps 0 --encoder-probe 1 --label-block 32``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from geosscl.evaluation import evaluate
from geosscl.finetuning import FinetuneConfig, finetune
from geosscl.probing import linear_probe
from geosscl.training import PretrainConfig, load_checkpoint, pretrain
import stage_sets
from scenes import SCENES, TESTS, VAL_LABELS_HELP, Scene, class_weights, test_region, val_labels, validation
from report import print_values

OBJECTIVES = {
    "instance-only": {"instance": 1, "spatial": 0, "semantic": 0},
    "SSCCL": {"instance": 1, "spatial": 1, "semantic": 0.5},
}


class Reading(NamedTuple):
    """One way of scoring an initialisation: fine-tuned for ``steps`` (the head alone if ``head_only``),
    or, with ``steps`` None, read by the frozen-encoder probe of ``stages`` (a list, or ``"auto"``)."""

    suffix: str  # after the init's name in the tables
    key: str  # in the name=value keys
    steps: int | None = None
    head_only: bool = False
    stages: Sequence[int] | str = (1,)


def pretrain_to(run: Path, budget: float, weights: dict[str, float], common: dict, steps: int | None = None,
                scene: Scene = SCENES["nc"]) -> Path:
    """Train (or resume) ``run`` until ``budget`` minutes in all (or ``steps``, if sooner); keep a copy of that checkpoint."""
    kept = run / (f"budget-{budget:g}min.ckpt" if steps is None else f"steps-{steps}.ckpt")
    if kept.exists():
        return kept
    last = run / "last.ckpt"
    # With a step budget the time limit stays set, so that the run's clock is saved and carries on.
    pretrain(PretrainConfig(imagery=scene.imagery, out=str(run), max_steps=steps, max_time=budget, weights=weights, seed=0,
                            resume=str(last) if last.exists() else None, **common))
    shutil.copyfile(last, kept)
    return kept


def steps_of(checkpoint: Path) -> int:
    return load_checkpoint(str(checkpoint))["global_step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="2", help="pretraining budgets, minutes, increasing, comma-separated")
    parser.add_argument("--fractions", default="0.05,0.2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=150, help="fine-tuning steps (same for every run; 0: no fine-tuned rows)")
    parser.add_argument("--probe-steps", type=int, default=150, help="linear-probe steps (0: no probe rows)")
    parser.add_argument("--crop", type=int, default=64, help="pretraining and fine-tuning crop, pixels")
    parser.add_argument("--encoder-probe", default="", type=stage_sets.parse, metavar="STAGES",
                        help="also read each encoder by the frozen-encoder probe; " + stage_sets.HELP)
    parser.add_argument("--label-block", type=int, help="label-block side of the encoder probe, pixels [default: --crop]")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dense-stride", type=int, default=16, help="decoder stage of SSCCL's dense features (4, 8, 16)")
    parser.add_argument("--jitter", default="band", choices=["band", "image", "none"],
                        help="pretraining brightness/contrast jitter: per band, per image, none")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="pretraining objectives to compare")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--workdir", default=None, help="reused between invocations: finished budgets are kept")
    parser.add_argument("--pretrained-lr-factor", type=float, default=1.0,
                        help="fine-tuning learning rate of pretrained layers, times that of new ones")
    parser.add_argument("--warmup-steps", type=int, default=0, help="fine-tuning warm-up steps")
    parser.add_argument("--freeze-encoder", action="store_true",
                        help="fine-tune the decoder and head only (the encoder and its batch-norm statistics as loaded)")
    parser.add_argument("--class-weights", default=None, type=class_weights,
                        help="class weights of fine-tuning and the encoder probe: 'auto' (balanced) or W0,W1,...")
    parser.add_argument("--scene", default="nc", choices=sorted(SCENES),
                        help="labelled scene: the NC Landsat land use, the Sen1Floods11 water chip or the SpaceNet Atlanta "
                             "buildings (the last two with --test blocks)")
    parser.add_argument("--test", default="east", choices=TESTS, help="test region: the eastern third, or seeded blocks")
    parser.add_argument("--val-labels", default="all", type=val_labels, help=VAL_LABELS_HELP)
    parser.add_argument("--precision", default="32", choices=["32", "bf16"],
                        help="fine-tuning precision (geosscl finetune --precision); pretraining stays float32")
    parser.add_argument("--equal-steps", action="store_true",
                        help="also fine-tune instance-only from the step count SSCCL reached at each budget")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    unknown = set(args.objectives.split(",")) - set(OBJECTIVES)
    if unknown:
        parser.error(f"--objectives: unknown {', '.join(sorted(unknown))}; choose from {', '.join(OBJECTIVES)}")
    readings = ([Reading("", "", steps=args.steps)] if args.steps else []) + \
        ([Reading(" (probe)", "_probe", steps=args.probe_steps, head_only=True)] if args.probe_steps else [])
    readings += [Reading(f" (encoder probe, stages {stage_sets.label(s)})", f"_stages_{stage_sets.label(s)}", stages=s)
                 for s in args.encoder_probe]
    if not readings:
        parser.error("nothing to measure: give --steps, --probe-steps or --encoder-probe")
    budgets = sorted(float(b) for b in args.budgets.split(","))
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="geosscl-label-efficiency-"))
    work.mkdir(parents=True, exist_ok=True)
    scene = SCENES[args.scene]
    test = test_region(args.test, work, scene)
    data = dict(imagery=scene.imagery, labels=scene.labels, classes=scene.classes, **scene.label_settings)
    common = dict(crop_size=args.crop, batch_size=args.batch, num_workers=0 if args.threads == 1 else 2, quiet=True)
    pretrain_common = dict(common, dense_stride=args.dense_stride, jitter=args.jitter)  # instance-only has no dense branch: same run
    final: dict[str, float] = {}
    print(f"# {scene.name}, {args.threads} torch thread(s); fine-tuning: {args.steps} steps, probe: {args.probe_steps} "
          f"steps, crop {args.crop}, batch {args.batch}, seeds {seeds}, SSCCL dense stride {args.dense_stride}, jitter {args.jitter}, "
          f"pretrained-layer lr x{args.pretrained_lr_factor:g}, warm-up {args.warmup_steps} steps, "
          f"{'encoder frozen, ' if args.freeze_encoder else ''}precision {args.precision}, class weights {args.class_weights or 'none'}, test region {args.test}, validation labels {args.val_labels}, "
          f"encoder probe stages {','.join(map(stage_sets.label, args.encoder_probe)) or 'none'} on {args.label_block or args.crop} px label blocks; "
          f"work in {work}", flush=True)
    recipe = "".join([f"-lrf{args.pretrained_lr_factor:g}" if args.pretrained_lr_factor != 1 else "",
                      f"-warmup{args.warmup_steps}" if args.warmup_steps else "", "-frozen" if args.freeze_encoder else "",
                      "-blocks" if args.test == "blocks" else "",
                      f"-val{args.val_labels}" if args.val_labels != "all" else "",
                      f"-{args.scene}" if args.scene != "nc" else "",
                      "-bf16" if args.precision == "bf16" else "",
                      f"-cw{args.class_weights if isinstance(args.class_weights, str) else ','.join(f'{w:g}' for w in args.class_weights)}"
                      if args.class_weights else ""])  # keeps cached models apart
    curve: dict[tuple[str, float], dict[tuple[str, float | None], float]] = {}  # (reading, fraction) -> {(init, budget): mean mIoU}
    pairs: dict[tuple[str, float], int] = {}  # (objective, budget) -> pretraining pairs
    for budget in budgets:
        inits = {"random": "random"}
        tags = {"random": "random"}  # file-name stem of each init's fine-tuned models
        reached = []
        # SSCCL first: with --equal-steps, instance-only stops on its way at SSCCL's step count.
        for name in sorted(args.objectives.split(","), key=lambda n: n != "SSCCL"):
            weights = OBJECTIVES[name]
            start = time.time()
            run = work / f"pretrain-{name}{'-' + args.scene if args.scene != 'nc' else ''}"
            if args.equal_steps and name != "SSCCL" and "SSCCL" in inits:
                target = steps_of(Path(inits["SSCCL"]))
                last = run / "last.ckpt"
                if (run / f"steps-{target}.ckpt").exists() or not last.exists() or steps_of(last) < target:
                    inits[f"{name} @ SSCCL steps"] = str(pretrain_to(run, budget, weights, pretrain_common, steps=target, scene=scene))
                    tags[f"{name} @ SSCCL steps"] = f"{name}-{target}steps"
                else:
                    print(f"# {name}: already past {target} steps; no equal-step row", flush=True)
            inits[name] = str(pretrain_to(run, budget, weights, pretrain_common, scene=scene))
            tags[name] = f"{name}-{budget:g}"
            steps = steps_of(Path(inits[name]))
            reached.append(f"{name} {steps} steps")
            pairs[name, budget] = steps * args.batch
            final[f"pretrain_steps_{name}_{budget:g}min"] = steps
            print(f"# {name}: pretrained to {budget:g} min ({time.time() - start:.0f} s in this invocation)", flush=True)
        print(f"\n## pretraining budget {budget:g} minutes ({', '.join(reached)})\n")
        print("| init | " + " | ".join(f"{f:.0%} labels: mIoU | OA" for f in fractions) + " |")
        print("|---|" + "---|---|" * len(fractions), flush=True)
        for reading in readings:
            for name, init in inits.items():
                if name == "random" and budget != budgets[0]:
                    continue  # does not depend on the budget: measured once
                cells = []
                for fraction in fractions:
                    mious, oas = [], []
                    for seed in seeds:
                        n = reading.steps
                        if n is None:  # the encoder probe: deterministic and quick, so not cached
                            scores = linear_probe(FinetuneConfig(
                                **data, init=init, label_fraction=fraction,
                                **validation(args.val_labels, fraction),
                                crop_size=args.label_block or args.crop, holdout_region=test, seed=seed,
                                class_weights=args.class_weights), stages=reading.stages).scores
                        else:
                            out = work / f"{tags[name]}{recipe}{'-probe' if reading.head_only else ''}{f'-{n}steps' if n != 150 else ''}-{fraction:g}-{seed}.safetensors"
                            if not out.exists():
                                finetune(FinetuneConfig(
                                    **data, out=str(out), init=init,
                                    label_fraction=fraction, **validation(args.val_labels, fraction),
                                    linear_probe=reading.head_only, warmup_steps=args.warmup_steps,
                                    freeze_encoder=args.freeze_encoder,
                                    pretrained_lr_factor=args.pretrained_lr_factor, max_steps=n, holdout_region=test,
                                    class_weights=args.class_weights, precision=args.precision,
                                    seed=seed, **common,
                                ))
                            scores, _ = evaluate(str(out), scene.imagery, scene.labels, region=test,
                                                 **scene.label_settings)
                        mious.append(100 * scores.miou)
                        oas.append(100 * scores.overall_accuracy)
                    final[f"miou_{name}{reading.key}_{budget:g}min_{fraction:g}"] = statistics.mean(mious)
                    curve.setdefault((reading.suffix, fraction), {})[name, None if name == "random" else budget] = statistics.mean(mious)
                    cells.append(f"{statistics.mean(mious):.1f} ± {statistics.pstdev(mious):.1f} | "
                                 f"{statistics.mean(oas):.1f} ± {statistics.pstdev(oas):.1f}")
                print(f"| {name}{reading.suffix} | " + " | ".join(cells) + " |", flush=True)
    print_budget_curve(curve, pairs, budgets, args.objectives.split(","), len(seeds))
    print_values(final)


def print_budget_curve(curve: dict[tuple[str, float], dict[tuple[str, float | None], float]],
                       pairs: dict[tuple[str, float], int], budgets: list[float], objectives: list[str], n_seeds: int) -> None:
    """One table per reading and label fraction: each objective's mIoU against the budget, and its margin over random."""
    for (suffix, fraction), scores in curve.items():
        random = scores["random", None]
        print(f"\n## budget curve{suffix}, {fraction:.0%} labels: mean mIoU over {n_seeds} seeds, random init {random:.1f}\n")
        print("| budget, minutes | " + " | ".join(f"{o}: pairs | mIoU | minus random" for o in objectives) + " |")
        print("|---|" + "---|---|---|" * len(objectives))
        for budget in budgets:
            cells = [f"{pairs[o, budget]:,} | {scores[o, budget]:.1f} | {scores[o, budget] - random:+.1f}" for o in objectives]
            print(f"| {budget:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
