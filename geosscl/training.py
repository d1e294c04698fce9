"""``geosscl.pretrain``: an SSCCL run on a mosaic, written to a run directory.

A run directory holds ``config.yaml`` (the resolved settings), ``band_stats.json``,
``metrics.csv`` (losses per step), ``loss_curves.png``, ``last.ckpt`` and
``best.ckpt``. Every input is checked before the directory is created, so bad input
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from .errors import GeossclError, RunStopped
from .precision import LIGHTNING_PRECISION, check_precision
from .versions import software

log = logging.getLogger("geosscl")

DEFAULT_WEIGHTS = {"instance": 1.0, "spatial": 1.0, "semantic": 0.5}


@dataclass
class PretrainConfig:
    """Settings of a pretraining run; every field is also a ``geosscl pretrain`` option."""

    imagery: list[str]
    out: str
    bands: list[int] | None = None
    crs: str | None = None  #: of the mosaic (default: the first file's, in sorted path order)
    res: float | None = None  #: of the mosaic, in CRS units (default: the first file's)
    nodata: float | None = None  #: value of the imagery meaning "no data", over what its files declare
    rgb: bool = False
    jitter: str = "band"
    crop_size: int = 128
    overlap: tuple[float, float] = (0.3, 0.8)
    scale: tuple[float, float] = (0.75, 1.5)
    across_dates: bool = False  #: view B from another file that holds the pair (another date of the place)
    #: reject views with a larger nodata fraction (swath edges, clouds masked on one date); None: keep all
    max_nodata: float | None = None
    batch_size: int = 32
    max_steps: int | None = 1000
    max_time: float | None = None
    arch: str = "unet"
    encoder: str = "resnet18"
    decoder_channels: list[int] | None = None
    dense_stride: int | None = None
    grid_size: int = 8
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    temperature: float = 0.2
    queue_size: int = 4096
    momentum: float = 0.99
    lr: float = 1e-3
    weight_decay: float = 1e-4
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    #: "32": float32 throughout; "bf16": the networks' forward passes in bfloat16 (autocast), losses and weights float32
    precision: str = "32"
    num_workers: int = 2
    seed: int = 0
    resume: str | None = None
    quiet: bool = False

    @classmethod
    def from_yaml(cls, path: str, **overrides: Any) -> PretrainConfig:
        """Settings from a YAML file, with ``overrides`` (e.g. command-line flags) on top."""
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except OSError as exc:
            raise GeossclError(f"{path}: cannot read config ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise GeossclError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise GeossclError(f"{path}: a config must be a mapping of option: value")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GeossclError(f"{path}: unknown option(s) {', '.join(unknown)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


def parse_weights(text: str) -> dict[str, float]:
    """``instance=1,spatial=1,semantic=0.5`` → dict; missing terms keep their default."""
    weights = dict(DEFAULT_WEIGHTS)
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in weights or not value:
            raise GeossclError(f"weights: {item!r} is not NAME=VALUE with NAME one of {', '.join(weights)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise GeossclError(f"weights: {value!r} is not a number") from None
    return weights


ACCELERATORS = ("auto", "cpu", "gpu")


def check_accelerator(accelerator: str) -> None:
    """Refuse, before anything is written, an accelerator this machine lacks.

    Lightning would refuse it too, but only once the run directory exists and with
    a multi-line message.
    """
    if accelerator not in ACCELERATORS:
        raise GeossclError(f"accelerator: {accelerator!r} is not one of {', '.join(ACCELERATORS)}")
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise GeossclError("accelerator: gpu requested but no CUDA device is available")


def load_checkpoint(path: str) -> dict[str, Any]:
    """Load a geosscl pretraining checkpoint without executing code.

    Raises:
        GeossclError: if the file is missing, unreadable, or not a geosscl checkpoint.
    """
    from .tasks.pretrain import CHECKPOINT_KIND

    if not os.path.isfile(path):
        raise GeossclError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it may not read: the error says enough
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means: not ours
        # torch's own message suggests weights_only=False, which would let the file run code.
        why = ("it holds more than tensors and plain values, or is no PyTorch file; geosscl reads checkpoints "
               "weights-only, so that a file cannot run code" if "Weights only load failed" in str(exc)
               else str(exc).splitlines()[0][:120])
        raise GeossclError(f"{path}: not a geosscl checkpoint ({why})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("geosscl", {}).get("kind") != CHECKPOINT_KIND:
        raise GeossclError(f"{path}: not a geosscl pretraining checkpoint")
    return checkpoint


def pretrain(config: PretrainConfig, progress: Callable[[int, int], None] | None = None) -> str:
    """Run SSCCL pretraining; return the run directory.

    ``progress(done, total)`` is called after every step (see :class:`ReportProgress`);
    Lightning's progress bar and messages are then off.

    Raises:
        GeossclError: for bad input, before anything is written.
    """
    from lightning.pytorch.loggers import CSVLogger

    from samplers import OverlappingPairSampler

    from .data import Mosaic
    from .data.bandnames import check_band_names
    from .data.module import PairDataModule
    from .data.stats import band_statistics
    from .tasks import SSCCLTask

    # -- check everything before writing anything ------------------------------------
    if config.max_steps is None and config.max_time is None:
        raise GeossclError("max_steps: give --max-steps or --max-time")
    check_accelerator(config.accelerator)
    config.precision = check_precision(config.precision, config.accelerator)
    checkpoint = load_checkpoint(config.resume) if config.resume else None
    if checkpoint is not None:
        _warn_other_software(config.resume, checkpoint)
    out = os.path.abspath(config.out)
    # Under DDP Lightning relaunches this command once per extra process: only rank 0
    # owns the run directory.
    lead = rank_zero_only.rank == 0
    if lead and os.path.exists(out) and os.listdir(out) and checkpoint is None:
        last = os.path.join(config.out, "last.ckpt")
        then = (f"pass --resume {last} or choose another --out" if os.path.exists(last) else
                "it holds no checkpoint to resume (last.ckpt); choose another --out, or remove it")
        raise GeossclError(f"{config.out}: run directory exists and is not empty; {then}")
    mosaic = Mosaic(config.imagery, bands=config.bands, crs=config.crs, res=config.res, nodata=config.nodata)
    if config.across_dates:
        mosaic.require_dates("across-dates")
    if config.max_nodata is not None and not 0 <= config.max_nodata < 1:
        raise GeossclError(f"max_nodata: must lie in [0, 1), got {config.max_nodata}")
    # One pair drawn as training will draw them: views that fit nowhere (chips smaller than a view)
    # are refused here, before the run directory is written, not by the first batch.
    next(iter(OverlappingPairSampler(mosaic, config.crop_size, overlap=config.overlap, scale=config.scale, length=1,
                                     generator=torch.Generator().manual_seed(config.seed),
                                     across_files=config.across_dates, max_nodata=config.max_nodata)))
    stats_path = os.path.join(out, "band_stats.json")
    if checkpoint is not None:
        hp = checkpoint.get("hyper_parameters", {})
        check_band_names(hp.get("band_names"), mosaic.all_band_names, mosaic.band_indexes, mosaic.source,
                         config.resume, chosen=config.bands is not None)
        if hp.get("in_channels") != mosaic.num_bands:
            raise GeossclError(f"{config.resume}: checkpoint has {hp.get('in_channels')} bands, the imagery {mosaic.num_bands}")
        mean, std = hp["band_mean"], hp["band_std"]
        band_names = mosaic.known_band_names or hp.get("band_names")  # a run resumed on unnamed files keeps them
    else:
        mean, std = band_statistics(mosaic)
        band_names = mosaic.known_band_names
    weights = {**DEFAULT_WEIGHTS, **config.weights}
    pl.seed_everything(config.seed, workers=True, verbose=False)  # weights, queue and augmentations
    task = SSCCLTask(
        in_channels=mosaic.num_bands, band_mean=mean, band_std=std, band_names=band_names, nodata=mosaic.nodata, rgb=config.rgb, jitter=config.jitter, arch=config.arch,
        encoder=config.encoder, decoder_channels=config.decoder_channels, view_size=config.crop_size, dense_stride=config.dense_stride,
        grid_size=config.grid_size, instance_weight=weights["instance"], spatial_weight=weights["spatial"],
        semantic_weight=weights["semantic"], temperature=config.temperature, queue_size=config.queue_size,
        momentum=config.momentum, lr=config.lr, weight_decay=config.weight_decay,
    )
    if checkpoint is not None:
        _check_same_run(config.resume, checkpoint.get("hyper_parameters", {}), dict(task.hparams))
        _check_limits_left(config, checkpoint)

    # -- run ------------------------------------------------------------------------
    # A run directory of this call that a failure leaves without a checkpoint is removed: nothing in it
    # to resume, and it would refuse the same command run again.
    fresh = lead and checkpoint is None
    with _removed_unless_resumable(out, fresh):
        os.makedirs(out, exist_ok=True)
        if lead:
            _write_yaml(os.path.join(out, "config.yaml"),
                        {**dataclasses.asdict(config), "out": out, "dense_stride": task.hparams["dense_stride"]})
            _write_json(stats_path, {"bands": mosaic.band_indexes, "mean": mean, "std": std})
        steps = config.max_steps or 10**7
        datamodule = PairDataModule(
            mosaic, view_size=config.crop_size, overlap=config.overlap, scale=config.scale,
            batch_size=config.batch_size, steps=steps, num_workers=config.num_workers, seed=config.seed,
            across_files=config.across_dates, max_nodata=config.max_nodata,
        )
        callbacks: list[pl.Callback] = [
            _BestCheckpoint(dirpath=out, filename="best", monitor="loss", mode="min", save_top_k=1, save_last=True,
                            every_n_train_steps=max(1, min(50, steps // 4 or 1)), enable_version_counter=False),
            _FinalCheckpoint(os.path.join(out, "last.ckpt")),
            _Throughput(config.batch_size),
        ]
        interrupt = _StopOnInterrupt()
        callbacks.append(interrupt)
        if progress is not None:
            callbacks.append(ReportProgress(progress, config.max_steps, config.max_time))
        elif not config.quiet:
            callbacks.append(progress_bar("pretrain"))
        quiet = config.quiet or progress is not None
        metrics = os.path.join(out, "metrics.csv")
        previous = metrics + ".previous"
        if lead and checkpoint is not None:
            if os.path.exists(previous):
                # A resumed run was stopped (killed, preempted) before merging its rows back.
                _prepend_metrics(previous, metrics, before_step=_first_step(metrics))
            if os.path.exists(metrics):
                os.replace(metrics, previous)  # Lightning's CSV logger starts the file afresh
        with quiet_lightning(quiet):
            trainer = pl.Trainer(
                max_steps=steps if config.max_steps else -1,
                max_epochs=-1,  # the pair stream is sized to the run; steps or time end it
                max_time={"minutes": config.max_time} if config.max_time else None,
                accelerator=config.accelerator, devices=config.devices, strategy=config.strategy, num_nodes=config.num_nodes,
                precision=LIGHTNING_PRECISION[config.precision],
                logger=CSVLogger(out, name="", version=""), callbacks=callbacks, log_every_n_steps=1,
                use_distributed_sampler=False, enable_progress_bar=not quiet,
                enable_model_summary=not quiet, deterministic=False,
            )
            try:
                trainer.fit(task, datamodule=datamodule, ckpt_path=config.resume, weights_only=True if config.resume else None)
                terminated = False
            except SIGTERMException:
                terminated = True  # a scheduler's notice (preemption, time limit): _FinalCheckpoint saved the state
    if trainer.is_global_zero:
        if os.path.exists(previous):
            _prepend_metrics(previous, metrics, before_step=checkpoint["global_step"])
        plot_losses(metrics, os.path.join(out, "loss_curves.png"))
    how = "stopped by SIGTERM" if terminated else "interrupted (Ctrl-C)" if interrupt.stopped else None
    if how:
        raise RunStopped(f"{out}: {how} at step {trainer.global_step}; continue with "
                         f"geosscl pretrain --resume {os.path.join(out, 'last.ckpt')}", exit_code=143 if terminated else 130)
    return out


@contextlib.contextmanager
def _removed_unless_resumable(out: str, fresh: bool) -> Iterator[None]:
    """Remove what a run writes in ``out`` (``fresh``: a directory empty or missing before it) where what runs
    inside fails before a checkpoint is saved there; a directory the user made empty stays, empty."""
    existed = os.path.isdir(out)
    try:
        yield
    except BaseException:
        if fresh and not os.path.exists(os.path.join(out, "last.ckpt")):
            for entry in os.scandir(out) if existed else []:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.remove(entry.path)
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
        raise


def checkpoint_info(path: str) -> dict[str, Any]:
    """What a pretraining checkpoint says of its run (``geosscl info RUN/last.ckpt``): the step it reached, the
    minutes of a ``--max-time`` run, the network and objective it trains (``settings``), and the library versions
    it was saved with (``software``; None in checkpoints of releases that did not record them)."""
    checkpoint = load_checkpoint(path)
    timed = "Timer" in checkpoint.get("callbacks", {})
    return {"kind": "pretraining checkpoint", "step": checkpoint["global_step"],
            "minutes": round(trained_minutes(checkpoint), 2) if timed else None,
            "settings": dict(checkpoint.get("hyper_parameters", {})), "software": checkpoint["geosscl"].get("software")}


def trained_minutes(checkpoint: dict[str, Any]) -> float:
    """Minutes a run has trained under ``--max-time`` (Lightning's Timer keeps them across resumes)."""
    return checkpoint.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {}).get("train", 0.0) / 60


