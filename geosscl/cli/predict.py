"""``geosscl predict``: a class map of a scene or mosaic, as a Cloud-Optimised GeoTIFF."""

from __future__ import annotations

import json

import click

from .options import bidx_opt, nodata_opt, int_list, jsonl_progress, log_to_stderr, overwrite_opt, precision_opt, progress_bar, quiet_opt, stop_on_sigterm


def _creation_options(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, str]:
    options = {}
    for item in value:
        name, sep, setting = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--co")
        options[name.upper()] = setting
    return options


@click.command()
@click.argument("scene", nargs=-1, required=True, metavar="SCENE...")
@click.option("-m", "--model", required=True, type=click.Path(dir_okay=False), help="geosscl model file (.safetensors).")
@click.option("-o", "--output", required=True, type=click.Path(), help="Class map to write (COG); with --each, a folder.")
@click.option("--each", is_flag=True,
              help="Segment every file of SCENE on its own (its grid and CRS; per-band files X_B1.TIF, X_B2.TIF, … "
                   "as one scene X): -o and the other outputs are folders, FILE.tif gives FILE_classes.tif; scenes "
                   "whose outputs exist are skipped unless --overwrite.")
@click.option("--tile-size", type=int, help="Tile side fed to the model, pixels (multiple of 32).  [default: the model's]")
@click.option("--overlap", type=int, help="Overlap of neighbouring tiles, pixels.  [default: the model's]")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Tiles per forward pass.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@precision_opt
@bidx_opt
@nodata_opt
@click.option("--probabilities", type=click.Path(), help="Also write class probabilities (one band per class).")
@click.option("--vector", type=click.Path(), help="Also write class polygons (GeoPackage), none of the model's background class "
              "(finetune --background-class).")
@click.option("--preview", type=click.Path(), help="Also write a PNG: scene | classes with legend.")
@click.option("--preview-rgb", default="1,2,3", show_default=True, callback=int_list, metavar="R,G,B",
              help="Positions of red, green, blue among the model's bands, for --preview.")
@click.option("--simplify", type=float, default=1.0, show_default=True,
              help="Polygon simplification tolerance, pixels (0: exact pixel edges).")
@click.option("--co", "creation_options", multiple=True, callback=_creation_options, metavar="NAME=VALUE",
              help="GDAL COG creation option (repeatable), e.g. --co COMPRESS=LZW.")
@click.option("--resample/--no-resample", default=True, show_default=True,
              help="Read at the model's ground sampling distance when the scene's differs.")
@click.option("--progress", "progress_format", type=click.Choice(["bar", "jsonl"]), default="bar", show_default=True,
              help="jsonl: one JSON object per line on stdout, for programs that drive geosscl.")
@overwrite_opt
@quiet_opt
def predict(scene, model, output, each, tile_size, overlap, batch_size, device, precision, bands, nodata, probabilities, vector, preview,
            preview_rgb, simplify,
            creation_options, resample, progress_format, overwrite, quiet):
    """Segment SCENE (GeoTIFFs, a directory, a glob or a VRT; several files are one mosaic, or each its own with
    --each) with MODEL."""
    from ..prediction import predict as run, predict_each

    stop_on_sigterm()
    options = dict(tile_size=tile_size, overlap=overlap, batch_size=batch_size, device=device, precision=precision or "32",
                   bands=bands, nodata=nodata,
                   probabilities=probabilities, vector=vector, preview=preview, preview_rgb=tuple(preview_rgb),
                   creation_options=creation_options, overwrite=overwrite,
                   resample=resample, simplify=simplify)
    with log_to_stderr(quiet):
        if each:
            if progress_format == "jsonl":
                made = predict_each(list(scene), model, output, progress=jsonl_progress, **options)
                click.echo(json.dumps({"outputs": made}))
            elif quiet:
                predict_each(list(scene), model, output, **options)
            else:
                with progress_bar("segmenting files") as progress:
                    made = predict_each(list(scene), model, output, progress=progress, **options)
                click.echo(f"{len(made)} class map(s) in {output}")
        elif progress_format == "jsonl":
            run(list(scene), model, output, progress=jsonl_progress, **options)
            click.echo(json.dumps({"output": output, "probabilities": probabilities, "vector": vector, "preview": preview}))
        elif quiet:
            run(list(scene), model, output, **options)
        else:
            with progress_bar("segmenting blocks") as progress:
                run(list(scene), model, output, progress=progress, **options)
            click.echo(f"wrote {output}" + "".join(f", {p}" for p in (probabilities, vector, preview) if p))
