"""Runs inside QGIS's own Python (a venv with --system-site-packages and pytest-qgis).

The main test suite starts this one (tests/test_qgis_plugin.py); GEOSSCL_EXECUTABLE
then names the geosscl of the project's venv.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "qgis_plugin"))
# QGIS writes into the rasters it opens: GDAL rewrites a whole VRT (statistics, a 1.3 MB histogram) each time QGIS
# closes one, and puts .aux.xml sidecars beside GeoTIFFs. Other test processes read the bundled files meanwhile, and
# one caught the VRT half-written ("not recognized as being in a supported file format"). So QGIS gets its own copy.
SAMPLES = Path(tempfile.mkdtemp(prefix="geosscl-qgis-")) / "sample_data"
shutil.copytree(ROOT / "sample_data", SAMPLES)
atexit.register(shutil.rmtree, SAMPLES.parent, True)
SCENE = SAMPLES / "nc_landsat" / "lsat7_2000.vrt"
STRATA = SAMPLES / "nc_landsat" / "strata.tif"  # 1996 land use, ids 1-7, nodata -99999
MODEL = SAMPLES / "models" / "nc_landuse.safetensors"
#: Sentinel-2 chip (13 bands) and its hand labels (0 dry, 1 water, -1 unlabelled without being declared nodata)
FLOODS_S2 = SAMPLES / "sen1floods11" / "Spain_7370579_S2Hand.tif"
FLOODS_LABELS = SAMPLES / "sen1floods11" / "Spain_7370579_LabelHand.tif"
NAIP = SAMPLES / "naip" / "m_4709963_se_14_1_20200831.tif"
#: Landsat 7 stack with sparse digitised polygons of five classes (field "class"): what a QGIS user labels.
TUTORIAL_STACK = SAMPLES / "landsat_tutorial" / "LE70220491999322EDC01_stack.gtif"
TUTORIAL_2002 = SAMPLES / "landsat_tutorial" / "LE70220492002106EDC00_stack.gtif"  # the same grid
TUTORIAL_POLYGONS = SAMPLES / "landsat_tutorial" / "training_data.shp"
ATLANTA = SAMPLES / "spacenet_atlanta" / "sample_geotiff.tif"  # WorldView pan, 0.5 m, EPSG:32616
BUILDINGS = SAMPLES / "spacenet_atlanta" / "buildings.geojson"  # its 43 footprints, field "class"


@pytest.fixture(scope="session")
def provider(qgis_app, qgis_processing):
    from qgis.core import QgsApplication

    from geosscl_processing.provider import GeossclProvider

    provider = GeossclProvider()
    assert QgsApplication.processingRegistry().addProvider(provider)
    yield provider
    QgsApplication.processingRegistry().removeProvider(provider)


@pytest.fixture
def in_project():
    """``in_project(layer)``: ``layer``, added to the project (as the dialog's layers are) until the test ends.

    Raster layer objects a script made itself, given to a run that fails, crash QGIS 3.22's
    Python when it exits (after every test has passed); layers of the project do not.
    """
    from qgis.core import QgsProject

    added = []

    def add(layer):
        QgsProject.instance().addMapLayer(layer)
        added.append(layer.id())
        return layer

    yield add
    QgsProject.instance().removeMapLayers(added)


@pytest.fixture(scope="session")
def processing(provider):
    """QGIS's processing module (on sys.path once pytest-qgis has initialised Processing)."""
    import processing

    return processing


def geosscl(*args: str) -> subprocess.CompletedProcess:
    """The CLI, run as the plugin runs it (same executable, cleaned environment)."""
    from geosscl_processing.runner import clean_environment, find_executable

    return subprocess.run([find_executable(), *args], capture_output=True, text=True, env=clean_environment(), timeout=600)


def geosscl_predict(*args: str) -> subprocess.CompletedProcess:
    return geosscl("predict", *args)


def refused_bf16(cli: subprocess.CompletedProcess, run) -> bool:
    """Whether the CLI run ``cli`` refused ``--precision bf16`` on this CPU (no bfloat16 arithmetic); if so, the
    algorithm's run with BFLOAT16 (``run()``) must refuse it too, with the same words.

    Give ``run`` its layers as paths: a QgsVectorLayer object in the parameters of a run that fails here outlived the
    test and QGIS, and the suite's process died at exit (-11) after every test had passed. Clearing the traceback's
    frames and collecting garbage did not prevent it."""
    refusal = "bf16 would run slower than float32 on this CPU"
    if cli.returncode != 1 or refusal not in cli.stderr:
        return False
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match=refusal):
        run()
    return True


def elsewhere(path: Path) -> Path:
    """A copy of the 2002 tutorial scene moved ten scene widths east: no other date of the tutorial tile."""
    from osgeo import gdal

    source = gdal.Open(str(TUTORIAL_2002))
    x0, dx, _, y0, _, dy = source.GetGeoTransform()
    shift = 10 * source.RasterXSize * dx
    gdal.Translate(str(path), source, outputBounds=[x0 + shift, y0, x0 + shift + source.RasterXSize * dx,
                                                   y0 + source.RasterYSize * dy])
    return path
