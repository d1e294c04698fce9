"""``geosscl.evaluate``: a model against labels, on whole scenes, with the prediction engine."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import shapely
import torch
from torch import Tensor
from torchgeo.datasets import IntersectionDataset

from .data import Bounds, Mosaic, RasterLabels, open_labels
from .data.labels import IGNORE_INDEX, UNKNOWN, nodata_hint
from .errors import GeossclError, NoOverlap
from .ground import Ground, model_ground
from .inference import TiledSegmenter
from .metrics import ConfusionMatrix, Scores
from .modelfile import ModelInfo, load_model
from .output import atomic_output
from .prediction import open_scene
from .splits import KeepRegion, label_extent, pixels_outside, polygonal, read_region

log = logging.getLogger(__name__)


def open_truth(mosaic: Mosaic, info: ModelInfo, labels: list[str], class_column: str | None = None,
                label_nodata: float | None = None, background_class: str | None = None,
                label_area: str | None = None) -> tuple[Any, Any, list[int]]:
    """The labels of ``mosaic`` as the model's class ids, the geometry of ``label_area`` (``None``
    without one), and the values the labels hold that are none of the model's classes."""
    extent, limit = label_extent(mosaic, label_area)
    truth, held = open_labels(labels, class_column, info.class_names, nodata=label_nodata,
                              background=background_class, extent=extent, values=info.map_values,
                              default_background=info.background_class, default_column=info.class_column)
    if isinstance(truth, RasterLabels) or truth.numeric:
        truth.use_values(info.map_values)
        unknown = sorted(set(held) - set(info.map_values))
    else:  # a vector layer's names are mapped to the model's ids
        unknown = []
    return truth, limit, unknown


def _check_names(truth: Any, info: ModelInfo) -> None:
    if isinstance(truth, RasterLabels):
        truth.check_names(info.by_value()[0], "the model")


class _Scene:
    """Imagery with its labels and the area to score, checked: what :func:`evaluate` runs the model over.

    ``ground``: where the model met labels (:class:`~geosscl.ground.Ground`, in the imagery's CRS), to
    count the scored pixels there (:attr:`seen`) or, with ``held_out``, to score only the others.
    """

    def __init__(self, mosaic: Mosaic, info: ModelInfo, labels: list[str], truth: Any, limit: Any, unknown: list[int],
                 region: str | None = None, label_area: str | None = None,
                 ground: Ground | None = None, held_out: bool = False) -> None:
        try:
            paired = IntersectionDataset(mosaic, truth)
        except RuntimeError:
            raise NoOverlap(f"{labels[0]}: labels do not overlap the imagery") from None
        area = shapely.union_all(paired.index.geometry.values)
        if limit is not None:
            area = area.intersection(limit)
            if area.is_empty:
                raise NoOverlap(f"{label_area}: label area does not overlap the labels")
        chosen = limit
        if region:
            chosen = read_region(region, mosaic.crs)
            if limit is not None:
                chosen = chosen.intersection(limit)
            area = area.intersection(chosen)
            if area.is_empty:
                raise NoOverlap(f"{region}: region does not overlap the labelled imagery")
        if held_out and ground is not None:
            area = chosen = polygonal(area.difference(ground.seen))
            if area.area < abs(mosaic.res[0] * mosaic.res[1]) / 2:  # slivers of floating-point edges hold no pixel
                raise NoOverlap(f"{labels[0]}: every label here lies where the model was trained or validated; "
                                "nothing is held out (fine-tune with --holdout-region to keep a test region)")
        self.keep = KeepRegion(chosen) if chosen is not None else None
        self.mosaic, self.info, self.truth, self.area = mosaic, info, truth, area.bounds
        self.labels, self.unknown = labels, unknown
        self.ground = ground
        #: scored pixels where the model was trained / validated (none with ``held_out``)
        self.seen = {"trained": 0, "validated": 0}

    def plan(self, engine: TiledSegmenter) -> list[Bounds]:
        """The engine's blocks over the area that hold a labelled pixel: sparse labels (a few polygons
        over a large scene) need the model run where they are, not over the whole scene. Labels the
        model has no class for are refused here, before any inference."""
        return [bounds for bounds in engine.plan(self.mosaic, self.area) if bool((self._truth(bounds) != IGNORE_INDEX).any())]

    def _truth(self, bounds: Bounds) -> Tensor:
        """The class ids of the block ``bounds`` (outside the scored region: :data:`IGNORE_INDEX`).

        Raises:
            GeossclError: where the labels hold a value none of the model's classes has.
        """
        x0, y0, x1, y1 = bounds
        sample = self.truth[x0:x1:self.mosaic.res[0], y0:y1:self.mosaic.res[1]]
        mask = (self.keep(sample) if self.keep is not None else sample)["mask"]
        if bool((mask == UNKNOWN).any()):
            info, value = self.info, self.unknown[0]
            hint = f"; {nodata_hint(value)}" if isinstance(self.truth, RasterLabels) else ""
            values = f" (values {', '.join(map(str, info.class_values))})" if info.class_values else ""
            raise GeossclError(f"{self.labels[0]}: class id {value} is outside the model's {info.num_classes} "
                               f"classes{values}{hint}")
        return mask

    def score(self, engine: TiledSegmenter, tick: Callable[[], None], plan: list[Bounds]) -> ConfusionMatrix:
        """The confusion matrix of the model's classes against the labels, over the blocks ``plan``
        (:meth:`plan`); ``tick()`` after every block."""
        matrix = ConfusionMatrix(self.info.num_classes)
        for block in engine.blocks(self.mosaic, self.area, plan=plan):
            mask = self._truth(block.bounds).masked_fill(block.classes < 0, -1)  # no input, no verdict
            matrix.update(block.classes.clamp_min(0), mask)
            if self.ground is not None:
                self._count_seen(block.bounds, mask != IGNORE_INDEX)
            tick()
        return matrix

    def _count_seen(self, bounds: Bounds, scored: Tensor) -> None:
        """Add the ``scored`` pixels of the block ``bounds`` that lie where the model met labels to :attr:`seen`."""
        for name, region in (("trained", self.ground.training), ("validated", self.ground.validation)):
            outside = pixels_outside(shapely.clip_by_rect(region, *bounds), bounds, scored.shape[-2:])
            self.seen[name] += int((scored & ~torch.from_numpy(outside)).sum())


