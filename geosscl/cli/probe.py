"""``geosscl probe``: how well a linear classifier reads the classes from a frozen encoder."""

from __future__ import annotations

import click

from .options import bidx_opt, nodata_opt, int_list, background_class_opt, class_column_opt, classes_opt, every_date_opt, label_area_opt, class_weights_opt, label_nodata_opt, log_to_stderr, overwrite_opt, quiet_opt, stop_on_sigterm


def _stages(ctx: click.Context, param: click.Parameter, value: str) -> list[int] | str:
    if value == "auto":
        return value
    try:
        return int_list(ctx, param, value)
    except click.BadParameter:
        raise click.BadParameter(f"expected 'auto' or comma-separated stages 1 to 5, got {value!r}") from None


def _weight_decay(ctx: click.Context, param: click.Parameter, value: str) -> float | None:
    if value == "auto":
        return None
    try:
        decay = float(value)
    except ValueError:
        decay = -1.0
    if not decay >= 0:
        raise click.BadParameter(f"expected 'auto' or a non-negative number, got {value!r}")
    return decay


@click.command()
@click.argument("imagery", nargs=-1, required=True, metavar="IMAGERY...")
@click.option("--labels", "labels", multiple=True, required=True,
              help="Class rasters, or one vector layer (with --class-column; FILE|layername=NAME for one layer of a GeoPackage). Repeatable.")
@click.option("--holdout-region", type=click.Path(dir_okay=False),
              help="Polygons the probe is scored in, kept out of its training and validation.  "
                   "[default: none; scored in the validation region, optimistically]")
@click.option("--init", default="random", show_default=True, help="RUN_DIR/last.ckpt of geosscl pretrain, a model file of geosscl finetune (its encoder), or 'random'.")
@click.option("--bands-only", is_flag=True, help="Probe the normalised bands alone (the per-pixel spectral floor).")
@click.option("--stages", default="1", show_default=True, callback=_stages, metavar="1,2,...|auto",
              help="Encoder stages of the features, 1 (stride 2) to 5 (stride 32); 'auto': stage 1 alone or all five, "
                   "whichever scores better on the validation blocks.")
@click.option("--weight-decay", default="auto", show_default=True, callback=_weight_decay, metavar="auto|L2",
              help="L2 weight of the classifier; 'auto': chosen on the validation blocks (1e-4 to 0.1). With few "
                   "validation labels a fixed 1e-3 chose better on the bundled scene.")
@classes_opt
@class_column_opt
@label_nodata_opt
@background_class_opt
@label_area_opt
@every_date_opt
@class_weights_opt
@click.option("--label-fraction", type=float, default=1.0, show_default=True,
              help="Share of the training region whose labels are used (whole blocks, as finetune draws them).")
@click.option("--val-label-fraction", type=float, default=1.0, show_default=True,
              help="Share of the validation region whose labels are used (whole blocks), as finetune draws them.")
@click.option("--crop-size", type=int, default=128, show_default=True,
              help="Side of the label blocks, pixels (finetune's crop size, to draw the same blocks).")
@click.option("--val-region", type=click.Path(dir_okay=False), help="Polygons of the validation region (else blocks).")
@click.option("--val-fraction", type=float, default=0.2, show_default=True,
              help="Share of blocks for validation; 0 (with --weight-decay) puts every label into training.")
@click.option("--block-size", type=int, help="Side of split blocks, pixels.  [default: crop size]")
@click.option("--max-pixels", type=int, default=100_000, show_default=True, help="About this many pixels per split, at most.")
@bidx_opt
@nodata_opt
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of splits, label blocks and a random encoder.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the scores as JSON.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Also write the fitted classifier as a model file (for predict, evaluate, export, QGIS).")
@overwrite_opt
@quiet_opt
def probe(imagery, labels, holdout_region, init, bands_only, stages, weight_decay, classes, class_column, label_nodata, background_class, label_area, every_date, class_weights, label_fraction, val_label_fraction, crop_size,
          val_region, val_fraction, block_size, max_pixels, bands, nodata, device, seed, json_path, output, overwrite, quiet):
    """Score a linear classifier on the frozen encoder of --init (no fine-tuning): a quick, repeatable
    measure of a pretraining run, on the labels of IMAGERY, in --holdout-region (without one, in the
    validation region, where the classifier's L2 weight is chosen: an optimistic score).

    With -o, the classifier is kept as a model: with few labels, a classifier of the early stages
    (--stages 1) can segment better than a fine-tuned network."""
    from ..evaluation import format_table, write_json
    from ..finetuning import FinetuneConfig
    from ..output import check_output
    from ..probing import linear_probe

    config = FinetuneConfig(imagery=list(imagery), labels=list(labels), classes=classes,
                            class_column=class_column, label_nodata=label_nodata, background_class=background_class, label_area=label_area, every_date=every_date, class_weights=class_weights,
                            init=init, label_fraction=label_fraction,
                            val_label_fraction=val_label_fraction, crop_size=crop_size,
                            val_region=val_region, holdout_region=holdout_region, val_fraction=val_fraction,
                            block_size=block_size, bands=bands, nodata=nodata, seed=seed, out=output or "", overwrite=overwrite)
    options = dict(features="bands" if bands_only else "encoder", stages=stages, max_pixels=max_pixels, device=device,
                   weight_decay=weight_decay)
    if json_path:  # replaced as evaluate's reports are; the inputs never are
        check_output(json_path, overwrite=True, inputs=config.inputs())
    stop_on_sigterm()
    with log_to_stderr(quiet):
        if quiet:
            result = linear_probe(config, **options)
        else:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          transient=True) as bar:
                tasks: dict[str, int] = {}

                def report(step: str, done: int, total: int) -> None:
                    if step not in tasks:
                        tasks[step] = bar.add_task(step, total=total)
                    bar.update(tasks[step], completed=done, total=total)

                result = linear_probe(config, progress=report, **options)
    if json_path:
        write_json(result.scores, result.class_names, json_path, class_values=result.class_values, init=init, features="bands" if bands_only else "encoder",
                   stages=result.stages, weight_decay=result.weight_decay, depth_penalty=result.depth_penalty,
                   val_miou=result.val_miou, pixels=result.pixels,
                   region=result.region, class_weights=result.class_weights)
    if not quiet:
        if result.region == "validation":
            click.echo("no --holdout-region: scores in the validation region, where the classifier was chosen (optimistic)")
        elif result.region == "training":
            click.echo("no --holdout-region and no validation: scores on the training pixels the classifier was fitted to (not a test)")
        click.echo(format_table(result.scores, result.class_names, result.class_values))
        read = f"stages {','.join(map(str, result.stages))}" if result.stages else "bands only"
        click.echo(f"{read}, L2 weight {result.weight_decay:g}"
                   + (f" x{result.depth_penalty:g} per stage deeper" if len(result.stages) > 1 or max(result.stages, default=1) > 1 else "")
                   + (f" (validation mIoU {100 * result.val_miou:.1f})" if result.val_miou is not None else " (no validation)")
                   + (f", class weights {','.join(f'{w:g}' for w in result.class_weights)}" if result.class_weights else "")
                   + "; labelled pixels: " + ", ".join(f"{k} {v}" for k, v in result.pixels.items()))
        if result.model:
            click.echo(f"model: {result.model}")
