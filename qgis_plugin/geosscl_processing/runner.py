"""Running ``geosscl`` (predict, probe, finetune, evaluate, suggest) as a subprocess and following its progress.

Kept free of QGIS imports so that it is plain Python to read and to test. QGIS's own
Python usually has no PyTorch, so the plugin never imports geosscl: it runs the
``geosscl`` executable of the environment where geosscl is installed.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

#: Processing setting and environment variable naming the geosscl executable.
EXECUTABLE_SETTING = "GEOSSCL_EXECUTABLE"
#: Variables QGIS sets for its own Python and GDAL; inherited, they make the
#: subprocess's Python or rasterio load QGIS's modules and PROJ/GDAL data.
QGIS_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PROJ_LIB", "PROJ_DATA", "GDAL_DATA", "GDAL_DRIVER_PATH")


class RunError(Exception):
    """geosscl could not be found or failed; the message is for the user."""


class Cancelled(RunError):
    """The user cancelled; the subprocess was stopped and left no output."""


def find_executable(configured: str | None = None) -> str:
    """The geosscl executable: the Processing setting, else ``$GEOSSCL_EXECUTABLE``, else ``geosscl`` on PATH."""
    for source, candidate in (("Processing setting", configured), (EXECUTABLE_SETTING, os.environ.get(EXECUTABLE_SETTING))):
        if candidate:
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
            raise RunError(f"geosscl executable {candidate} (from the {source}) does not exist or cannot be run")
    found = shutil.which("geosscl")
    if found is None:
        raise RunError(
            "geosscl not found: install it (pip install geosscl) and set its path in Processing > Options > "
            f"Providers > geosscl, or in the {EXECUTABLE_SETTING} environment variable"
        )
    return found


def clean_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment without what QGIS set for its own Python and GDAL."""
    env = dict(os.environ if environ is None else environ)
    for name in QGIS_VARIABLES:
        env.pop(name, None)
    return env


def predict_command(
    executable: str, scene: str, model: str, output: str, *, bands: list[int] | None = None,
    tile_size: int | None = None, overlap: int | None = None, batch_size: int = 8, device: str = "auto",
    bfloat16: bool = False, probabilities: str | None = None, vector: str | None = None, nodata: float | None = None,
) -> list[str]:
    """The ``geosscl predict`` command line (outputs are replaced, as Processing destinations are); ``nodata``: the
    imagery's no-data value over its files' own (:func:`nodata_option`)."""
    command = [executable, "predict", scene, "-m", model, "-o", output, "--batch-size", str(batch_size),
               "--device", device, "--progress", "jsonl", "--overwrite", *nodata_option(nodata)]
    if bands:
        command += ["--bidx", ",".join(str(b) for b in bands)]
    if tile_size:
        command += ["--tile-size", str(tile_size)]
    if overlap is not None:
        command += ["--overlap", str(overlap)]
    command += precision_option(bfloat16)
    if probabilities:
        command += ["--probabilities", probabilities]
    if vector:
        command += ["--vector", vector]
    return command


def precision_option(bfloat16: bool) -> list[str]:
    """geosscl's ``--precision`` for running a model (none: float32)."""
    return ["--precision", "bf16"] if bfloat16 else []


def nodata_option(nodata: float | None) -> list[str]:
    """geosscl's ``--nodata`` for the imagery (none: the files' own no-data, or the model's)."""
    return [] if nodata is None else ["--nodata", repr(float(nodata))]


#: Training methods of the "Train model" algorithm: the geosscl command each runs.
TRAIN_METHODS = ("classifier", "finetune")


def label_options(
    labels: str, *, class_column: str | None = None, background_class: str | None = None,
    label_area: str | None = None, nodata: float | None = None, classes: str | None = None,
) -> list[str]:
    """geosscl's options for one label file: a vector layer (with its class column) or a class raster."""
    options = ["--labels", labels] + (["--no-background-class"] if background_class == "" else [])
    for option, value in (("--class-column", class_column), ("--background-class", background_class),
                          ("--label-area", label_area), ("--classes", classes)):
        if value:
            options += [option, value]
    if nodata is not None:
        options += ["--label-nodata", f"{nodata:g}"]
    return options


