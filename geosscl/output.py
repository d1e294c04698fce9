"""Writing output files so that nothing half-written is ever left under the final name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from .errors import GeossclError


def check_output(path: str | os.PathLike, overwrite: bool = False) -> str:
    """Validate an output path before any work is done.

    Raises:
        GeossclError: if the file exists and ``overwrite`` is False, or its directory
            is missing or not writable.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise GeossclError(f"{path}: is a directory, not a file name")
    if os.path.exists(path) and not overwrite:
        raise GeossclError(f"{path}: already exists; pass --overwrite to replace it")
    if not os.path.isdir(folder):
        raise GeossclError(f"{path}: output directory {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise GeossclError(f"{path}: output directory {folder} is not writable")
    return path


def sidecar(path: str | os.PathLike) -> str:
    """GDAL's PAM sidecar of ``path``: ``FILE.aux.xml``."""
    return os.fspath(path) + ".aux.xml"


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    GDAL's PAM sidecar of the temporary file (``TMP.aux.xml``: category names,
    statistics) goes with it; a sidecar of the file replaced, which describes the old
    contents, is removed. On any exception (including KeyboardInterrupt) the temporary
    file and its sidecar are removed and ``path`` is left as it was.
    """
    path = check_output(path, overwrite)
    folder, name = os.path.split(os.path.abspath(path))
    stem, suffix = os.path.splitext(name)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".part{suffix}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        if os.path.exists(tmp):
            # mkstemp makes the file private (0600); the output gets the usual permissions.
            os.chmod(tmp, 0o666 & ~_umask())
        with contextlib.suppress(FileNotFoundError):
            os.remove(sidecar(path))
        os.replace(tmp, path)
        if os.path.exists(sidecar(tmp)):
            os.chmod(sidecar(tmp), 0o666 & ~_umask())
            os.replace(sidecar(tmp), sidecar(path))
    except BaseException:
        for leftover in (tmp, sidecar(tmp)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