def _check_limits_left(config: PretrainConfig, checkpoint: dict[str, Any]) -> None:
    """Refuse a resume whose limits the run has reached: Lightning counts both over the whole
    run, and would end it after one more step without a word."""
    step = checkpoint.get("global_step", 0)
    if config.max_steps and step >= config.max_steps:
        raise GeossclError(f"{config.resume}: the run is at step {step} and --max-steps counts all of its steps; "
                           f"give more than {step}")
    minutes = trained_minutes(checkpoint)
    if config.max_time and minutes >= config.max_time:
        raise GeossclError(f"{config.resume}: the run has trained {minutes:.2f} minutes and --max-time counts all of "
                           f"them; give more than {minutes:.2f}")


class _BestCheckpoint(pl.callbacks.ModelCheckpoint):
    """Lightning's checkpoint callback under a key that does not hold ``every_n_train_steps``."""

    @property
    def state_key(self) -> str:
        # Lightning's key holds every_n_train_steps, which follows the run's length here: a
        # resume with another --max-steps lost the best loss so far (so a worse checkpoint
        # could replace best.ckpt) and warned about callbacks it could not match.
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)


class ReportProgress(pl.Callback):
    """Reports training progress to ``report(done, total)`` after every step, for programs that drive geosscl (the
    QGIS plugin): steps of ``max_steps``, else whole seconds of ``max_time`` minutes."""

    def __init__(self, report: Callable[[int, int], None], max_steps: int | None, max_time: float | None) -> None:
        self.report, self.max_steps, self.max_time = report, max_steps, max_time
        self.start = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.start = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        if self.max_steps:  # a run with both limits ends at whichever comes first; steps are the usual one
            self.report(trainer.global_step, self.max_steps)
        else:
            total = round(60 * self.max_time)
            # The time that ends the run: a resumed run's Timer holds its earlier minutes too.
            timer = next((c for c in trainer.callbacks if isinstance(c, pl.callbacks.Timer)), None)
            elapsed = timer.time_elapsed("train") if timer is not None else time.monotonic() - self.start
            # Rounded as the total is: the step that reaches the limit reports it (int() left 8 of 9).
            self.report(min(total, round(elapsed)), total)