def train_command(
    executable: str, scene: str, labels: list[str], output: str, *, method: str, init: str | None = None,
    steps: int = 500, crop_size: int = 128, balance: bool = False, device: str = "auto", other_dates: Sequence[str] = (),
    nodata: float | None = None,
) -> list[str]:
    """The ``geosscl probe -o`` or ``geosscl finetune`` command line that makes a model from ``labels``
    (:func:`label_options`); with ``other_dates`` (rasters of the scene's ground on other dates, where the
    labels hold too) it trains on every date.

    ``classifier``: a linear classifier of the bands and the encoder's stride-2 stage, every
    label training it under a fixed L2 weight (with few labels this beat the fine-tuned
    U-Nets and spending labels on validation, on every bundled scene; README, "Label efficiency").
    ``finetune``: the whole network, 20 % of the labelled blocks kept for validation.
    """
    if method not in TRAIN_METHODS:
        raise ValueError(f"method must be one of {TRAIN_METHODS}, got {method!r}")
    common = [*other_dates, *labels, "--crop-size", str(crop_size), *nodata_option(nodata)]
    if other_dates:
        common.append("--every-date")
    if init:
        common += ["--init", init]
    if balance:
        common += ["--class-weights", "auto"]
    if method == "classifier":
        return [executable, "probe", scene, *common, "--stages", "1", "--weight-decay", "0.001", "--val-fraction", "0",
                "--device", device, "-o", output, "--overwrite"]
    return [executable, "finetune", scene, *common, "--max-steps", str(steps),
            "--accelerator", {"cuda": "gpu"}.get(device, device), "--progress", "jsonl", "--out", output, "--overwrite"]


def pretrain_command(
    executable: str, scenes: list[str], out: str, *, minutes: float, steps: int | None = None, crop_size: int = 128,
    batch_size: int = 32, device: str = "auto", resume: str | None = None, across_dates: bool = False,
    max_nodata: float | None = None, nodata: float | None = None,
) -> list[str]:
    """The ``geosscl pretrain`` command line: SSCCL on ``scenes`` (one mosaic) for ``minutes`` (or ``steps``, whichever
    ends first), the run written to the folder ``out``. With ``resume`` (a run's ``last.ckpt``) the run goes on in its
    own folder with its own crop and batch sizes (those given are not passed), and both limits count the whole run.
    ``across_dates``: the two views of a pair from two files over the same ground; ``max_nodata``: the largest nodata
    share of a view; ``nodata``: the imagery's no-data value over its files' own (a continued run keeps its own of all
    three)."""
    command = [executable, "pretrain", *scenes, "--out", out, "--max-time", f"{minutes:g}"]
    if resume:
        command += ["--resume", resume]
    else:
        command += ["--crop-size", str(crop_size), "--batch-size", str(batch_size)]
        if across_dates:
            command.append("--across-dates")
        if max_nodata is not None:
            command += ["--max-nodata", f"{max_nodata:g}"]
        command += nodata_option(nodata)
    command += ["--accelerator", {"cuda": "gpu"}.get(device, device), "--progress", "jsonl"]
    if steps:
        command += ["--max-steps", str(steps)]
    return command


def evaluate_command(
    executable: str, scene: str, model: str, labels: list[str], *, region: str | None = None,
    json_path: str | None = None, png_path: str | None = None, device: str = "auto", other_dates: Sequence[str] = (),
    nodata: float | None = None, held_out: bool = False, bfloat16: bool = False,
) -> list[str]:
    """The ``geosscl evaluate`` command line that scores a model on ``labels`` (:func:`label_options`); with
    ``other_dates`` (rasters of the scene's ground on other dates) it scores every date, and all pooled; with
    ``held_out``, only the labels outside the ground the model was trained and validated on."""
    command = [executable, "evaluate", model, scene, *other_dates, *labels, "--device", device, "--progress", "jsonl",
               *nodata_option(nodata), *precision_option(bfloat16)]
    if other_dates:
        command.append("--every-date")
    if held_out:
        command.append("--held-out")
    for option, value in (("--region", region), ("--json", json_path), ("--png", png_path)):
        if value:
            command += [option, value]
    return command