def _ticker(progress: Callable[[int, int], None] | None, total: int) -> Callable[[], None]:
    """A callable that reports one more block of ``total`` to ``progress``."""
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    return tick


def evaluate(
    model: str,
    imagery: list[str],
    labels: list[str],
    class_column: str | None = None,
    region: str | None = None,
    label_nodata: float | None = None,
    background_class: str | None = None,
    label_area: str | None = None,
    device: str = "auto",
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    nodata: float | None = None,
    precision: str = "32",
    held_out: bool = False,
) -> tuple[Scores, ModelInfo]:
    """Scores of ``model`` on the labelled pixels of ``imagery`` (inside ``region`` if given).

    ``progress(done, total)`` is called after every block of the tiled inference.

    ``label_nodata``: value of the class rasters meaning "unlabelled" where their
    files do not declare it as nodata. ``background_class``: class of a vector
    layer's pixels outside every polygon (inside the imagery); default: the model's
    background class, where it has one; ``""``: none, those pixels are not scored. ``label_area``:
    polygons where the labels are complete; pixels outside them are not scored.
    ``nodata``: the imagery's value meaning "no data", over what its files declare
    (default: the model's).
    ``precision``: ``"bf16"`` runs the model under bfloat16 autocast, as
    ``predict(precision="bf16")`` does (:class:`~geosscl.inference.TiledSegmenter`).
    ``held_out``: score only the labels outside the ground the model was trained and
    validated on (recorded in its file by ``finetune`` and ``probe``). Without it, the
    scores say how many scored pixels lie there (:attr:`Scores.ground`), and a warning
    that these scores are not of held-out ground.

    Raises:
        GeossclError: bad model file, bands the imagery lacks, labels off the imagery;
            ``held_out`` with a model that records no ground, or no label outside it.
    """
    network, info = load_model(model)
    # The scene as predict reads it: scored in the imagery's own CRS, at the model's GSD
    # (in metres, so a model made in one CRS scores imagery in another).
    mosaic = open_scene(imagery, info, nodata=nodata)
    ground = _ground(model, info, mosaic, held_out)
    truth = open_truth(mosaic, info, labels, class_column, label_nodata, background_class, label_area)
    _check_names(truth[0], info)
    scene = _Scene(mosaic, info, labels, *truth, region, label_area, ground, held_out)
    engine = TiledSegmenter(network, info, device=device, batch_size=batch_size, precision=precision)
    plan = scene.plan(engine)
    matrix = scene.score(engine, _ticker(progress, len(plan)), plan)
    if not int(matrix.counts.sum()):
        raise GeossclError(f"{labels[0]}: no labelled pixel where the model has input" + _where(region, held_out))
    return _with_ground(matrix.scores(), model, [scene]), info


