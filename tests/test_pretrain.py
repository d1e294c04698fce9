"""SSCCL pretraining on the bundled real imagery: learning, resuming, DDP, ablations, bad input."""

from __future__ import annotations

import csv
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader
from geosscl.data import collate_pairs

from geosscl import GeossclError, Mosaic, PairDataset, __version__
from geosscl.data.stats import band_statistics
from geosscl.tasks import SSCCLTask
from geosscl.training import PretrainConfig, load_checkpoint, pretrain, trained_minutes
from samplers import OverlappingPairSampler
from conftest import NAIP, NC_BANDS, needs_bf16_cpu

FAST = dict(crop_size=64, batch_size=8, num_workers=0, queue_size=64, quiet=True)


def losses(run: Path) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    with open(run / "metrics.csv") as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if k.startswith("loss") and v}
            if values:
                out.setdefault(int(row["step"]), {}).update(values)
    return out


SHORT_RUN_STEPS = 150  # 60 steps left the instance loss where a random init put it, for some inits


def test_short_run_lowers_instance_and_consistency_losses():
    mosaic = Mosaic(NAIP)
    mean, std = band_statistics(mosaic)
    held_out = OverlappingPairSampler(mosaic, 64, length=32, generator=torch.Generator().manual_seed(123))
    held = DataLoader(PairDataset(mosaic, 64), sampler=held_out, batch_size=16, collate_fn=collate_pairs)
    torch.manual_seed(0)  # the same initial weights every run
    task = SSCCLTask(4, mean, std, rgb=True, view_size=64, queue_size=64, lr=1e-3)

    def evaluate() -> dict[str, float]:
        torch.manual_seed(0)  # the same augmentations both times
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        return trainer.validate(task, dataloaders=held, verbose=False)[0]

    before = evaluate()
    from geosscl.data.module import PairDataModule

    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(max_steps=SHORT_RUN_STEPS, max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(task, datamodule=PairDataModule(mosaic, view_size=64, batch_size=16, steps=SHORT_RUN_STEPS))
    after = evaluate()
    for term in ("val_loss_instance", "val_loss_spatial", "val_loss_semantic"):
        assert after[term] < before[term], (term, before[term], after[term])


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    # On the CPU: CUDA's convolution and scatter kernels are not bitwise reproducible
    # (on an H100 the resumed losses differed from step 1 by 2e-4, relative).
    cpu = dict(FAST, accelerator="cpu")
    whole = pretrain(PretrainConfig(imagery=[str(NAIP)], out=str(tmp_path / "whole"), max_steps=6, seed=3, **cpu))
    half = pretrain(PretrainConfig(imagery=[str(NAIP)], out=str(tmp_path / "half"), max_steps=3, seed=3, **cpu))
    resumed = pretrain(PretrainConfig(imagery=[str(NAIP)], out=half, max_steps=6, seed=3,
                                      resume=os.path.join(half, "last.ckpt"), **cpu))
    a, b = losses(Path(whole)), losses(Path(resumed))
    assert sorted(a) == sorted(b) and len(a) == 6
    for step in a:
        for name in a[step]:
            assert b[step][name] == pytest.approx(a[step][name], rel=1e-4, abs=1e-5), (step, name)
    checkpoint = load_checkpoint(os.path.join(resumed, "last.ckpt"))
    assert checkpoint["global_step"] == 6


def test_a_resume_under_other_libraries_says_so(tmp_path, caplog):
    run = Path(pretrain(PretrainConfig(imagery=[str(NAIP)], out=str(tmp_path / "run"), max_steps=2, **FAST)))
    checkpoint = torch.load(run / "last.ckpt", weights_only=True)
    checkpoint["geosscl"]["software"]["kornia"] = "0.1.0"  # as if saved before an upgrade
    torch.save(checkpoint, run / "last.ckpt")
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        pretrain(PretrainConfig(imagery=[str(NAIP)], out=str(run), max_steps=3, resume=str(run / "last.ckpt"), **FAST))
    assert f"last.ckpt was saved with other libraries (kornia 0.1.0, now {metadata.version('kornia')})" in caplog.text
    resumed = load_checkpoint(str(run / "last.ckpt"))
    assert resumed["global_step"] == 3 and resumed["geosscl"]["software"]["kornia"] == metadata.version("kornia")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geosscl"):  # saved with these very libraries: nothing to say
        pretrain(PretrainConfig(imagery=[str(NAIP)], out=str(run), max_steps=4, resume=str(run / "last.ckpt"), **FAST))
    assert "other libraries" not in caplog.text


def test_a_stopped_resumed_run_keeps_its_loss_history(tmp_path):
    run = Path(pretrain(PretrainConfig(imagery=[str(NAIP)], out=str(tmp_path / "run"), max_steps=4, seed=3, **FAST)))
    last = run / "last.ckpt"
    written = last.stat().st_mtime_ns
    # Settings that do not fit the checkpoint fail clearly, before anything is rewritten.
    config = (run / "config.yaml").read_text()
    with pytest.raises(GeossclError, match=r"started with queue_size=64 \(asked 4096\); resume with its settings"):
        pretrain(PretrainConfig(imagery=[str(NAIP)], out=str(run), max_steps=8, resume=str(last), **{**FAST, "queue_size": 4096}))
    assert (run / "config.yaml").read_text() == config and last.stat().st_mtime_ns == written
    # Resume from the command line (the run's settings come from its config.yaml), then kill the
    # process hard (as the OOM killer or a preempted node does; Lightning finishes gracefully on
    # SIGTERM) once it has saved a checkpoint (every 10 steps of 40; Lightning writes them atomically).
    resumed = subprocess.Popen(
        [sys.executable, "-m", "geosscl", "pretrain", "--resume", str(last), "--max-steps", "40"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while resumed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            if last.stat().st_mtime_ns != written:
                written = last.stat().st_mtime_ns
                time.sleep(1.0)  # let the write finish
                if load_checkpoint(str(last))["global_step"] > 4:
                    break
    finally:
        resumed.kill()
        resumed.wait(timeout=60)
    assert resumed.returncode == -9
    stopped_at = load_checkpoint(str(last))["global_step"]
    assert stopped_at > 4
    # Resuming again must keep every step, before the first resume and after it, once.
    pretrain(PretrainConfig(imagery=[str(NAIP)], out=str(run), max_steps=stopped_at + 2, seed=3, resume=str(last), **FAST))
    with open(run / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("loss")]
    assert steps == list(range(stopped_at + 2))
    assert not (run / "metrics.csv.previous").exists()


def test_sigterm_saves_the_run_and_says_how_to_continue(tmp_path):
    run = tmp_path / "run"
    job = subprocess.Popen(
        [sys.executable, "-m", "geosscl", "pretrain", str(NAIP), "--out", str(run), "--max-steps", "400",
         "--crop-size", "64", "--batch-size", "8", "--num-workers", "0", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 300
    while job.poll() is None and time.monotonic() < deadline:  # a few steps, none of them a checkpoint step (50)
        time.sleep(0.2)
        if (run / "metrics.csv").exists() and (run / "metrics.csv").read_text().count("\n") > 4:
            break
    job.terminate()  # SIGTERM, as a scheduler sends before preempting a job
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 143, stderr[-2000:]
    message = stderr.strip().splitlines()[-1]
    stopped_at = load_checkpoint(str(run / "last.ckpt"))["global_step"]
    assert 0 < stopped_at < 50
    assert message == f"Error: {run}: stopped by SIGTERM at step {stopped_at}; continue with geosscl pretrain --resume {run / 'last.ckpt'}"
    pretrain(PretrainConfig(imagery=[str(NAIP)], out=str(run), max_steps=stopped_at + 1, resume=str(run / "last.ckpt"),
                            **{**FAST, "queue_size": 4096}))
    with open(run / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("loss")]
    assert steps == list(range(stopped_at + 1))


def test_ctrl_c_stops_after_the_step_saves_and_says_how_to_continue(tmp_path):
    run = tmp_path / "run"
    # Its own process group, as a terminal's foreground job: Ctrl-C reaches the loader workers too.
    job = subprocess.Popen(
        [sys.executable, "-m", "geosscl", "pretrain", str(NAIP), "--out", str(run), "--max-steps", "400",
         "--crop-size", "64", "--batch-size", "8", "--num-workers", "2", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        # A terminal's foreground job takes SIGINT; a test run started in the background by a
        # shell has it ignored, and the child would inherit that (geosscl keeps an ignored SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        if (run / "metrics.csv").exists() and (run / "metrics.csv").read_text().count("\n") > 4:
            break
    os.killpg(job.pid, signal.SIGINT)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 130, stderr[-2000:]
    stopped_at = load_checkpoint(str(run / "last.ckpt"))["global_step"]
    assert 0 < stopped_at < 50  # saved where it stopped, not at the last interval checkpoint
    assert "Ctrl-C: stopping after this step" in stderr
    assert stderr.strip().splitlines()[-1] == (f"Error: {run}: interrupted (Ctrl-C) at step {stopped_at}; continue "
                                               f"with geosscl pretrain --resume {run / 'last.ckpt'}")
    with open(run / "metrics.csv") as f:
        assert max(int(row["step"]) for row in csv.DictReader(f) if row.get("loss")) == stopped_at - 1


def test_run_directory_contents(tmp_path):
    run = Path(pretrain(PretrainConfig(imagery=[str(NAIP)], out=str(tmp_path / "run"), max_steps=3, **FAST)))
    for name in ("config.yaml", "band_stats.json", "metrics.csv", "loss_curves.png", "last.ckpt", "best.ckpt"):
        assert (run / name).is_file(), name
    assert set(losses(run)[0]) >= {"loss", "loss_instance", "loss_spatial", "loss_semantic"}


@needs_bf16_cpu
def test_bf16_runs_the_networks_in_bfloat16_and_keeps_float32_weights(tmp_path):
    nc = [str(p) for p in NC_BANDS]
    runs = {precision: Path(pretrain(PretrainConfig(imagery=nc, out=str(tmp_path / precision), max_steps=3, seed=5,
                                                    accelerator="cpu", precision=precision, **FAST)))
            for precision in ("32", "bf16")}
    assert "precision: bf16" in (runs["bf16"] / "config.yaml").read_text()  # a resume goes on in bfloat16
    first = {precision: losses(run)[0] for precision, run in runs.items()}
    # The same seed gives the same weights, pairs and augmentations: step 0's losses differ by rounding alone.
    for term in ("loss_instance", "loss_spatial", "loss_semantic"):
        assert first["bf16"][term] != first["32"][term], term
        assert first["bf16"][term] == pytest.approx(first["32"][term], rel=0.02), term
    state = load_checkpoint(str(runs["bf16"] / "last.ckpt"))["state_dict"]
    assert {v.dtype for k, v in state.items() if k.startswith("network.") and v.is_floating_point()} == {torch.float32}
    assert torch.bfloat16 not in {v.dtype for v in state.values()}
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in losses(runs["bf16"]).values())


@pytest.mark.parametrize(
    "weights, arch",
    [
        ({"instance": 1, "spatial": 0, "semantic": 0}, "unet"),
        ({"instance": 0, "spatial": 1, "semantic": 0}, "unet"),
        ({"instance": 0, "spatial": 0, "semantic": 1}, "unet"),
        ({"instance": 1, "spatial": 1, "semantic": 0.5}, "deeplabv3plus"),
    ],
)
def test_every_ablation_runs(tmp_path, weights, arch):
    run = Path(pretrain(PretrainConfig(imagery=[str(p) for p in NC_BANDS], out=str(tmp_path / "run"), max_steps=2,
                                       weights=weights, arch=arch, **FAST)))
    logged = losses(run)[1]
    # Unasked, dense features come from U-Net's first decoder stage; DeepLabV3+ has one, at stride 4.
    assert load_checkpoint(str(run / "last.ckpt"))["hyper_parameters"]["dense_stride"] == (4 if arch == "deeplabv3plus" else 16)
    for term, weight in weights.items():
        assert (f"loss_{term}" in logged) == (weight > 0), (term, logged)
    assert torch.isfinite(torch.tensor(logged["loss"]))


def test_two_process_ddp_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "LOCAL_RANK", "RANK", "WORLD_SIZE"))}
    result = subprocess.run(
        [sys.executable, "-m", "geosscl", "pretrain", str(NAIP), "--out", str(out), "--crop-size", "64",
         "--batch-size", "4", "--max-steps", "3", "--num-workers", "0", "--accelerator", "cpu", "--devices", "2",
         "--strategy", "ddp", "-q"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    assert load_checkpoint(str(out / "last.ckpt"))["global_step"] == 3


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bad_input_fails_before_writing(tmp_path):
    out = tmp_path / "run"

    def expect(message: str, **kwargs) -> None:
        config = {"imagery": [str(NAIP)], "out": str(out), "max_steps": 1, **FAST, **kwargs}
        with pytest.raises(GeossclError, match=message):
            pretrain(PretrainConfig(**config))
        assert not out.exists()

    expect("no such file", imagery=[str(tmp_path / "nothing.tif")])
    expect("bands: band 7 is out of range", bands=[1, 7])
    expect("size: a view of .* is larger than the region", crop_size=4096)
    expect("weights: need at least one positive weight", weights={"instance": 0, "spatial": 0, "semantic": 0})
    expect("crop_size: 48 is not a multiple of 32", crop_size=48)
    expect("crs: 'EPSG:999999' is not a CRS", crs="EPSG:999999")
    expect("size: a view of .* is larger than the region", res=100.0)  # 64 px of 100 m on a 4.7 km scene: --res reaches the grid
    expect("accelerator: 'tpu' is not one of auto, cpu, gpu", accelerator="tpu")
    expect("precision: 'fp16' is not one of 32, bf16", precision="fp16")
    if not torch.cuda.is_available():
        expect("accelerator: gpu requested but no CUDA device is available", accelerator="gpu")
    not_ours = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}}, not_ours)
    expect("not a geosscl pretraining checkpoint", resume=str(not_ours))
    # A checkpoint that would run code when unpickled is refused, and the code never runs.
    exploit = _Exploit()
    exploit.marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps(exploit))
    expect("not a geosscl checkpoint", resume=str(evil))
    assert not exploit.marker.exists()
    shown = subprocess.run([sys.executable, "-m", "geosscl", "info", str(evil)], capture_output=True, text=True)
    assert shown.returncode == 1 and not exploit.marker.exists()
    assert shown.stderr.strip() == (f"Error: {evil}: not a geosscl checkpoint (it holds more than tensors and plain "
                                    "values, or is no PyTorch file; geosscl reads checkpoints weights-only, so that a "
                                    "file cannot run code)")
    other_bands = pretrain(PretrainConfig(imagery=[str(p) for p in NC_BANDS], out=str(tmp_path / "nc"), max_steps=1, **FAST))
    expect("checkpoint has 6 bands, the imagery 4", resume=os.path.join(other_bands, "last.ckpt"))


def test_chips_smaller_than_a_view_are_refused_before_writing(tmp_path):
    """A folder of 64 px chips cut apart from the NAIP scene: views scaled up to 1.5 × 64 px fit in none of
    them. The first batch failed, after the run directory was written; then the same command with smaller
    views was refused, that directory "not empty" and told to resume a checkpoint it did not hold."""
    import rasterio
    from rasterio.windows import Window

    chips = tmp_path / "chips"
    chips.mkdir()
    with rasterio.open(NAIP) as src:
        for row, col in ((0, 0), (200, 100), (400, 600), (600, 300)):
            window = Window(col, row, 64, 64)
            profile = {**src.profile, "width": 64, "height": 64, "transform": src.window_transform(window)}
            with rasterio.open(chips / f"chip_{row}_{col}.tif", "w", **profile) as dst:
                dst.write(src.read(window=window))
    out = tmp_path / "run"
    config = {**FAST, "imagery": [str(chips)], "out": str(out), "max_steps": 2}
    with pytest.raises(GeossclError, match=r"^size: no pair of 64 × 64 px views .* its largest piece spans 64 × 64 px, "
                                           r"a view up to 96 px; use a smaller size or scale"):
        pretrain(PretrainConfig(**config))
    assert not out.exists()
    assert os.path.exists(os.path.join(pretrain(PretrainConfig(**{**config, "crop_size": 32})), "last.ckpt"))


def test_a_run_failing_before_its_first_checkpoint_leaves_nothing_behind(tmp_path):
    """A program driving geosscl (its progress callback) fails at the first step, before any checkpoint:
    nothing in the run directory could be resumed, and the same command would have been refused."""
    out = tmp_path / "run"

    def stop(done, total):
        raise RuntimeError("the program driving geosscl failed")

    config = PretrainConfig(imagery=[str(NAIP)], out=str(out), max_steps=400, **FAST)
    with pytest.raises(RuntimeError, match="the program driving geosscl failed"):
        pretrain(config, progress=stop)
    assert not out.exists()
    out.mkdir()  # a directory made for the run stays, empty
    with pytest.raises(RuntimeError, match="the program driving geosscl failed"):
        pretrain(config, progress=stop)
    assert out.is_dir() and not any(out.iterdir())
    # What a directory without a checkpoint is told.
    (out / "notes.txt").write_text("mine")
    with pytest.raises(GeossclError, match=f"^{out}: run directory exists and is not empty; it holds no checkpoint to "
                                           "resume \\(last.ckpt\\); choose another --out, or remove it$"):
        pretrain(config)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_two_crs_mosaic_pretrains_in_the_crs_asked_for(tmp_path):
    """The real NAIP pair (EPSG:26914 and EPSG:4326, two places): --crs picks the grid the views are drawn on."""
    from conftest import NAIP_4326

    result = subprocess.run([sys.executable, "-m", "geosscl", "pretrain", str(NAIP), str(NAIP_4326), "--crs", "EPSG:32614",
                             "--res", "6", "--out", str(tmp_path / "run"), "--max-steps", "1", "--crop-size", "64",
                             "--batch-size", "4", "--num-workers", "0", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    import yaml

    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["crs"] == "EPSG:32614" and saved["res"] == 6.0
    assert (tmp_path / "run" / "last.ckpt").exists()


def test_cli_pretrain_with_yaml_config(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"imagery: [{NAIP}]\ncrop_size: 64\nbatch_size: 4\nmax_steps: 2\nnum_workers: 0\nqueue_size: 32\nseed: 7\n"
                      "precision: 32\n")  # a number in YAML, "32" on the command line
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "geosscl", "pretrain", "--config", str(config), "--out", str(out),
                             "--weights", "semantic=0", "--jitter", "image"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    # The progress bar is headed by the job, not by Lightning's "Epoch 0/-2" of a run ended by steps.
    shown = result.stdout + result.stderr
    assert "pretrain" in shown and "2/2" in shown and "pairs_per_s" in shown and "Epoch" not in shown, shown[-2000:]
    saved = (out / "config.yaml").read_text()
    assert "crop_size: 64" in saved and "semantic: 0.0" in saved and "seed: 7" in saved and "jitter: image" in saved
    assert "dense_stride: 16" in saved  # resolved, not the unset default
    assert "precision: '32'" in saved
    assert load_checkpoint(str(out / "last.ckpt"))["hyper_parameters"]["jitter"] == "image"
    bad = subprocess.run([sys.executable, "-m", "geosscl", "pretrain", str(NAIP), "--out", str(tmp_path / "x"),
                          "--weights", "instance=0,spatial=0,semantic=0"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "Error: weights: need at least one positive weight and none negative, got instance=0.0, spatial=0.0, semantic=0.0"
    ]
    assert not (tmp_path / "x").exists()


def test_progress_as_json_lines_for_programs(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "geosscl", "pretrain", str(NAIP), "--out", str(out), "--crop-size", "64",
                             "--batch-size", "4", "--max-steps", "3", "--num-workers", "0", "--progress", "jsonl"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]  # nothing but JSON on stdout
    assert lines == [{"done": 1, "total": 3}, {"done": 2, "total": 3}, {"done": 3, "total": 3},
                     {"output": str(out), "checkpoint": str(out / "last.ckpt")}]
    assert load_checkpoint(str(out / "last.ckpt"))["global_step"] == 3
    timed = subprocess.run([sys.executable, "-m", "geosscl", "pretrain", str(NAIP), "--out", str(tmp_path / "timed"),
                            "--crop-size", "64", "--batch-size", "4", "--max-time", "0.05", "--num-workers", "0",
                            "--progress", "jsonl"], capture_output=True, text=True, timeout=300)
    assert timed.returncode == 0, timed.stderr[-2000:]
    seconds = [json.loads(line) for line in timed.stdout.splitlines()][:-1]
    assert seconds and {line["total"] for line in seconds} == {3}  # 0.05 minutes
    assert [line["done"] for line in seconds] == sorted(line["done"] for line in seconds)
    # `geosscl info` on a checkpoint: the run's step or minutes, its settings, and the libraries it was saved with.
    shown = [json.loads(subprocess.run([sys.executable, "-m", "geosscl", "info", str(run / "last.ckpt")],
                                       capture_output=True, text=True, check=True).stdout) for run in (out, tmp_path / "timed")]
    assert shown[0]["step"] == 3 and shown[0]["minutes"] is None and shown[0]["settings"]["view_size"] == 64
    assert shown[0]["software"]["kornia"] == metadata.version("kornia") and shown[0]["software"]["geosscl"] == __version__
    timed_checkpoint = load_checkpoint(str(tmp_path / "timed" / "last.ckpt"))
    assert shown[1]["step"] == timed_checkpoint["global_step"]
    assert shown[1]["minutes"] == round(trained_minutes(timed_checkpoint), 2) > 0  # a step ends past the limit


def test_a_resume_counts_its_limits_over_the_whole_run(tmp_path):
    run, cli = tmp_path / "run", [sys.executable, "-m", "geosscl", "pretrain"]
    first = subprocess.run([*cli, str(NAIP), "--out", str(run), "--crop-size", "64", "--batch-size", "4", "--max-steps", "4",
                            "--max-time", "5", "--num-workers", "0", "-q"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    last = run / "last.ckpt"
    before, saved = load_checkpoint(str(last)), last.read_bytes()
    trained = trained_minutes(before)
    assert 0 < trained < 5
    # A limit the run has reached would end it after one more step, silently: refused, the run untouched.
    for flags, message in ((["--max-steps", "4"], "the run is at step 4 and --max-steps counts all of its steps; give more than 4"),
                           (["--max-time", f"{trained / 2}"],
                            f"the run has trained {trained:.2f} minutes and --max-time counts all of them; give more than {trained:.2f}")):
        bad = subprocess.run([*cli, "--resume", str(last), *flags], capture_output=True, text=True, timeout=300)
        assert bad.returncode == 1 and bad.stderr.strip() == f"Error: {last}: {message}", bad.stderr
        assert last.read_bytes() == saved
    # --max-time alone: the config's step limit goes; progress counts the minutes trained before the resume.
    limit = trained + 0.05
    timed = subprocess.run([*cli, "--resume", str(last), "--max-time", f"{limit}", "--progress", "jsonl"],
                           capture_output=True, text=True, timeout=300)
    assert timed.returncode == 0, timed.stderr[-2000:]
    seconds = [json.loads(line) for line in timed.stdout.splitlines()][:-1]
    assert {line["total"] for line in seconds} == {round(60 * limit)}
    assert seconds[0]["done"] >= int(60 * trained) and seconds[-1]["done"] == round(60 * limit)
    after = load_checkpoint(str(last))
    # Stopped at the first step past the limit: a step of the suite's loaded CPU (4 workers on 2 cores) has taken 8 s.
    assert after["global_step"] > 4 and limit <= trained_minutes(after) < limit + 0.25
    # The best loss so far survives a resume with other limits (Lightning keyed it by the checkpoint interval).
    assert "callbacks used to create the checkpoint" not in timed.stderr
    best = [key for key in after["callbacks"] if "Checkpoint" in key]
    assert best == [key for key in before["callbacks"] if "Checkpoint" in key] and len(best) == 1
    assert after["callbacks"][best[0]]["best_model_score"] <= before["callbacks"][best[0]]["best_model_score"]


def test_a_copied_run_resumes_in_the_copy_and_leaves_the_original_alone(tmp_path):
    # Copying a run to try a longer budget is common; the copy's config.yaml still names the original.
    run, copy, cli = tmp_path / "run", tmp_path / "copy", [sys.executable, "-m", "geosscl", "pretrain"]
    first = subprocess.run([*cli, str(NAIP), "--out", str(run), "--crop-size", "64", "--batch-size", "4", "--max-steps", "3",
                            "--num-workers", "0", "-q"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    shutil.copytree(run, copy)
    original = {path.name: path.read_bytes() for path in run.iterdir()}
    resumed = subprocess.run([*cli, "--resume", str(copy / "last.ckpt"), "--max-steps", "5", "-q"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stderr == ""  # -q: not even Lightning's note that the checkpoint's folder has changed
    assert {path.name: path.read_bytes() for path in run.iterdir()} == original
    assert load_checkpoint(str(copy / "last.ckpt"))["global_step"] == 5
    assert sorted(losses(copy)) == [0, 1, 2, 3, 4]  # the copy's steps (counted from 0), continued
    assert f"out: {copy}" in (copy / "config.yaml").read_text()
    # A checkpoint alone (no config.yaml beside it) also goes on in its own folder, with the settings given.
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run / "last.ckpt", lone)
    alone = subprocess.run([*cli, str(NAIP), "--resume", str(lone / "last.ckpt"), "--crop-size", "64", "--batch-size", "4",
                            "--max-steps", "4", "--num-workers", "0", "-q"], capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert load_checkpoint(str(lone / "last.ckpt"))["global_step"] == 4 and (lone / "config.yaml").exists()
    assert {path.name: path.read_bytes() for path in run.iterdir()} == original
    # A checkpoint that is not there is named, before anything is made.
    gone = tmp_path / "gone" / "last.ckpt"
    missing = subprocess.run([*cli, "--resume", str(gone), "--max-steps", "5"], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and f"Invalid value for '--resume': File '{gone}' does not exist." in missing.stderr
    assert not gone.parent.exists()


def test_a_batch_spreads_over_the_whole_mosaic(naip_halves):
    from geosscl.data.module import PairDataModule

    left, right = naip_halves
    mosaic = Mosaic([left, right])
    seam = Mosaic(left).index.total_bounds[2]
    module = PairDataModule(mosaic, view_size=64, batch_size=32, steps=1, seed=5)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    centres = (batch["box_a"][:, 0] + batch["box_a"][:, 2]) / 2
    west = int((centres < seam).sum())
    # Both files, in proportion to their area (about half each), and no two pairs on the same spot.
    assert 8 <= west <= 24, west
    assert len({tuple(b.tolist()) for b in batch["box_a"]}) == 32


def test_every_date_of_a_place_is_pretrained_on(tmp_path):
    """Two Landsat dates of one tile (1999, 2002): a batch holds views of each, each view from one date alone."""
    import numpy as np
    import rasterio
    from rasterio.windows import from_bounds

    from conftest import TUTORIAL_2002, TUTORIAL_STACK
    from geosscl.data.module import PairDataModule

    # Normalisation counts both dates: each band's mean lies between the two dates' own.
    both = band_statistics(Mosaic([TUTORIAL_STACK, TUTORIAL_2002]))[0]
    old_mean, new_mean = band_statistics(Mosaic(TUTORIAL_STACK))[0], band_statistics(Mosaic(TUTORIAL_2002))[0]
    for band in range(7):
        low, high = sorted((old_mean[band], new_mean[band]))
        assert low + 0.1 * (high - low) < both[band] < high - 0.1 * (high - low), (band, low, both[band], high)

    module = PairDataModule(Mosaic([TUTORIAL_STACK, TUTORIAL_2002]), view_size=64, batch_size=32, steps=1, seed=5)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    dates = []
    with rasterio.open(TUTORIAL_STACK) as old, rasterio.open(TUTORIAL_2002) as new:
        for union, (h, w), box in zip(batch["union"].numpy(), batch["union_size"].tolist(), batch["union_box"].tolist()):
            window = from_bounds(box[0], box[3] - h * 30.0, box[0] + w * 30.0, box[3], old.transform).round_offsets()
            window = rasterio.windows.Window(window.col_off, window.row_off, w, h)
            matches = [np.array_equal(union[:, :h, :w], src.read(window=window)) for src in (old, new)]
            assert sum(matches) == 1
            dates.append(matches.index(True))
    assert 8 <= sum(dates) <= 24, sum(dates)  # about half of the pairs from each date

    # The two views of a pair from the two dates: 8 bands a view, not 16.
    def run(*imagery: Path, out: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "geosscl", "pretrain", *map(str, imagery), "--across-dates",
                               "--out", str(out), "--max-steps", "2", "--crop-size", "64", "--batch-size", "4",
                               "--num-workers", "0", "-q"], capture_output=True, text=True)

    result = run(TUTORIAL_STACK, TUTORIAL_2002, out=tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(str(tmp_path / "run" / "last.ckpt"))["hyper_parameters"]["in_channels"] == 8
    import yaml

    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["across_dates"] is True
    alone = run(TUTORIAL_STACK, out=tmp_path / "alone")
    assert alone.returncode == 1 and not (tmp_path / "alone").exists()
    assert alone.stderr.strip().splitlines()[-1] == (
        "Error: across-dates: no two files of the imagery cover the same ground; it needs several dates "
        "(or other acquisitions) of a place")


def test_max_nodata_keeps_views_off_a_date_s_masked_part(tmp_path):
    """The tutorial tile of 1999 and of 2002 with its west half masked (clouds): with --max-nodata no view of a
    pretraining batch is mostly nodata, also across dates; the run trains and keeps the setting for --resume."""
    import yaml

    from conftest import TUTORIAL_STACK, half_masked_2002
    from geosscl.data import cut_views
    from geosscl.data.module import PairDataModule

    cloudy = half_masked_2002(tmp_path)
    mosaic = Mosaic([TUTORIAL_STACK, cloudy])

    def worst(max_nodata):
        module = PairDataModule(mosaic, view_size=32, batch_size=64, steps=1, seed=2, across_files=True,
                                max_nodata=max_nodata)
        module.setup("fit")
        views = cut_views(next(iter(module.train_dataloader())), 32)
        return max(float(torch.isnan(views[k]).any(1).flatten(1).float().mean(1).max()) for k in ("image_a", "image_b"))

    assert worst(None) > 0.5
    assert worst(0.1) <= 0.1 + 2 / 8  # estimated on cells of an eighth of a view: a row or column of slack
    result = subprocess.run([sys.executable, "-m", "geosscl", "pretrain", str(TUTORIAL_STACK), str(cloudy), "--across-dates",
                             "--max-nodata", "0.1", "--out", str(tmp_path / "run"), "--max-steps", "2", "--crop-size", "64",
                             "--batch-size", "4", "--num-workers", "0", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["max_nodata"] == 0.1
    refused = subprocess.run([sys.executable, "-m", "geosscl", "pretrain", str(TUTORIAL_STACK), "--max-nodata", "1",
                              "--out", str(tmp_path / "refused")], capture_output=True, text=True)
    assert refused.returncode == 2 and "--max-nodata" in refused.stderr and not (tmp_path / "refused").exists()
