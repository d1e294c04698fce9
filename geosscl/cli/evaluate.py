"""``geosscl evaluate``, ``info`` and ``export``: scores of a model file, what it holds, and its ONNX form."""

from __future__ import annotations

import json

import click

from .options import background_class_opt, nodata_opt, class_column_opt, label_area_opt, jsonl_progress, label_nodata_opt, log_to_stderr, overwrite_opt, precision_opt, progress_bar, quiet_opt, stop_on_sigterm


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("imagery", nargs=-1, required=True, metavar="IMAGERY...")
@click.option("--labels", "labels", multiple=True, required=True, help="Class rasters, or one vector layer (FILE|layername=NAME for one layer of a GeoPackage). Repeatable.")
@class_column_opt
@label_nodata_opt
@background_class_opt
@label_area_opt
@click.option("--region", type=click.Path(dir_okay=False), help="Polygons to evaluate inside (e.g. the test region).")
@click.option("--held-out", is_flag=True,
              help="Score only the labels outside the ground MODEL was trained and validated on (which finetune and "
                   "probe record in the model file).  [default: every label; a warning says how many lie there]")
@nodata_opt
@click.option("--every-date", is_flag=True,
              help="Where files of the imagery cover one place (dates of a tile), score each of them with the same "
                   "labels, and all of them pooled (each labelled pixel once per date).  [default: the first file in "
                   "path order is read]")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the scores as JSON.")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), help="Write the confusion matrix as PNG.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@precision_opt
@click.option("--batch-size", type=int, default=8, show_default=True, help="Tiles per forward pass.")
@click.option("--progress", "progress_format", type=click.Choice(["bar", "jsonl"]), default="bar", show_default=True,
              help="jsonl: one JSON object per line on stdout (blocks done, then the scores), for programs.")
@quiet_opt
def evaluate(model, imagery, labels, class_column, label_nodata, background_class, label_area, region, held_out, nodata,
             every_date, json_path, png_path, device, precision, batch_size, progress_format, quiet):
    """Score MODEL on the labelled pixels of IMAGERY (mIoU, IoU and F1 per class, OA, kappa)."""
    from ..evaluation import evaluate as run, evaluate_each_date, format_dates, format_table, plot_confusion, scores_dict, write_json
    from ..output import check_output

    stop_on_sigterm()
    for report in (json_path, png_path):
        if report:  # reports are replaced, as every rerun would; the inputs never are
            check_output(report, overwrite=True, inputs=[model, *imagery, *labels, region, label_area])
    options = dict(class_column=class_column, region=region, held_out=held_out, label_nodata=label_nodata, background_class=background_class,
                   label_area=label_area, device=device, batch_size=batch_size, nodata=nodata, precision=precision or "32")

    def score(progress=None):
        if every_date:
            return evaluate_each_date(model, list(imagery), list(labels), progress=progress, **options)
        scores, info = run(model, list(imagery), list(labels), progress=progress, **options)
        return scores, None, info

    with log_to_stderr(quiet):
        if progress_format == "jsonl":
            scores, dates, info = score(jsonl_progress)
        elif quiet:
            scores, dates, info = score()
        else:
            with progress_bar("scoring blocks") as progress:
                scores, dates, info = score(progress)
    extra = {} if dates is None else {"dates": [{"file": f, **s.__dict__} for f, s in dates.items()]}
    table = format_table(scores, info.class_names, info.class_values)
    if dates is not None:
        table = f"{format_dates(scores, dates)}\n\nevery date, pooled:\n{table}"
    if json_path:
        write_json(scores, info.class_names, json_path, class_values=info.class_values, **extra)
    if png_path:
        plot_confusion(scores, info, png_path)
    if progress_format == "jsonl":
        click.echo(json.dumps(scores_dict(scores, info.class_names, info.class_values, json=json_path, png=png_path, table=table, **extra),
                              allow_nan=False))
    elif not quiet:
        click.echo(table)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
def info(model):
    """Print the metadata of a geosscl MODEL file, or what a pretraining checkpoint (RUN/last.ckpt) says of its
    run, as JSON."""
    from dataclasses import asdict

    if model.lower().endswith(".ckpt"):
        from ..training import checkpoint_info

        click.echo(json.dumps(checkpoint_info(model), indent=1, default=str))
        return

    from ..ground import KEY, summary
    from ..modelfile import read_info

    data = asdict(read_info(model))
    data["provenance"] = {k: v for k, v in data["provenance"].items() if k != "settings"}
    if KEY in data["provenance"]:
        data["provenance"][KEY] = summary(data["provenance"][KEY], data["crs"], model)
    data.pop("crs")
    click.echo(json.dumps(data, indent=1))


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset version.")
@overwrite_opt
@quiet_opt
def export(model, output, opset, overwrite, quiet):
    """Write MODEL as ONNX, with its metadata and the keys Deepness reads."""
    from ..onnx import export_onnx

    export_onnx(model, output, overwrite=overwrite, opset=opset)
    if not quiet:
        click.echo(f"wrote {output}")
