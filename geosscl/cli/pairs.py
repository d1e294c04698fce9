"""``geosscl pairs``: draw overlapping view pairs from a mosaic and show them."""

from __future__ import annotations

import os

import click

from .options import bidx_opt, crs_opt, nodata_opt, float_pair, imagery_arg, output_opt, overwrite_opt, quiet_opt, res_opt, seed_opt


@click.command()
@imagery_arg
@output_opt
@click.option("--count", type=click.IntRange(1, 64), default=6, show_default=True, help="Number of pairs.")
@click.option("--view-size", type=click.IntRange(1), default=128, show_default=True, help="Side of each view, pixels.")
@click.option("--overlap", callback=float_pair, default="0.3,0.8", show_default=True, metavar="LO,HI",
              help="Range of intersection area over the smaller view's area.")
@click.option("--scale", callback=float_pair, default="0.75,1.5", show_default=True, metavar="LO,HI",
              help="Range of the factor applied to each view's side in map units.")
@click.option("--across-dates", is_flag=True,
              help="Where files overlap (dates of one place), draw the two views of a pair from two of them.")
@click.option("--max-nodata", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Reject views with a larger nodata fraction.")
@bidx_opt
@nodata_opt
@crs_opt
@res_opt
@seed_opt
@overwrite_opt
@quiet_opt
def pairs(imagery, output, count, view_size, overlap, scale, across_dates, max_nodata, bands, nodata, crs, res, seed, overwrite, quiet):
    """Draw view pairs from IMAGERY and write a PNG of them, overlaps outlined.

    IMAGERY is GeoTIFF files, directories or glob patterns, read as one mosaic.
    """
    import torch
    from samplers import OverlappingPairSampler

    from ..data import Mosaic, PairDataset
    from ..output import atomic_output, check_output
    from ..preview import plot_pairs

    check_output(output, overwrite, imagery)
    mosaic = Mosaic(imagery, bands=bands, crs=crs, res=res, nodata=nodata)
    if across_dates:
        mosaic.require_dates("across-dates")
    sampler = OverlappingPairSampler(
        mosaic, view_size, overlap=overlap, scale=scale, length=count, max_nodata=max_nodata,
        generator=torch.Generator().manual_seed(seed), across_files=across_dates,
    )
    drawn = list(sampler)
    views = PairDataset(mosaic, view_size).views(drawn)
    with atomic_output(output, overwrite) as tmp:
        plot_pairs(views, tmp, title=f"{len(drawn)} pairs, overlap {overlap}, scale {scale}, seed {seed}"
                   + (", views from two dates" if across_dates else ""))
    if not quiet:
        click.echo(str(mosaic))
        for i, pair in enumerate(drawn):
            a, b = pair.box_a, pair.box_b
            dates = ""
            if across_dates:
                dates = f", from {os.path.basename(pair.file_a)} and {os.path.basename(pair.file_b)}"
            click.echo(
                f"pair {i}: overlap {pair.overlap_fraction:.3f}, views {a[2] - a[0]:.6g} and "
                f"{b[2] - b[0]:.6g} map units wide{dates}"
            )
        click.echo(f"wrote {output}")
