"""Writing output files so that nothing half-written is ever left under the final name."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterable, Iterator

import rasterio

from .errors import GeossclError


def check_output(path: str | os.PathLike, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike | None] = ()) -> str:
    """Validate an output path before any work is done.

    Args:
        path: the output file.
        overwrite: whether an existing file may be replaced.
        inputs: what the command reads (files, directories, glob patterns; None items are
            skipped): the output may be none of their files, whatever ``overwrite`` says.

    Raises:
        GeossclError: if the file exists and ``overwrite`` is False, it is a file the
            command reads, or its directory is missing or not writable.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise GeossclError(f"{path}: is a directory, not a file name")
    # --overwrite is for earlier outputs; replacing the imagery, labels or model being read
    # (a class map written over one of a VRT's band files) destroys the user's data.
    given = read_files(inputs).get(os.path.realpath(path))
    if given is not None:
        how = "is an input of this command" if os.path.realpath(given) == os.path.realpath(path) else f"is read through {given}"
        raise GeossclError(f"{path}: {how}; write the output to another file")
    if os.path.exists(path) and not overwrite:
        raise GeossclError(f"{path}: already exists; pass --overwrite to replace it")
    if not os.path.isdir(folder):
        raise GeossclError(f"{path}: output directory {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise GeossclError(f"{path}: output directory {folder} is not writable")
    return path


def check_suffix(path: str | os.PathLike | None, suffixes: tuple[str, ...], what: str) -> None:
    """Refuse an output named for another format than the one written (``what``: "the class map is a GeoTIFF"):
    a GeoTIFF named ``map.png``, or a model named ``model.pt``, misleads every tool after. None passes."""
    if path is not None and not os.fspath(path).lower().endswith(suffixes):
        raise GeossclError(f"{path}: {what}; name it {suffixes[0]}")


def read_files(inputs: Iterable[str | os.PathLike | None]) -> dict[str, str]:
    """The real path of every file that ``inputs`` (files, directories, glob patterns; None items
    skipped) name, each mapped to the input naming it; a VRT names the files it references too."""
    read: dict[str, str] = {}
    for item in inputs:
        if item is None:
            continue
        given = os.fspath(item)
        path = given.split("|")[0]  # one layer of a GeoPackage: FILE|layername=NAME
        if os.path.isdir(path):
            files = [os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
        elif glob.has_magic(path):
            files = [p for p in glob.glob(path, recursive=True) if os.path.isfile(p)]
        else:
            files = [path] if os.path.isfile(path) else []  # 'random', /vsi paths, missing files: nothing local
        for file in files:
            read.setdefault(os.path.realpath(file), given)
            if file.lower().endswith(".vrt"):
                with contextlib.suppress(rasterio.errors.RasterioError), rasterio.open(file) as src:
                    for source in src.files:
                        read.setdefault(os.path.realpath(source), given)
    return read


def sidecar(path: str | os.PathLike) -> str:
    """GDAL's PAM sidecar of ``path``: ``FILE.aux.xml``."""
    return os.fspath(path) + ".aux.xml"


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False,
                  inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    GDAL's PAM sidecar of the temporary file (``TMP.aux.xml``: category names,
    statistics) goes with it; a sidecar of the file replaced, which describes the old
    contents, is removed. On any exception (including KeyboardInterrupt) the temporary
    file and its sidecar are removed and ``path`` is left as it was. ``path`` is checked
    with :func:`check_output` first.
    """
    path = check_output(path, overwrite, inputs)
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
