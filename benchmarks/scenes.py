"""The bundled labelled scenes as the benchmarks use them: the NC Landsat scene and its
land-use classes (the default), the Sen1Floods11 Sentinel-2 chip and its water mask, and
the SpaceNet Atlanta panchromatic tile and its building footprints."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import shapely

from geosscl.data import Mosaic
from geosscl.finetuning import parse_class_weights
from geosscl.splits import block_split

DATA = Path(__file__).resolve().parent.parent / "sample_data" / "nc_landsat"
BANDS = [str(DATA / f"lsat7_2000_{b}.tif") for b in (10, 20, 30, 40, 50, 70)]
LABELS = [str(DATA / "strata.tif")]
CLASSES = str(DATA / "classes.yaml")
#: Test regions: the eastern third (one piece of ground, whose class mix differs from the
#: west's: 56 % developed against 17 %, water and sediment about 120 pixels each), or a
#: third of the scene in 96 px blocks drawn with a fixed seed (the scene's class mix).
TESTS = ("east", "blocks")
S1F = Path(__file__).resolve().parent.parent / "sample_data" / "sen1floods11"
ATL = Path(__file__).resolve().parent.parent / "sample_data" / "spacenet_atlanta"


@dataclass(frozen=True)
class Scene:
    """Imagery and labels of one labelled scene, with the label settings they need."""

    name: str
    imagery: list[str]
    labels: list[str]
    classes: str | None
    label_nodata: float | None = None
    class_column: str | None = None
    background_class: str | None = None

    @property
    def label_settings(self) -> dict[str, str | float | None]:
        """How to read the labels: keyword arguments of ``FinetuneConfig`` and ``evaluate``."""
        return {"label_nodata": self.label_nodata, "class_column": self.class_column, "background_class": self.background_class}


SCENES = {
    "nc": Scene("NC Landsat", BANDS, LABELS, CLASSES),
    "sen1floods11": Scene("Sen1Floods11 Spain_7370579 (Sentinel-2, water)", [str(S1F / "Spain_7370579_S2Hand.tif")],
                          [str(S1F / "Spain_7370579_LabelHand.tif")], str(S1F / "classes.yaml"), label_nodata=-1),
    # Buildings need their shape and surroundings: one panchromatic band cannot tell a roof from a road.
    "spacenet": Scene("SpaceNet Atlanta (WorldView pan, 0.5 m, buildings)", [str(ATL / "sample_geotiff.tif")],
                      [str(ATL / "buildings.geojson")], None, class_column="class", background_class="background"),
}

#: ``--val-labels``: how much of the validation region's labels a run may use.
VAL_LABELS_HELP = ("labels of the validation region: 'all' (the whole region, 20 %% of the rest of the scene), "
                   "'same' (the training label fraction, in blocks of the same size), a fraction, or 'none' (no "
                   "validation region: the training labels are drawn from the whole rest; needs a fixed L2 weight)")


def validation(choice: str, fraction: float) -> dict[str, float]:
    """The ``FinetuneConfig`` validation settings of a run with training ``fraction`` under ``--val-labels choice``."""
    if choice == "none":
        return {"val_fraction": 0.0}
    return {"val_label_fraction": {"all": 1.0, "same": fraction}.get(choice) or float(choice)}


def val_labels(choice: str) -> str:
    """argparse type of ``--val-labels``: 'all', 'same', 'none' or a fraction in (0, 1]."""
    if choice not in ("all", "same", "none"):
        try:
            if not 0 < float(choice) <= 1:
                raise ValueError
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected 'all', 'same', 'none' or a fraction in (0, 1], got {choice!r}") from None
    return choice


def class_weights(value: str) -> str | list[float]:
    """argparse type of ``--class-weights``: 'auto' or comma-separated weights, as the CLI takes them."""
    try:
        return parse_class_weights(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def test_region(kind: str, folder: Path, scene: Scene = SCENES["nc"]) -> str:
    """Path of the test region ``kind`` of ``scene`` (the blocks are written into ``folder`` once)."""
    if kind == "east":
        if scene is not SCENES["nc"]:
            raise SystemExit(f"--test east is the NC scene's; {scene.name} has --test blocks")
        return str(DATA / "test_region.geojson")
    path = folder / f"test_blocks_{Path(scene.labels[0]).stem}.gpkg"
    if not path.exists():
        mosaic = Mosaic(scene.imagery)
        x, y, _ = mosaic.bounds
        area = shapely.box(x.start, y.start, x.stop, y.stop)
        blocks = block_split(area, 96 * mosaic.res[0], {"test": 1 / 3, "rest": 2 / 3}, seed=123)["test"]
        gpd.GeoDataFrame(geometry=[blocks], crs=mosaic.crs).to_file(path)
    return str(path)


def start_run(args: argparse.Namespace, prefix: str) -> tuple[list[int], Path]:
    """A benchmark's ``--threads`` set, its ``--seeds`` parsed, and its ``--workdir`` made (a new temporary
    folder named ``prefix…`` without one)."""
    import tempfile

    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return [int(s) for s in args.seeds.split(",")], work


def named_encoders(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    """The encoders to compare: ``random``, then the ``NAME=CHECKPOINT`` arguments ``items`` (a usage error otherwise)."""
    found = {"random": "random"}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not path:
            parser.error(f"{item}: expected NAME=CHECKPOINT")
        found[name] = path
    return found