@contextlib.contextmanager
def quiet_lightning(quiet: bool = False) -> Iterator[None]:
    """Silence Lightning warnings that are expected in geosscl runs and tell a user nothing.

    With ``quiet``, Lightning's info lines (devices, time limits) are hidden too; the
    loggers' levels are restored afterwards.
    """
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    if quiet:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
    # Lightning 2.6 advertises a cloud logging service on every run ("💡 Tip: ... litlogger"), through the
    # logger its rank-zero messages are created on (a filter acts only where a record is created).
    senders = [logging.getLogger(f"{name}.utilities.rank_zero") for name in ("lightning.pytorch", "lightning.fabric")]
    for sender in senders:
        sender.addFilter(_no_tips)
    with warnings.catch_warnings():
        for message in (
            ".*does not have many workers.*",
            ".*smaller than the logging interval.*",
            ".*overridden `on_after_batch_transfer`.*",
            ".*defined a `validation_step` but have no `val_dataloader`.*",
            ".*exists and is not empty.*",  # config.yaml and band_stats.json are written there first, on purpose
            ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",  # Lightning 2.6 on torch 2.14's pytree
            # PairDataModule continues the pair stream from the global step itself.
            ".*resuming from a checkpoint that ended before the epoch ended.*",
            # A copied run folder resumed in the copy (on purpose): only best.ckpt's score is carried over.
            ".*The dirpath has changed from.*",
        ):
            warnings.filterwarnings("ignore", message=message)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
            for sender in senders:
                sender.removeFilter(_no_tips)


