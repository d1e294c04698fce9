"""Options shared by geosscl commands, defined once (in the manner of ``rio``)."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator

import click


def _floats(value: str | None, name: str, count: int | None = None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in str(value).split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}", param_hint=name) from None
    if count is not None and len(numbers) != count:
        raise click.BadParameter(f"expected {count} comma-separated numbers, got {value!r}", param_hint=name)
    return numbers


def float_pair(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float] | None:
    """Parse ``LO,HI``."""
    return _floats(value, f"--{param.name}", 2)  # type: ignore[return-value]


def band_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    """Parse 1-based band indexes ``1,2,3``."""
    if value is None:
        return None
    try:
        bands = [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected 1-based band numbers like 1,2,3, got {value!r}", param_hint="--bidx") from None
    return bands


def int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    """Parse ``256,128,64``."""
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint=f"--{param.name.replace('_', '-')}") from None


imagery_arg = click.argument("imagery", nargs=-1, required=True, metavar="IMAGERY...")
output_opt = click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output file.")
overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
quiet_opt = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
bidx_opt = click.option(
    "-b", "--bidx", "--bands", "bands", callback=band_list, metavar="1,2,3",
    help="1-based band indexes to read, in order (default: all).",
)
nodata_opt = click.option(
    "--nodata", type=float, default=None, metavar="VALUE",
    help='Value of the imagery meaning "no data" in every band, over what its files declare: a fill they do not '
         "declare (a black collar, zeros outside the scene).  [default: the files'; for a model or run, its own]",
)
crs_opt = click.option("--crs", default=None, help="CRS of the mosaic, e.g. EPSG:32614 (default: the first file's, in sorted path order).")
res_opt = click.option("--res", type=float, default=None, help="Resolution in CRS units (default: the first file's).")
classes_opt = click.option(
    "--classes", type=click.Path(dir_okay=False),
    help="YAML/JSON classes: a list of names (values 0, 1, ...), or VALUE: NAME or VALUE: {name: ..., color: [r, g, b]}; "
         "the model has the classes listed and writes their values.",
)
class_column_opt = click.option("--class-column", help="Column of the vector layer holding class values or names "
                                "[default: with a model (scored, or --init), the column its labels came from].")
label_nodata_opt = click.option(
    "--label-nodata", type=float, default=None, metavar="VALUE",
    help="Value of the class rasters that means unlabelled, for files that do not declare it as nodata "
         "(e.g. -1 or 255).",
)


_NO_BACKGROUND = "geosscl.no_background"


def _no_background(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    ctx.meta[_NO_BACKGROUND] = value


def _background(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # --no-background-class is eager, so it is read before this option whatever their order.
    if not ctx.meta.get(_NO_BACKGROUND):
        return value
    if value is not None:
        raise click.UsageError("--background-class and --no-background-class: give one of them")
    return ""  # the background_class of no class, not even the model's (geosscl.data.labels.open_labels)


def background_class_opt(command: Callable) -> Callable:
    """``--background-class CLASS``, and ``--no-background-class`` (the value ``""``: none, not even the model's)."""
    command = click.option(
        "--no-background-class", is_flag=True, is_eager=True, expose_value=False, callback=_no_background,
        help="Leave the pixels outside the polygons unlabelled, even where the model has a background class "
             "(sparse polygons of every class).",
    )(command)
    return click.option(
        "--background-class", metavar="CLASS", callback=_background,
        help="Class (name or id) of the pixels outside every polygon of the vector layer, inside the imagery: for "
             "layers that outline objects only, e.g. building footprints (default: the background class of the model "
             "scored or trained further, where it has one; else those pixels are unlabelled).",
    )(command)


def _class_weights(ctx: click.Context, param: click.Parameter, value: str | None) -> str | list[float] | None:
    from ..finetuning import parse_class_weights

    try:
        return None if value is None else parse_class_weights(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class_weights_opt = click.option(
    "--class-weights", callback=_class_weights, metavar="auto|W0,W1,...",
    help="Weight of each class in the loss: 'auto' balances the classes' shares of the training labels "
         "(rare classes, such as buildings, weigh more); default: all 1.",
)
label_area_opt = click.option(
    "--label-area", type=click.Path(dir_okay=False), metavar="POLYGONS",
    help="Polygons where the labels are complete (e.g. where footprints were mapped, with --background-class); "
         "pixels outside them are unlabelled.  [default: wherever labels and imagery meet]",
)
every_date_opt = click.option(
    "--every-date", is_flag=True,
    help="Where files of the imagery cover one place (dates of a tile), train and validate on every one of them "
         "with the same labels: for labels true on all the dates (stable land cover).  [default: the first file "
         "in path order is read]",
)
# No default value: pretrain's flags override its --config file only where given.
precision_opt = click.option(
    "--precision", type=click.Choice(["32", "bf16"]),
    help="bf16: forward passes in bfloat16 (autocast); faster where the hardware has bfloat16 "
         "arithmetic (recent GPUs; CPUs with AVX512-BF16 or AMX), refused on other CPUs, where it is slower.  "
         "[default: 32]")
seed_opt = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")


@contextlib.contextmanager
def log_to_stderr(quiet: bool) -> Iterator[None]:
    """While open, geosscl's warnings go to stderr as ``WARNING: …`` lines (with ``quiet``, errors only)."""
    logger = logging.getLogger("geosscl")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR if quiet else logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def stop_on_sigterm() -> None:
    """Make SIGTERM (a killed job, a cancelled QGIS run) unwind like Ctrl-C, so temporary files are removed."""
    def handler(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def jsonl_progress(done: int, total: int) -> None:
    """``progress(done, total)`` for programs that drive geosscl: one JSON object per call on stdout, flushed."""
    click.echo(json.dumps({"done": done, "total": total}))
    sys.stdout.flush()


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar while open (gone once closed); yields its ``progress(done, total)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
