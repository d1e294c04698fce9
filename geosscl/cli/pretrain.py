"""``geosscl pretrain``: SSCCL pretraining on unlabelled imagery."""

from __future__ import annotations

import json
import os

import click

from .options import bidx_opt, crs_opt, nodata_opt, float_pair, int_list, jsonl_progress, precision_opt, quiet_opt, res_opt


@click.command()
@click.argument("imagery", nargs=-1, metavar="IMAGERY...")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run directory (created).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file of options; flags override it.")
@bidx_opt
@nodata_opt
@crs_opt
@res_opt
@click.option("--rgb", is_flag=True, default=None, help="Bands 1-3 are red, green, blue (enables grayscale augmentation).")
@click.option("--jitter", type=click.Choice(["band", "image", "none"]),
              help="Brightness/contrast jitter: drawn per band, once per image for all bands, or none.  [default: band]")
@click.option("--crop-size", type=int, help="Side of each view, pixels (multiple of 32).  [default: 128]")
@click.option("--overlap", callback=float_pair, metavar="LO,HI", help="Overlap fraction range.  [default: 0.3,0.8]")
@click.option("--scale", callback=float_pair, metavar="LO,HI", help="Scale factor range of each view.  [default: 0.75,1.5]")
@click.option("--across-dates", is_flag=True, default=None,
              help="Where files overlap (dates of one place), draw the two views of a pair from two of them.")
@click.option("--max-nodata", type=click.FloatRange(0, 1, max_open=True), metavar="F",
              help="Reject views with a larger nodata fraction (swath edges; clouds masked on one date reject that "
                   "date's views only).  [default: keep every view]")
@click.option("--batch-size", type=int, help="Pairs per batch and device.  [default: 32]")
@click.option("--max-steps", type=int, help="Stop after N optimiser steps.  [default: 1000]")
@click.option("--max-time", type=float, metavar="MINUTES", help="Stop after this many minutes.")
@click.option("--arch", type=click.Choice(["unet", "deeplabv3plus"]), help="Decoder.  [default: unet]")
@click.option("--encoder", type=click.Choice(["resnet18", "resnet34", "resnet50", "mobilenet_v2"]),
              help="Encoder.  [default: resnet18]")
@click.option("--decoder-channels", metavar="256,128,64,32,16", callback=int_list, help="U-Net decoder widths, deepest first.")
@click.option("--dense-stride", type=int, help="Decoder stride of the dense features.  [default: 16 for unet, 4 for deeplabv3plus]")
@click.option("--weights", "weights_text", metavar="instance=1,spatial=1,semantic=0.5",
              help="Loss weights; 0 switches a term off.")
@click.option("--num-workers", type=int, help="DataLoader workers.  [default: 2]")
@click.option("--accelerator", type=click.Choice(["auto", "cpu", "gpu"]), help="Where to train.  [default: auto: the GPU if there is one]")
@click.option("--devices", help="Devices per node (a number or 'auto').  [default: auto]")
@click.option("--strategy", help="Lightning strategy, e.g. ddp.  [default: auto]")
@click.option("--num-nodes", type=int, help="Nodes.  [default: 1]")
@precision_opt
@click.option("--resume", type=click.Path(exists=True, dir_okay=False),
              help="Continue from RUN_DIR/last.ckpt, in RUN_DIR (or --out) with RUN_DIR/config.yaml's settings.")
@click.option("--seed", type=int, help="Random seed.  [default: 0]")  # no default: must not override --config
@click.option("--progress", "progress_format", type=click.Choice(["bar", "jsonl"]), default="bar", show_default=True,
              help="jsonl: one JSON object per line on stdout (steps, or seconds of --max-time, done), then the run "
                   "directory and its last.ckpt; for programs that drive geosscl.")
@quiet_opt
def pretrain(imagery, out, config_path, bands, nodata, crs, res, rgb, jitter, crop_size, overlap, scale, across_dates, max_nodata, batch_size, max_steps, max_time, arch,
             encoder, decoder_channels, dense_stride, weights_text, num_workers, accelerator, devices, strategy, num_nodes, precision, resume, seed,
             progress_format, quiet):
    """Pretrain an encoder + decoder on IMAGERY with SSCCL.

    IMAGERY is GeoTIFF files, directories or glob patterns, read as one mosaic.
    """
    from ..errors import GeossclError
    from ..training import PretrainConfig, parse_weights, pretrain as run

    flags = {
        "imagery": list(imagery) or None, "out": out, "bands": bands, "nodata": nodata, "crs": crs, "res": res, "rgb": rgb, "jitter": jitter, "crop_size": crop_size,
        "overlap": overlap, "scale": scale, "across_dates": across_dates, "max_nodata": max_nodata, "batch_size": batch_size, "max_steps": max_steps, "max_time": max_time,
        "arch": arch, "encoder": encoder,
        "decoder_channels": decoder_channels,
        "dense_stride": dense_stride,
        "weights": parse_weights(weights_text) if weights_text else None, "num_workers": num_workers,
        "accelerator": accelerator, "devices": int(devices) if devices and devices.isdigit() else devices, "strategy": strategy,
        "num_nodes": num_nodes, "precision": precision, "resume": resume, "seed": seed, "quiet": quiet or None,
    }
    # The limits given are the run's limits: one flag clears the other's value in a config file
    # (a resumed run's config.yaml holds the limits of its last session).
    if max_time is not None and max_steps is None:
        flags["max_steps"] = 0  # time-limited run
    if max_steps is not None and max_time is None:
        flags["max_time"] = 0
    if not config_path and resume:
        # Continue the run as it was set up (imagery, model, objective); flags still override.
        run_dir = os.path.dirname(os.path.abspath(resume))
        saved = os.path.join(run_dir, "config.yaml")
        if os.path.isfile(saved):
            config_path = saved
        # The run continues where its checkpoint is, not in the config's `out`: a copied run
        # directory (to try another budget) names the original there, and would overwrite it.
        flags["out"] = out or run_dir
    if config_path:
        config = PretrainConfig.from_yaml(config_path, **flags)
    else:
        if not imagery:
            raise GeossclError("IMAGERY: give at least one file, directory or glob (or a --config with imagery)")
        if not flags["out"]:
            raise GeossclError("--out: give a run directory")
        config = PretrainConfig(**{k: v for k, v in flags.items() if v is not None})
    if not config.max_steps:
        config.max_steps = None
    if not config.max_time:
        config.max_time = None
    path = run(config, progress=jsonl_progress if progress_format == "jsonl" else None)
    if progress_format == "jsonl":
        click.echo(json.dumps({"output": path, "checkpoint": os.path.join(path, "last.ckpt")}))
    elif not config.quiet:
        click.echo(f"run written to {path}")
