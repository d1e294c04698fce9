"""``geosscl suggest``: the tiles to label next, where a model is least sure."""

from __future__ import annotations

import json

import click

from .options import (background_class_opt, bidx_opt, class_column_opt, jsonl_progress, label_area_opt, label_nodata_opt,
                      log_to_stderr, nodata_opt, overwrite_opt, precision_opt, progress_bar, quiet_opt, stop_on_sigterm)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("imagery", nargs=-1, required=True, metavar="IMAGERY...")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="GeoPackage to write (layer 'suggestions': rank, uncertainty, predicted class, share with input).")
@click.option("-n", "--count", type=click.IntRange(min=1), default=20, show_default=True, help="Tiles to suggest.")
@click.option("--tile-size", type=click.IntRange(min=1), metavar="PX",
              help="Side of the tiles, pixels of the scene as read (at the model's GSD).  [default: the model's tile "
                   "size, the crop it was trained on]")
@click.option("--spacing", type=click.IntRange(min=0), default=1, show_default=True,
              help="Keep suggested tiles this many tiles apart, and as far from tiles holding --labels (0: neighbours "
                   "allowed), so labels spread over the scene.")
@click.option("--min-valid", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True,
              help="Least share of a tile with input: tiles on the scene's edge or in its nodata are skipped.")
@click.option("--labels", "labels", multiple=True,
              help="The labels there are already (class rasters, or one vector layer with --class-column): tiles "
                   "holding any labelled pixel are skipped. Repeatable.")
@class_column_opt
@label_nodata_opt
@background_class_opt
@label_area_opt
@click.option("--region", type=click.Path(dir_okay=False), help="Polygons to suggest inside (a tile's centre lies in them).")
@click.option("--exclude", type=click.Path(dir_okay=False),
              help="Polygons to keep free of suggestions, e.g. the test region: tiles touching them are skipped.")
@bidx_opt
@nodata_opt
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@precision_opt
@click.option("--batch-size", type=int, default=8, show_default=True, help="Tiles per forward pass.")
@click.option("--progress", "progress_format", type=click.Choice(["bar", "jsonl"]), default="bar", show_default=True,
              help="jsonl: one JSON object per line on stdout (blocks done, then what was written), for programs.")
@overwrite_opt
@quiet_opt
def suggest(model, imagery, output, count, tile_size, spacing, min_valid, labels, class_column, label_nodata,
            background_class, label_area, region, exclude, bands, nodata, device, precision, batch_size, progress_format,
            overwrite, quiet):
    """Write the COUNT tiles of IMAGERY where MODEL is least sure (highest entropy of its class probabilities),
    free of --labels and spread apart: the tiles to label next, then fine-tune again with --init MODEL."""
    from ..suggestions import suggest as run

    stop_on_sigterm()
    options = dict(count=count, tile_size=tile_size, spacing=spacing, min_valid=min_valid, labels=list(labels) or None,
                   class_column=class_column, label_nodata=label_nodata, background_class=background_class,
                   label_area=label_area, region=region, exclude=exclude, bands=bands, nodata=nodata, device=device,
                   precision=precision or "32", batch_size=batch_size, overwrite=overwrite)
    with log_to_stderr(quiet):
        if progress_format == "jsonl":
            frame = run(model, list(imagery), output, progress=jsonl_progress, **options)
        elif quiet:
            frame = run(model, list(imagery), output, **options)
        else:
            with progress_bar("scoring tiles") as progress:
                frame = run(model, list(imagery), output, progress=progress, **options)
    if progress_format == "jsonl":
        click.echo(json.dumps({"output": output, "tiles": len(frame)}))
    elif not quiet:
        centres = frame.geometry.centroid
        click.echo(f"{'rank':>4}  {'uncertainty':>11}  {'predicted':<16} centre")
        for row, centre in zip(frame.itertuples(), centres):
            click.echo(f"{row.rank:>4}  {row.uncertainty:>11.3f}  {row.predicted:<16} {centre.x:.8g}, {centre.y:.8g}")
        click.echo(f"wrote {len(frame)} tile(s) to {output}")
