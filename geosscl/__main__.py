"""``python -m geosscl``: the same as the ``geosscl`` command."""

from .cli.main import cli

cli(prog_name="geosscl")
