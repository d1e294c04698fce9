"""The ``geosscl`` command, run as a user would: a real subprocess on real files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import BUNDLED_MODEL, NAIP, NC_BANDS, TUTORIAL_2002, TUTORIAL_STACK, write_raster

GEOSSCL = [sys.executable, "-m", "geosscl"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*GEOSSCL, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_pairs_writes_a_png(tmp_path):
    out = tmp_path / "pairs.png"
    result = run("pairs", NAIP, "-b", "1,2,3", "--count", "3", "--view-size", "64", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "EPSG:26914" in result.stdout
    image = np.asarray(Image.open(out))
    assert image.shape[0] > 3 * 100 and image.shape[2] in (3, 4)
    assert image[..., :3].std() > 10  # pictures, not a blank page
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.png"]


def test_pairs_from_a_directory_of_band_files(tmp_path):
    out = tmp_path / "nc.png"
    result = run("pairs", NC_BANDS[0].parent / "lsat7_2000_*.tif", "-b", "3,2,1", "--count", "2", "-o", out, "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert out.stat().st_size > 1000


def test_pairs_across_dates_name_both_files(tmp_path):
    result = run("pairs", TUTORIAL_STACK, TUTORIAL_2002, "--across-dates", "-b", "4,3,2", "--count", "4", "--view-size",
                 "64", "-o", tmp_path / "dates.png")
    assert result.returncode == 0, result.stderr
    assert "2 file(s) in 2 place(s)" in result.stdout and "bands: 4,3,2" in result.stdout
    drawn = [line.split(", from ")[1].split(" and ") for line in result.stdout.splitlines() if line.startswith("pair ")]
    assert len(drawn) == 4 and all(sorted(files) == sorted([TUTORIAL_STACK.name, TUTORIAL_2002.name]) for files in drawn)
    assert (tmp_path / "dates.png").stat().st_size > 1000


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "make_input, extra, fragments",
    [
        (lambda d: d / "empty", [], ["empty", "holds no raster files"]),
        (lambda d: d / "notes.tif", [], ["notes.tif", "not a readable raster"]),
        (lambda d: d / "nocrs.tif", [], ["nocrs.tif", "has no CRS"]),
        (lambda d: NAIP, ["-b", "1,9"], ["bands: band 9 is out of range"]),
        (lambda d: NAIP, ["--view-size", "2000"], ["size:", "larger than the region"]),
        (lambda d: NAIP, ["--overlap", "0.9,0.2"], ["overlap: range (0.9, 0.2) cannot be met"]),
        (lambda d: NAIP, ["--across-dates"], ["across-dates: no two files of the imagery cover the same ground"]),
    ],
)
def test_bad_input_fails_clearly_and_writes_nothing(tmp_path, make_input, extra, fragments):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.tif").write_text("not a raster")
    write_raster(tmp_path / "nocrs.tif", np.zeros((1, 8, 8), np.uint8), crs=None)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run("pairs", make_input(tmp_path), *extra, "-o", out_dir / "pairs.png")
    assert_one_line_error(result, *fragments)
    assert list(out_dir.iterdir()) == []


def test_malformed_option_is_a_usage_error(tmp_path):
    result = run("pairs", NAIP, "--overlap", "0.9", "-o", tmp_path / "pairs.png")
    assert result.returncode == 2
    assert "Invalid value for --overlap: expected 2 comma-separated numbers" in result.stderr.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "pairs.png"
    out.write_bytes(b"keep me")
    result = run("pairs", NAIP, "--count", "1", "-o", out)
    assert_one_line_error(result, "pairs.png: already exists; pass --overwrite")
    assert out.read_bytes() == b"keep me"
    result = run("pairs", NAIP, "--count", "1", "-o", out, "--overwrite", "-q")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_command_writes_over_a_file_it_reads(tmp_path):
    """--overwrite replaces earlier outputs, never the imagery, labels or model being read: a class map written over
    one of a VRT's band files would destroy it (and the write is atomic, so it would succeed)."""
    for path in [*NC_BANDS, NC_BANDS[0].parent / "lsat7_2000.vrt", NC_BANDS[0].parent / "strata.tif", BUNDLED_MODEL]:
        shutil.copy(path, tmp_path)
    vrt, model, strata = tmp_path / "lsat7_2000.vrt", tmp_path / BUNDLED_MODEL.name, tmp_path / "strata.tif"
    band = tmp_path / "lsat7_2000_20.tif"
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    labels = ["--labels", strata]
    cases = [
        (["predict", vrt, "-m", model, "-o", band], f"{band}: is read through {vrt}"),
        (["predict", band, "-m", model, "-o", tmp_path / "map.tif", "--probabilities", band], f"{band}: is an input"),
        (["evaluate", model, vrt, *labels, "--png", band], f"{band}: is read through {vrt}"),
        (["evaluate", model, vrt, *labels, "--json", strata], f"{strata}: is an input"),
        (["pairs", tmp_path, "-o", band], f"{band}: is read through {tmp_path}"),
        (["finetune", *NC_BANDS, *labels, "--init", model, "--out", model, "--max-steps", "1"], f"{model}: is an input"),
        (["probe", tmp_path / "lsat7_2000_*.tif", *labels, "--json", band], f"{band}: is read through"),
    ]
    for args, message in cases:
        result = run(*args, "--overwrite" if args[0] not in ("evaluate", "probe") else "-q")
        assert_one_line_error(result, message, "write the output to another file")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_model_files_and_exports_are_named_for_their_format(tmp_path):
    """A safetensors model named model.pt would be handed to torch.load by other tools; an ONNX file named .bin
    would not be found as one."""
    strata = ["--labels", NC_BANDS[0].parent / "strata.tif"]
    cases = [
        (["finetune", *NC_BANDS, *strata, "--out", tmp_path / "model.pt", "--max-steps", "1"],
         f"{tmp_path / 'model.pt'}: a model file is safetensors; name it .safetensors"),
        (["probe", *NC_BANDS, *strata, "-o", tmp_path / "probe.ckpt"], "probe.ckpt: a model file is safetensors"),
        (["export", BUNDLED_MODEL, "-o", tmp_path / "model.bin"], "model.bin: the export is ONNX; name it .onnx"),
    ]
    for args, message in cases:
        assert_one_line_error(run(*args), message)
    assert list(tmp_path.iterdir()) == []


def test_missing_output_directory(tmp_path):
    result = run("pairs", NAIP, "-o", tmp_path / "nowhere" / "pairs.png")
    assert_one_line_error(result, "output directory", "does not exist")


def test_version_and_help():
    assert run("--version").stdout.startswith("geosscl, version")
    help_text = run("pairs", "--help").stdout
    for option in ("--output", "--overwrite", "--bidx", "--overlap", "--scale", "--quiet"):
        assert option in help_text


def test_help_and_the_package_leave_torch_and_torchgeo_unloaded():
    """Their import takes seconds: `geosscl --help` and `import geosscl` do without them, until a command needs them."""
    code = ("import sys; from click.testing import CliRunner; from geosscl.cli.main import cli; import geosscl; "
            "assert CliRunner().invoke(cli, ['pairs', '--help']).exit_code == 0; "
            "print(sorted(m for m in ('torch', 'torchgeo', 'lightning', 'rasterio') if m in sys.modules)); "
            "geosscl.Mosaic; print('torchgeo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "True"]
