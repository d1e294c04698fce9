"""Errors a user can act on.

Every error geosscl raises for bad input is a :class:`GeossclError` whose message
names the file or parameter at fault; the CLI prints it as one line and exits 1.
"""


class GeossclError(ValueError):
    """Bad input: the message names the file or parameter and the problem."""


class RunStopped(GeossclError):
    """A run stopped before its end (a termination signal); its last checkpoint resumes it.

    The CLI exits with ``exit_code`` (128 + SIGTERM, as a shell reports a terminated process).
    """

    exit_code = 143
