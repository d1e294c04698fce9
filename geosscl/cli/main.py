"""Entry point of the ``geosscl`` command."""

from __future__ import annotations

import click

from .. import __version__
from ..errors import GeossclError
from .evaluate import evaluate, export, info
from .finetune import finetune
from .pairs import pairs
from .predict import predict
from .probe import probe
from .pretrain import pretrain
from .suggest import suggest


class _Group(click.Group):
    """Turns library errors into one-line CLI errors with exit status 1."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except GeossclError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = getattr(exc, "exit_code", 1)
            raise error from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geosscl")
def cli() -> None:
    """Self-supervised segmentation networks for GeoTIFF mosaics."""


cli.add_command(pairs)
cli.add_command(pretrain)
cli.add_command(finetune)
cli.add_command(evaluate)
cli.add_command(probe)
cli.add_command(predict)
cli.add_command(suggest)
cli.add_command(info)
cli.add_command(export)
