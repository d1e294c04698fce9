"""``geosscl finetune``: a segmenter from imagery and a few labels."""

from __future__ import annotations

import json

import click

from .options import bidx_opt, nodata_opt, background_class_opt, class_column_opt, classes_opt, every_date_opt, label_area_opt, class_weights_opt, jsonl_progress, label_nodata_opt, log_to_stderr, overwrite_opt, precision_opt, quiet_opt


@click.command()
@click.argument("imagery", nargs=-1, required=True, metavar="IMAGERY...")
@click.option("--labels", "labels", multiple=True, required=True,
              help="Class rasters, or one vector layer (with --class-column; FILE|layername=NAME for one layer of a GeoPackage). Repeatable.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Model file to write (.safetensors).")
@classes_opt
@class_column_opt
@label_nodata_opt
@background_class_opt
@label_area_opt
@every_date_opt
@click.option("--init", default="random", show_default=True, help="RUN_DIR/last.ckpt of geosscl pretrain, a model file of geosscl finetune to train further (more labels, another place), or 'random'.")
@click.option("--label-fraction", type=float, default=1.0, show_default=True,
              help="Share of the training region whose labels are used (whole blocks).")
@click.option("--val-label-fraction", type=float, default=1.0, show_default=True,
              help="Share of the validation region whose labels are used (whole blocks): with --label-fraction, "
                   "to simulate few labels without a fully labelled validation region.")
@click.option("--freeze-encoder", is_flag=True, help="Train the decoder and head only.")
@click.option("--linear-probe", is_flag=True,
              help="Train the segmentation head only (encoder and decoder frozen): measures the representation.")
@click.option("--pretrained-lr-factor", type=float, default=1.0, show_default=True,
              help="Learning rate of the layers the --init run trained, as a multiple of the others' rate.")
@click.option("--warmup-steps", type=int, default=0, show_default=True,
              help="Steps over which the learning rates rise linearly to their values.")
@class_weights_opt
@click.option("--crop-size", type=int, default=128, show_default=True, help="Training crop side, pixels (multiple of 32).")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--max-steps", type=int, default=None, help="Stop after N steps.  [default: 500]")
@click.option("--max-time", type=float, metavar="MINUTES", help="Stop after this many minutes.")
@click.option("--val-region", type=click.Path(dir_okay=False), help="Polygons of the validation region (else blocks).")
@click.option("--holdout-region", type=click.Path(dir_okay=False),
              help="Polygons kept out of training and validation (the test region for evaluate).")
@click.option("--val-fraction", type=float, default=0.2, show_default=True, help="Share of blocks for validation.")
@click.option("--block-size", type=int, help="Side of split blocks, pixels.  [default: crop size]")
@bidx_opt
@nodata_opt
@click.option("--accelerator", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="Where to train (auto: the GPU if there is one).")
@click.option("--devices", default="auto", show_default=True, help="Devices (a number or 'auto').")
@precision_opt
@click.option("--num-workers", type=int, default=2, show_default=True, help="DataLoader workers.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of splits, label blocks and training.")
@click.option("--progress", "progress_format", type=click.Choice(["bar", "jsonl"]), default="bar", show_default=True,
              help="jsonl: one JSON object per line on stdout, for programs that drive geosscl.")
@overwrite_opt
@quiet_opt
def finetune(imagery, labels, out, classes, class_column, label_nodata, background_class, label_area, every_date, init, label_fraction, val_label_fraction, freeze_encoder, linear_probe, pretrained_lr_factor, warmup_steps,
             class_weights, crop_size, batch_size,
             max_steps, max_time, val_region, holdout_region, val_fraction, block_size, bands, nodata, accelerator, devices, precision, num_workers, seed, progress_format, overwrite, quiet):
    """Fine-tune a segmenter on IMAGERY with --labels; write one model file."""
    from ..finetuning import FinetuneConfig, finetune as run

    if max_steps is None and max_time is None:
        max_steps = 500
    with log_to_stderr(quiet):
        path = run(FinetuneConfig(
            imagery=list(imagery), labels=list(labels), out=out, classes=classes, class_column=class_column, label_nodata=label_nodata, background_class=background_class, label_area=label_area, every_date=every_date, init=init,
            label_fraction=label_fraction, val_label_fraction=val_label_fraction, freeze_encoder=freeze_encoder, linear_probe=linear_probe,
            pretrained_lr_factor=pretrained_lr_factor, warmup_steps=warmup_steps, class_weights=class_weights, crop_size=crop_size, batch_size=batch_size,
            max_steps=max_steps, max_time=max_time, val_region=val_region, holdout_region=holdout_region, val_fraction=val_fraction,
            block_size=block_size, bands=bands, nodata=nodata, accelerator=accelerator, devices=int(devices) if str(devices).isdigit() else devices,
            precision=precision or "32", num_workers=num_workers, seed=seed, overwrite=overwrite, quiet=quiet,
        ), progress=jsonl_progress if progress_format == "jsonl" else None)
    if progress_format == "jsonl":
        click.echo(json.dumps({"output": path}))
    elif not quiet:
        from ..modelfile import read_info

        # The score that chose the weights: of the validation labels only, never of held-out ground.
        validation = read_info(path).provenance["validation"]
        miou, oa = (f"{100 * v:.1f}" if isinstance(v, (int, float)) and v == v else "n/a"
                    for v in (validation["miou"], validation["overall_accuracy"]))
        # The progress bar ends on the last validation; the weights are those of the best, which can be another.
        history = [v for v in validation.get("history", []) if isinstance(v, (int, float)) and v == v]
        best = f", the best of {len(history)} validations" if len(history) > 1 else ""
        last = f"; the last scored {100 * history[-1]:.1f}" if best and f"{100 * history[-1]:.1f}" != miou else ""
        click.echo(f"wrote {path} (validation mIoU {miou}, OA {oa}{best}{last})")
