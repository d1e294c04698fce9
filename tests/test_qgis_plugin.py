"""The QGIS plugin in real QGIS: its own test suite inside QGIS's Python, and qgis_process.

QGIS comes from Debian (installed here when missing; the CI machine is root). The
plugin's tests (tests/qgis) run in a venv made from QGIS's Python with
--system-site-packages and pytest-qgis 2.1.0 (the last one for QGIS 3.22); they call
the geosscl of this venv, as a user's QGIS would.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import SAMPLES, TUTORIAL_POLYGONS, TUTORIAL_STACK, write_raster

ROOT = Path(__file__).resolve().parent.parent
QGIS_PROCESS = "/usr/bin/qgis_process.bin"
SYSTEM_PYTHON = "/usr/bin/python3"
#: Bundled files, as paths inside sample_data/: qgis_process reads them from the copy the ``samples`` fixture makes.
SCENE = Path("nc_landsat") / "lsat7_2000.vrt"
STRATA = Path("nc_landsat") / "strata.tif"
MODEL = Path("models") / "nc_landuse.safetensors"
TUTORIAL_FILES = TUTORIAL_STACK.relative_to(SAMPLES), TUTORIAL_POLYGONS.relative_to(SAMPLES)
GEOSSCL = str(Path(sys.executable).parent / "geosscl")
#: The plugin's suite (tests/qgis) in three runs of about five minutes each on a 2-core CPU, which pytest-xdist spreads
#: over its workers: in one run it would take 14 minutes, longer than all the other tests together on two workers.
QGIS_SUITE_PARTS = {
    "training": ["test_training.py"],
    "segmenting": ["test_plugin.py", "test_suggestion.py"],
    "pretraining": ["test_pretraining.py", "test_evaluation.py", "test_categories.py"],
}


@contextlib.contextmanager
def _one_worker_at_a_time(tmp_path_factory, name: str):
    """Held by one pytest-xdist worker at a time: they share the QGIS install, .venv-qgis and ``make plugin``'s zip."""
    with open(tmp_path_factory.getbasetemp().parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PROJ_LIB", "PROJ_DATA", "GDAL_DATA", "GDAL_DRIVER_PATH")}
    # GDAL_PAM_ENABLED=NO: QGIS would leave .aux.xml statistics files beside the bundled rasters.
    env.update(QT_QPA_PLATFORM="offscreen", GEOSSCL_EXECUTABLE=GEOSSCL, GDAL_PAM_ENABLED="NO", **extra)
    return env


@pytest.fixture(scope="session")
def qgis(tmp_path_factory) -> None:
    """Debian's QGIS, installed when missing."""
    with _one_worker_at_a_time(tmp_path_factory, "qgis"):
        _install_qgis()


def _install_qgis() -> None:
    have = os.path.exists(QGIS_PROCESS) and subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"],
                                                          capture_output=True).returncode == 0
    if not have:
        if os.geteuid() != 0:
            pytest.fail("QGIS is not installed and installing it needs root: apt-get install -y qgis python3-qgis qgis-providers")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "qgis", "python3-qgis", "qgis-providers"], check=True, env=env,
                       capture_output=True)


@pytest.fixture(scope="session")
def qgis_python(qgis, tmp_path_factory) -> str:
    """A venv of QGIS's Python (system site packages) with pytest-qgis."""
    venv = ROOT / ".venv-qgis"
    python = venv / "bin" / "python"
    stamp = venv / ".ready"
    with _one_worker_at_a_time(tmp_path_factory, "venv-qgis"):
        if not stamp.exists():
            subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            "pytest-qgis==2.1.0", "pytest>=7,<9"], check=True, env=_environment())
            stamp.touch()
    return str(python)