def suggest_command(
    executable: str, scene: str, model: str, output: str, *, count: int = 20, tile_size: int | None = None,
    spacing: int = 1, labels: Sequence[str] = (), region: str | None = None, exclude: str | None = None,
    device: str = "auto", nodata: float | None = None, bfloat16: bool = False,
) -> list[str]:
    """The ``geosscl suggest`` command line: the ``count`` tiles where the model is least sure, free of ``labels``
    (:func:`label_options`, optional) and of ``exclude``, inside ``region``; the output is replaced, as Processing
    destinations are."""
    command = [executable, "suggest", model, scene, "-o", output, "--count", str(count), "--spacing", str(spacing),
               *labels, "--device", device, "--progress", "jsonl", "--overwrite", *nodata_option(nodata),
               *precision_option(bfloat16)]
    for option, value in (("--tile-size", tile_size), ("--region", region), ("--exclude", exclude)):
        if value:
            command += [option, str(value)]
    return command


# Loaded here, not in the forked child: QGIS has many threads, and a child of a
# multi-threaded process must not load libraries before exec.
_LIBC = None
if sys.platform.startswith("linux"):
    import ctypes

    _LIBC = ctypes.CDLL(None)


def _die_with_parent() -> None:
    """In the child: receive SIGTERM if QGIS (or qgis_process) dies, so geosscl stops and cleans up."""
    if _LIBC is not None:
        _LIBC.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def run(
    command: list[str],
    progress: Callable[[float], None],
    log: Callable[[str], None],
    cancelled: Callable[[], bool],
    env: dict[str, str] | None = None,
) -> dict:
    """Run ``command``; report progress (0-100) and stderr lines; stop it when ``cancelled()``.

    Returns the last JSON object geosscl printed (the outputs). Raises :class:`Cancelled`
    or :class:`RunError` (with geosscl's one-line error) on failure.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                               env=clean_environment() if env is None else env, preexec_fn=_die_with_parent)
    lines: queue.Queue = queue.Queue()

    def pump(stream, name):
        with stream:  # closed at end of file, by the thread that reads it
            for line in stream:
                lines.put((name, line.rstrip("\n")))
        lines.put((name, None))

    for stream, name in ((process.stdout, "out"), (process.stderr, "err")):
        threading.Thread(target=pump, args=(stream, name), daemon=True).start()
    return _follow(process, lines, progress, log, cancelled)


def reporter(feedback, rename: Callable[[str], str] | None = None) -> Callable[[str], None]:
    """Where geosscl's lines go in the Processing log: its warnings (``WARNING: …``: a class the model
    cannot learn, polygons left unlabelled) as warnings, which the log highlights; the rest as
    information. ``rename``: the line as the user knows the files (layer names for temporary copies)."""

    def report(line: str) -> None:
        text = rename(line) if rename else line
        (feedback.pushWarning if line.startswith("WARNING:") else feedback.pushInfo)(text)

    return report


def _follow(process, lines, progress, log, cancelled) -> dict:
    open_streams, errors, result = 2, [], {}
    while open_streams:
        if cancelled():
            process.terminate()  # geosscl unwinds on SIGTERM and removes its temporary files
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raise Cancelled("cancelled: geosscl was stopped and wrote no output")
        try:
            name, line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if line is None:
            open_streams -= 1
        elif name == "err":
            if line.strip():
                errors.append(line)
                log(line)
        else:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                log(line)
                continue
            if "total" in message and message["total"]:
                progress(100.0 * message["done"] / message["total"])
            else:
                result = message
    if process.wait() != 0:
        reported = [e for e in errors if e.startswith("Error:")]
        raise RunError(reported[-1][len("Error:"):].strip() if reported else
                       (errors[-1] if errors else f"geosscl exited with status {process.returncode}"))
    return result