def _no_tips(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡")


def progress_bar(label: str) -> pl.Callback:
    """Lightning's rich progress bar, its line headed by ``label`` and the epoch.

    Lightning heads it "Epoch N/max_epochs - 1", which reads "Epoch 0/-2" for runs
    ended by steps or time (``max_epochs=-1``), as all of geosscl's are.
    """
    from lightning.pytorch.callbacks import RichProgressBar

    class _Bar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:  # Lightning's hook for the heading
            return f"{label} (epoch {current_epoch})" if current_epoch else label

    return _Bar(leave=True)


class _Throughput(pl.Callback):
    """Logs pairs per second to the progress bar."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.last: float | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        now = time.perf_counter()
        if self.last is not None:
            module.log("pairs_per_s", self.batch_size / max(now - self.last, 1e-9), prog_bar=True)
        self.last = now


class _FinalCheckpoint(pl.Callback):
    """``last.ckpt`` at the very last step too, whatever the checkpoint interval, and on SIGTERM.

    Lightning stops at a step boundary on SIGTERM (what schedulers send before
    preempting a job) but saves nothing; saving here makes the resume lose no step.
    Not ``ModelCheckpoint(save_on_exception=True)``: that saves after any exception,
    a failed step's included, and writes its monitored file (``best.ckpt``) whether
    or not the state is the best.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # full state: a run can resume from it

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path, weights_only=False)


