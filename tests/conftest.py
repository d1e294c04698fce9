"""Shared fixtures: the bundled real rasters, and tiny synthetic ones for edge cases."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from geosscl.precision import cpu_has_bfloat16

SAMPLES = Path(__file__).resolve().parent.parent / "sample_data"
NAIP = SAMPLES / "naip" / "m_4709963_se_14_1_20200831.tif"
NAIP_4326 = SAMPLES / "naip" / "naip_2020_epsg4326.tif"
NC_BANDS = sorted((SAMPLES / "nc_landsat").glob("lsat7_2000_*.tif"))
TUTORIAL = SAMPLES / "landsat_tutorial"
TUTORIAL_STACK = TUTORIAL / "LE70220491999322EDC01_stack.gtif"  # 8 bands, EPSG:32615
TUTORIAL_2002 = TUTORIAL / "LE70220492002106EDC00_stack.gtif"  # the same grid, 2002-04-16
TUTORIAL_POLYGONS = TUTORIAL / "training_data.shp"  # sparse labels, column `id` 1..5
SEN1FLOODS11 = SAMPLES / "sen1floods11"
S2_CHIP = SEN1FLOODS11 / "Spain_7370579_S2Hand.tif"  # 13 bands, int16, EPSG:4326
S2_WATER = SEN1FLOODS11 / "Spain_7370579_LabelHand.tif"  # 0 dry, 1 water, -1 unlabelled (not declared nodata)
ATLANTA = SAMPLES / "spacenet_atlanta" / "sample_geotiff.tif"  # WorldView pan, 0.5 m, EPSG:32616
BUILDINGS = SAMPLES / "spacenet_atlanta" / "buildings.geojson"  # 43 footprints, column `class` = "building"
BUNDLED_MODEL = SAMPLES / "models" / "nc_landuse.safetensors"  # 7 land-use classes of the NC scene

# `make test` runs the tests in pytest-xdist workers, one per core (up to 4). Each worker's torch threads, and those of
# the commands its tests start (geosscl, qgis_process, both read OMP_NUM_THREADS), get the worker's share of the cores:
# with torch's default of one thread per core in every worker, the workers would oversubscribe the cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = max(1, len(os.sched_getaffinity(0)) // _WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)
    torch.set_num_threads(_THREADS)

# Device-dependent code (resampling, augmentation, grid sampling) is tested on every
# device this machine has; CI has no GPU, so there the CUDA cases show as skipped.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]
#: bf16 on the CPU is refused where it would be slower than float32 (geosscl.precision.cpu_has_bfloat16): the
#: bfloat16 runs are tested where it is not; the refusal everywhere (tests/test_predict.py).
needs_bf16_cpu = pytest.mark.skipif(not cpu_has_bfloat16(), reason="this CPU has no bfloat16 arithmetic: bf16 is refused")


def pytest_collection_modifyitems(items):
    # Tests marked `long` (minutes each) start first: pytest-xdist hands out tests in this order, and one started
    # last would keep a worker busy long after the others are done.
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """``(mtime_ns, size)`` of every file under ``folder``, by path inside it."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="session", autouse=True)
def bundled_data_left_as_found():
    """Fails the run where a test wrote into sample_data/ (QGIS does, into the rasters it opens): other workers read
    those files meanwhile, and a file being rewritten reads as no raster at all."""
    before = _stamps(SAMPLES)
    yield
    after = _stamps(SAMPLES)
    written = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not written, f"tests wrote into sample_data/: {', '.join(written)}"


def half_masked_2002(folder: Path) -> Path:
    """The 2002 tutorial scene with its west half nodata (-9999): one date of the place under clouds."""
    with rasterio.open(TUTORIAL_2002) as src:
        data, profile = src.read(), src.profile
    data[:, :, : data.shape[2] // 2] = -9999
    return write_raster(folder / "LE7_2002_cloudy.tif", data, crs=profile["crs"], transform=profile["transform"], nodata=-9999)


def write_raster(path: Path, data: np.ndarray, crs="EPSG:32614", transform=None, nodata=None, **extra) -> Path:
    """Write ``data`` (``C×H×W``) as a GeoTIFF; ``crs=None`` writes one without a CRS."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    if transform is None:
        transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype,
        "transform": transform,
        "nodata": nodata,
        **extra,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def far_apart_cuts(folder: Path, shift: tuple[int, int]) -> tuple[Path, Path, np.ndarray]:
    """A 480 × 320 px cut of the NC scene's six bands (rows 100-420; -99999 wherever a band has no data, each band
    file's own fill included), and the same pixels again ``shift`` (columns, rows) away: two files of a mosaic
    far apart. Returns both paths and the cut (``6×320×480``, NaN for no data)."""
    from geosscl.data import Mosaic

    folder.mkdir(parents=True, exist_ok=True)
    mosaic = Mosaic([str(p) for p in NC_BANDS])
    x0, y1 = mosaic.bounds[0].start, mosaic.bounds[1].stop - 100 * 28.5
    image, transform, _ = mosaic.read((x0, y1 - 320 * 28.5, x0 + 480 * 28.5, y1))
    data = np.where(np.isnan(image).any(0), np.float32(-99999), image)
    here = write_raster(folder / "here.tif", data, crs=mosaic.crs, transform=transform, nodata=-99999)
    there = write_raster(folder / "there.tif", data, crs=mosaic.crs, transform=transform @ Affine.translation(*shift),
                         nodata=-99999)
    return here, there, image


@pytest.fixture
def naip_halves(tmp_path: Path) -> tuple[Path, Path]:
    """The NAIP scene cut in two files, the right half warped to Web Mercator.

    Both halves overlap by 20 px so that the warped half covers the seam.
    """
    from rasterio.warp import calculate_default_transform, reproject
    from rasterio.enums import Resampling

    with rasterio.open(NAIP) as src:
        data = src.read()
        t = src.transform
        profile = src.profile
    half = data.shape[2] // 2
    left = write_raster(tmp_path / "left.tif", data[:, :, :half], crs=profile["crs"], transform=t, nodata=0)
    right_data = data[:, :, half - 20 :]
    right_t = t @ Affine.translation(half - 20, 0)
    dst_crs = "EPSG:3857"
    bounds = rasterio.transform.array_bounds(right_data.shape[1], right_data.shape[2], right_t)
    dst_t, w, h = calculate_default_transform(profile["crs"], dst_crs, right_data.shape[2], right_data.shape[1], *bounds)
    warped = np.zeros((data.shape[0], h, w), dtype=data.dtype)
    reproject(right_data, warped, src_transform=right_t, src_crs=profile["crs"], src_nodata=0,
              dst_transform=dst_t, dst_crs=dst_crs, dst_nodata=0, resampling=Resampling.bilinear)
    right = write_raster(tmp_path / "right_3857.tif", warped, crs=dst_crs, transform=dst_t, nodata=0)
    return left, right


def _gloo_entry(rank: int, fn, world: int, port: int, args: tuple) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def run_distributed(fn, world: int, *args) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` real processes of one gloo process group."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gloo_entry, args=(fn, world, port, args), nprocs=world, join=True)