@pytest.mark.long
@pytest.mark.parametrize("part", QGIS_SUITE_PARTS)
def test_plugin_suite_inside_qgis(qgis_python, part, tmp_path):
    files = [str(ROOT / "tests" / "qgis" / name) for name in QGIS_SUITE_PARTS[part]]
    # A profile of its own: runs on other workers would share the user's QGIS settings and databases.
    result = subprocess.run(
        [qgis_python, "-m", "pytest", "-c", str(ROOT / "tests" / "qgis" / "pytest.ini"), *files, "-q",
         "--qgis_disable_gui"],
        capture_output=True, text=True, env=_environment(QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile")), cwd=ROOT,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_the_parts_are_the_whole_plugin_suite():
    parts = [name for names in QGIS_SUITE_PARTS.values() for name in names]
    assert sorted(parts) == sorted(p.name for p in (ROOT / "tests" / "qgis").glob("test_*.py"))


@pytest.fixture(scope="session")
def plugin_zip(tmp_path_factory) -> Path:
    """The plugin as users install it: ``make plugin``'s zip, extracted into a plugin folder."""
    folder = tmp_path_factory.mktemp("plugins")
    with _one_worker_at_a_time(tmp_path_factory, "plugin-zip"):
        built = subprocess.run(["make", "-s", "plugin", f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True,
                               text=True)
        assert built.returncode == 0, built.stderr
        with zipfile.ZipFile(ROOT / "dist" / "geosscl_processing.zip") as archive:
            names = archive.namelist()
            assert "geosscl_processing/metadata.txt" in names and not any("__pycache__" in n for n in names)
            archive.extractall(folder)
    metadata = (folder / "geosscl_processing" / "metadata.txt").read_text()
    assert "hasProcessingProvider=yes" in metadata and "qgisMinimumVersion=3.22" in metadata
    return folder


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> Path:
    """A copy of sample_data/ for QGIS to open: it writes into the rasters it opens (tests/qgis/conftest.py)."""
    copy = tmp_path_factory.mktemp("qgis-samples") / "sample_data"
    shutil.copytree(SAMPLES, copy)
    return copy


@pytest.fixture()
def qgis_process(qgis, plugin_zip, tmp_path):
    """Runs qgis_process with the installed plugin enabled in a throw-away profile."""
    env = _environment(QGIS_PLUGINPATH=str(plugin_zip), QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"))
    enabled = subprocess.run([QGIS_PROCESS, "plugins", "enable", "geosscl_processing"], capture_output=True, text=True,
                             env=env, timeout=300)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr

    def run(*args: str, **kwargs):
        return subprocess.run([QGIS_PROCESS, *args], capture_output=True, text=True, env=env, timeout=600, **kwargs)

    run.env = env
    return run


def test_qgis_process_smoke(qgis_process, samples, tmp_path):
    scene, model = samples / SCENE, samples / MODEL
    out = tmp_path / "classes.tif"
    result = qgis_process("run", "geosscl:segment_raster", "--", f"INPUT={scene}", f"MODEL={model}", f"OUTPUT={out}",
                          "BATCH_SIZE=4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reference = tmp_path / "reference.tif"
    cli = subprocess.run([GEOSSCL, "predict", str(scene), "-m", str(model), "-o", str(reference), "-q"],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    with rasterio.open(out) as got, rasterio.open(reference) as want:
        np.testing.assert_array_equal(got.read(1), want.read(1))
        assert got.crs == want.crs and got.transform == want.transform
        assert json.loads(got.tags()["class_names"])[4] == "forest" and json.loads(got.tags()["class_values"])[4] == 5
    failing = qgis_process("run", "geosscl:segment_raster", "--", f"INPUT={scene}", f"MODEL={tmp_path / 'nope.safetensors'}",
                           f"OUTPUT={tmp_path / 'failed.tif'}")
    assert failing.returncode != 0 and "does not exist" in failing.stdout + failing.stderr
    assert not (tmp_path / "failed.tif").exists()


def test_qgis_process_runs_a_probe_classifier(qgis_process, samples, tmp_path):
    """A model written by ``geosscl probe -o`` (the hypercolumn classifier) segments in QGIS as on the command line."""
    scene, model = samples / SCENE, tmp_path / "stage1.safetensors"
    made = subprocess.run([GEOSSCL, "probe", str(scene), "--labels", str(samples / STRATA),
                           "--classes", str(samples / "nc_landsat" / "classes.yaml"), "--stages", "1", "--crop-size", "64",
                           "--label-fraction", "0.2", "-o", str(model), "-q"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    out = tmp_path / "classes.tif"
    result = qgis_process("run", "geosscl:segment_raster", "--", f"INPUT={scene}", f"MODEL={model}", f"OUTPUT={out}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reference = tmp_path / "reference.tif"
    cli = subprocess.run([GEOSSCL, "predict", str(scene), "-m", str(model), "-o", str(reference), "-q"],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    with rasterio.open(out) as got, rasterio.open(reference) as want, rasterio.open(scene) as source:
        classes = got.read(1)
        np.testing.assert_array_equal(classes, want.read(1))
        assert got.crs == source.crs and got.transform == source.transform and got.shape == source.shape
        assert json.loads(got.tags()["class_names"])[4] == "forest" and json.loads(got.tags()["class_values"])[4] == 5
    assert len(np.unique(classes[classes < 255])) >= 3  # a land-use map, not one class


def test_qgis_process_trains_a_model_from_polygons(qgis_process, samples, tmp_path):
    """The installed plugin's training algorithm: the tutorial's digitised polygons make a model that segments."""
    tutorial_stack, tutorial_polygons = (samples / path for path in TUTORIAL_FILES)
    model, classes = tmp_path / "tutorial.safetensors", tmp_path / "classes.tif"
    result = qgis_process("run", "geosscl:train_model", "--", f"INPUT={tutorial_stack}", f"LABELS={tutorial_polygons}",
                          "CLASS_FIELD=class", f"OUTPUT={model}", f"CLASS_MAP={classes}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    info = subprocess.run([GEOSSCL, "info", str(model)], capture_output=True, text=True)
    assert json.loads(info.stdout)["class_names"] == ["barren", "forest", "herbaceous", "urban", "water"]
    with rasterio.open(classes) as got, rasterio.open(tutorial_stack) as source:
        assert got.crs == source.crs and got.transform == source.transform
        assert len(np.unique(got.read(1))) == 5
    scores = tmp_path / "scores.json"
    result = qgis_process("run", "geosscl:evaluate_model", "--", f"INPUT={tutorial_stack}", f"MODEL={model}",
                          f"LABELS={tutorial_polygons}", "CLASS_FIELD=class", f"OUTPUT_JSON={scores}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    miou = json.loads(scores.read_text())["miou"]
    reported = re.search(r"^MIOU:\t(\S+)$", result.stdout, re.M)
    assert reported and float(reported.group(1)) == pytest.approx(miou) and miou > 0.9  # its own training polygons


def test_qgis_process_pretrains_trains_on_a_class_raster_and_scores(qgis_process, samples, tmp_path):
    """The toolbox's whole workflow from the installed plugin: pretrain on the NC scene, train a classifier of its
    encoder on the land-use class raster (given by path), and score it."""
    scene, run = samples / SCENE, tmp_path / "run"
    result = qgis_process("run", "geosscl:pretrain", "--", f"INPUT={scene}", "STEPS=2", "CROP_SIZE=64", "BATCH_SIZE=4",
                          f"OUTPUT={run}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(rf"^CHECKPOINT:\t{re.escape(str(run / 'last.ckpt'))}$", result.stdout, re.M), result.stdout[-2000:]
    # Continued from the command line, without a run folder: it goes on in its own.
    result = qgis_process("run", "geosscl:pretrain", "--", f"INPUT={scene}", "STEPS=3", f"RESUME={run / 'last.ckpt'}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(rf"^CHECKPOINT:\t{re.escape(str(run / 'last.ckpt'))}$", result.stdout, re.M), result.stdout[-2000:]
    with open(run / "metrics.csv") as f:
        assert {int(row["step"]) for row in csv.DictReader(f) if row.get("loss")} == {0, 1, 2}
    strata, model = samples / STRATA, tmp_path / "land_use.safetensors"
    result = qgis_process("run", "geosscl:train_model", "--", f"INPUT={scene}", f"LABEL_RASTER={strata}",
                          f"INIT={run / 'last.ckpt'}", "CROP_SIZE=64", f"OUTPUT={model}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    info = json.loads(subprocess.run([GEOSSCL, "info", str(model)], capture_output=True, text=True).stdout)
    assert info["class_names"] == [f"class {i}" for i in range(1, 8)]  # values 1-7, unstyled: no names
    assert info["class_values"] == [1, 2, 3, 4, 5, 6, 7]
    assert info["provenance"]["init"] == str(run / "last.ckpt")
    scores = tmp_path / "scores.json"
    result = qgis_process("run", "geosscl:evaluate_model", "--", f"INPUT={scene}", f"MODEL={model}",
                          f"LABEL_RASTER={strata}", f"OUTPUT_JSON={scores}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    got = json.loads(scores.read_text())
    reported = re.search(r"^OVERALL_ACCURACY:\t(\S+)$", result.stdout, re.M)
    assert reported and float(reported.group(1)) == pytest.approx(got["overall_accuracy"])
    assert got["overall_accuracy"] > 0.65


def test_killed_qgis_process_leaves_nothing(qgis_process, samples, tmp_path):
    with rasterio.open(samples / SCENE) as src:
        big = write_raster(tmp_path / "big.tif", np.tile(src.read(), (1, 3, 3)), crs=src.crs, transform=src.transform,
                           nodata=src.nodata)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    process = subprocess.Popen(
        [QGIS_PROCESS, "run", "geosscl:segment_raster", "--", f"INPUT={big}", f"MODEL={samples / MODEL}",
         f"OUTPUT={out_dir / 'c.tif'}", "TILE_SIZE=64", "OVERLAP=16"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=qgis_process.env,
    )
    deadline = time.time() + 300
    while not any(out_dir.iterdir()) and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)  # geosscl has started writing (temporary files)
    assert any(out_dir.iterdir()), "geosscl never started"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0
    deadline = time.time() + 60
    while any(out_dir.iterdir()) and time.time() < deadline:
        time.sleep(0.2)  # the orphaned geosscl got SIGTERM too, and cleans up
    assert list(out_dir.iterdir()) == []