def _ground(model: str, info: ModelInfo, mosaic: Mosaic, held_out: bool) -> Ground | None:
    """Where ``model`` met labels, in ``mosaic``'s CRS (None where its file does not say; an error
    with ``held_out``, which needs it)."""
    ground = model_ground(info, mosaic.crs, model)
    if held_out and ground is None:
        raise GeossclError(f"{model}: the model file does not record where it was trained (made by another program, "
                           "or before geosscl recorded it), so --held-out cannot tell; give --region instead")
    return ground


def _where(region: str | None, held_out: bool) -> str:
    """Where no labelled pixel was found, for the error that says so."""
    return (f" inside {region}" if region else "") + (" outside the ground the model was trained and validated on"
                                                      if held_out else "")


def _with_ground(scores: Scores, model: str, scenes: list[_Scene], warn: bool = True) -> Scores:
    """``scores`` with their pixels counted by where ``model`` met labels; with ``warn``, a warning where
    some of them lie there. Unchanged where the model records no ground."""
    if any(scene.ground is None for scene in scenes):
        return scores
    total = sum(map(sum, scores.confusion))
    trained, validated = (sum(scene.seen[name] for scene in scenes) for name in ("trained", "validated"))
    scores.ground = {"trained": trained, "validated": validated, "held_out": total - trained - validated}
    if warn and (trained or validated):
        rest = scores.ground["held_out"]
        log.warning(f"{model}: of the {total:,} labelled pixels scored, {100 * trained / total:.1f} % lie where the "
                    f"model was trained and {100 * validated / total:.1f} % where it was validated: these scores are "
                    "not of held-out ground; " + (f"--held-out scores only the other {rest:,}" if rest else
                                                   "no label here lies elsewhere (fine-tune with --holdout-region "
                                                   "to keep a test region)"))
    return scores


def evaluate_each_date(
    model: str,
    imagery: list[str],
    labels: list[str],
    device: str = "auto",
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    precision: str = "32",
    **options: Any,
) -> tuple[Scores, dict[str, Scores], ModelInfo]:
    """Scores of ``model`` on every date of a place, with one set of labels for all.

    Where files of ``imagery`` cover the same ground (dates of a tile), each place
    (a file, or single-band files stacked as bands) is scored on its own, exactly as
    :func:`evaluate` scores it passed alone. The pooled scores count each labelled
    pixel once per date holding it. Places the labels (or label area, or region) miss, or where
    the model has no input on a labelled pixel, are left out. Arguments and
    ``options`` (``class_column``, ``region``, ``label_nodata``, ``background_class``,
    ``label_area``, ``nodata``, ``held_out``) and ``precision`` are :func:`evaluate`'s.

    Returns:
        ``(pooled, {first file of each place scored: its scores}, info)``, places in
        path order.

    Raises:
        GeossclError: as :func:`evaluate`; also imagery where no two files cover the
            same ground.
    """
    network, info = load_model(model)
    nodata = options.pop("nodata", None)
    mosaic = open_scene(imagery, info, nodata=nodata)
    mosaic.require_dates("every-date")
    region, held_out = options.pop("region", None), options.pop("held_out", False)
    where = (region, options.get("label_area"))
    scenes = {}
    for files in mosaic.places:
        place = open_scene(list(files), info, nodata=nodata)
        try:
            # Labels opened for each place, in its CRS: TorchGeo's intersection sets the
            # CRS of the datasets it joins, so one labels dataset cannot serve two CRSs.
            scenes[files[0]] = _Scene(place, info, labels, *open_truth(place, info, labels, **options), *where,
                                      _ground(model, info, place, held_out), held_out)
        except NoOverlap:
            continue
    if not scenes:
        # Raises why the labels miss the imagery as a whole.
        _Scene(mosaic, info, labels, *open_truth(mosaic, info, labels, **options), *where,
               _ground(model, info, mosaic, held_out), held_out)
    _check_names(next(iter(scenes.values())).truth, info)
    engine = TiledSegmenter(network, info, device=device, batch_size=batch_size, precision=precision)
    plans = {file: scene.plan(engine) for file, scene in scenes.items()}
    tick = _ticker(progress, sum(map(len, plans.values())))
    matrices = {file: scene.score(engine, tick, plans[file]) for file, scene in scenes.items()}
    pooled = ConfusionMatrix(info.num_classes)
    for matrix in matrices.values():
        pooled.counts += matrix.counts
    if not int(pooled.counts.sum()):
        raise GeossclError(f"{labels[0]}: no labelled pixel where the model has input on any date"
                           + _where(region, held_out))
    dates = {file: _with_ground(m.scores(), model, [scenes[file]], warn=False)
             for file, m in matrices.items() if int(m.counts.sum())}
    return _with_ground(pooled.scores(), model, list(scenes.values())), dates, info


