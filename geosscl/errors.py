"""Errors a user can act on.

Every error geosscl raises for bad input is a :class:`GeossclError` whose message
names the file or parameter at fault; the CLI prints it as one line and exits 1.
"""


class GeossclError(ValueError):
    """Bad input: the message names the file or parameter and the problem."""


class NoOverlap(GeossclError):
    """Inputs that do not meet on the ground (labels, label area or region, and the imagery): where
    several places are scored (``evaluate --every-date``), a place they miss is left out."""


class RunStopped(GeossclError):
    """A run stopped before its end by a signal: pretraining saved its last step (``--resume``
    continues it); fine-tuning wrote no model.

    The CLI exits with ``exit_code``: 128 + the signal's number, as a shell reports a
    process the signal ended (143 for SIGTERM, 130 for SIGINT, i.e. Ctrl-C).
    """

    def __init__(self, message: str, exit_code: int = 143) -> None:
        super().__init__(message)
        self.exit_code = exit_code