class _StopOnInterrupt(pl.Callback):
    """Ctrl-C ends the run at the end of the current step, saved; a second Ctrl-C aborts.

    Lightning turns a KeyboardInterrupt into exit status 1 wherever it lands (inside
    an optimiser step, say) and saves nothing; a checkpoint taken there could hold
    half-updated weights. Here SIGINT only asks for a stop, and the run stops at the
    next step boundary, where the state is whole (``_FinalCheckpoint`` saves it at
    the end of training). Under DDP every rank gets the terminal's SIGINT at its own
    moment, so the request is reduced across ranks and all stop at the same step.
    """

    def __init__(self) -> None:
        self.asked = self.stopped = False
        self._previous: Any = None
        self._lead = True

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._lead = trainer.is_global_zero
        # Signal handlers live in the main thread only; and a program that calls pretrain()
        # after setting SIGINT to be ignored keeps it ignored.
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            previous = signal.signal(signal.SIGINT, self._ask)
            self._previous = signal.default_int_handler if previous is None else previous  # None: set outside Python

    def _ask(self, signum: int, frame: Any) -> None:
        self.asked = True
        signal.signal(signal.SIGINT, self._previous)  # the next Ctrl-C interrupts at once
        if self._lead:
            print("\nCtrl-C: stopping after this step and saving (Ctrl-C again: stop now, unsaved)", file=sys.stderr)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.strategy.reduce_boolean_decision(self.asked, all=False):
            self.stopped = trainer.should_stop = True

    def teardown(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _warn_other_software(path: str, checkpoint: dict[str, Any]) -> None:
    """Say where a resumed run goes on with other library versions than its checkpoint's: it then does not repeat
    the uninterrupted run (a kornia release alone changes the augmentations a seed draws)."""
    saved, now = checkpoint["geosscl"].get("software") or {}, software()
    changed = [f"{name} {version}, now {now[name]}" for name, version in saved.items()
               if name in now and version != now[name]]
    if changed and rank_zero_only.rank == 0:
        log.warning("%s was saved with other libraries (%s): the run goes on, but not as it would have uninterrupted",
                    path, "; ".join(changed))


def _check_same_run(path: str, saved: dict[str, Any], asked: dict[str, Any]) -> None:
    """Fail clearly when a resume asks for a model or objective other than the checkpoint's.

    The network, heads, queue and optimiser state must fit the checkpoint, and a
    changed loss or learning rate would not be the run that was started.
    """
    differ = [f"{key}={saved[key]!r} (asked {value!r})" for key, value in asked.items()
              if key in saved and key not in ("band_mean", "band_std", "band_names") and _plain(saved[key]) != _plain(value)]
    if differ:
        run = os.path.dirname(path) or "."
        raise GeossclError(f"{path}: the run was started with {', '.join(differ)}; resume with its settings "
                           f"(they are in {os.path.join(run, 'config.yaml')}, which `geosscl pretrain --resume` reads)")


def _first_step(metrics: str) -> float:
    """The first step logged in ``metrics`` (infinity when it holds none)."""
    import csv

    if not os.path.exists(metrics):
        return float("inf")
    with open(metrics) as f:
        return min((int(row["step"]) for row in csv.DictReader(f)), default=float("inf"))


def _prepend_metrics(previous: str, metrics: str, before_step: float) -> None:
    """Put the rows of the run before the resume (steps < before_step) back in metrics.csv."""
    import csv

    with open(previous) as f:
        old = [row for row in csv.DictReader(f) if int(row["step"]) < before_step]
    new: list[dict[str, str]] = []
    if os.path.exists(metrics):
        with open(metrics) as f:
            new = list(csv.DictReader(f))
    columns = list(dict.fromkeys([k for row in old + new for k in row]))
    tmp = metrics + ".part"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(old + new)
    os.replace(tmp, metrics)
    os.remove(previous)


def plot_losses(metrics_csv: str, png: str) -> None:
    """Loss curves (each term and the total, per step) from a run's metrics.csv."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not os.path.exists(metrics_csv):
        return
    series: dict[str, list[tuple[int, float]]] = {}
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key.startswith("loss") and value not in ("", None):
                    series.setdefault(key, []).append((int(row["step"]), float(value)))
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, points in sorted(series.items()):
        steps, values = zip(*points)
        ax.plot(steps, values, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    tmp = png + ".part.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)


def _write_yaml(path: str, data: dict[str, Any]) -> None:
    tmp = path + ".part"
    with open(tmp, "w") as f:
        yaml.safe_dump(_plain(data), f, sort_keys=False)
    os.replace(tmp, path)


def _write_json(path: str, data: dict[str, Any]) -> None:
    import json

    tmp = path + ".part"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