def format_table(scores: Scores, class_names: list[str], class_values: list[int] | None = None) -> str:
    """Per-class IoU and F1, then the summary scores, as a plain-text table. Each class is listed with its
    value in the labels and class maps (``class_values``; None: the ids), the number a user finds in the file."""
    values = list(class_values) if class_values is not None else list(range(len(class_names)))
    width = max(len(n) for n in class_names)
    lines = [f"{'value':>5}  {'class':<{width}}  {'IoU':>6}  {'F1':>6}  {'pixels':>9}"]
    for i, (value, name) in enumerate(zip(values, class_names)):
        pixels = sum(scores.confusion[i])
        if pixels == 0 and scores.iou[i] != scores.iou[i]:
            continue
        lines.append(f"{value:>5}  {name:<{width}}  {_pct(scores.iou[i])}  {_pct(scores.f1[i])}  {pixels:>9}")
    lines.append(f"mIoU {_pct(scores.miou).strip()}  OA {_pct(scores.overall_accuracy).strip()}  "
                 f"kappa {scores.kappa:.3f}  mean F1 {_pct(scores.mean_f1).strip()}")
    return "\n".join(lines)


def format_dates(pooled: Scores, dates: dict[str, Scores]) -> str:
    """The summary scores of each date (file) and of all pooled, one line each, as a plain-text table."""
    rows = [(name, scores) for name, scores in dates.items()] + [("every date, pooled", pooled)]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'date (file)':<{width}}  {'mIoU':>6}  {'OA':>6}  {'kappa':>6}  {'mean F1':>7}  {'pixels':>9}"]
    for name, scores in rows:
        lines.append(f"{name:<{width}}  {_pct(scores.miou)}  {_pct(scores.overall_accuracy)}  {scores.kappa:6.3f}  "
                     f" {_pct(scores.mean_f1)}  {sum(map(sum, scores.confusion)):>9}")
    return "\n".join(lines)


def _pct(value: float) -> str:
    return "   n/a" if value != value else f"{100 * value:6.1f}"


def scores_dict(scores: Scores, class_names: list[str], class_values: list[int] | None = None,
                **extra: Any) -> dict[str, Any]:
    """Scores, class names, the classes' values in the labels (``class_values``; None: the ids) and
    ``extra`` items as plain JSON values (NaN as null)."""
    values = list(class_values) if class_values is not None else list(range(len(class_names)))
    return _no_nan({"classes": class_names, "class_values": values, **scores.__dict__, **extra})


def write_json(scores: Scores, class_names: list[str], path: str, overwrite: bool = True, **extra: Any) -> None:
    """Scores, class names and ``extra`` items as JSON (atomically)."""
    with atomic_output(path, overwrite) as tmp, open(tmp, "w") as f:
        json.dump(scores_dict(scores, class_names, **extra), f, indent=1, allow_nan=False)


def _no_nan(value: Any) -> Any:
    """NaN (a class never seen) as null: JSON has no NaN, and strict readers refuse Python's."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def plot_confusion(scores: Scores, info: ModelInfo, path: str, overwrite: bool = True) -> None:
    """The confusion matrix (row-normalised) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.array(scores.confusion, dtype=float)
    shown = [i for i in range(len(counts)) if counts[i].sum() > 0 or counts[:, i].sum() > 0]
    counts = counts[np.ix_(shown, shown)]
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    names = [info.class_names[i] for i in shown]
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(shown), 1 + 0.6 * len(shown)))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for r in range(len(shown)):
        for c in range(len(shown)):
            ax.text(c, r, f"{int(counts[r, c])}", ha="center", va="center", fontsize=7,
                    color="white" if rates[r, c] > 0.5 else "black")
    ax.set_xticks(range(len(shown)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(shown)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"mIoU {100 * scores.miou:.1f}, OA {100 * scores.overall_accuracy:.1f}", fontsize=9)
    fig.tight_layout()
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
