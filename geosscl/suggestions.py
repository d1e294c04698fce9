"""``geosscl suggest``: where to label next.

A model made from a few labels is unsure in some places and sure in others; labels
where it is unsure teach it most. This runs a model over the imagery with the tiled
inference engine, scores every square tile of a grid by the model's mean uncertainty
there (the entropy of its class probabilities, 0 = certain, 1 = all classes equally
likely), and keeps the most uncertain tiles that hold no label yet, spread apart so
that no two of them (nor one and a labelled tile) touch: a GeoPackage of squares to annotate, in the imagery's CRS.

Memory holds the engine's block and a few numbers per tile (the class votes and three
sums), never the scene's probabilities, and only for the tiles of the blocks a file of the
imagery reaches (:meth:`~geosscl.inference.TiledSegmenter.plan`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
import torch

from .data import Mosaic
from .data.labels import IGNORE_INDEX
from .errors import GeossclError
from .inference import TiledSegmenter
from .modelfile import load_model
from .output import atomic_output, check_suffix
from .prediction import _extent, open_scene
from .splits import KeepRegion, read_region

log = logging.getLogger(__name__)

#: Layer of the GeoPackage :func:`suggest` writes.
LAYER = "suggestions"


@dataclass
class _Tiles:
    """Per-tile sums over the scene, on a grid of ``size`` px from the area's top-left corner: ``rows×cols``
    tiles, of which only those of blocks holding imagery are kept (``index``), so that files far apart cost
    their own tiles, not those of the ground between them."""

    rows: int
    cols: int
    index: np.ndarray  #: the kept tiles' flat indexes on the grid (row × cols + col), ascending
    valid: np.ndarray  #: pixels with input, of each kept tile
    entropy: np.ndarray  #: sum of the normalised entropy over them
    labelled: np.ndarray  #: pixels already labelled
    votes: np.ndarray  #: ``len(index)×classes`` pixels the model gives each class


def _per_tile(tile: torch.Tensor, count: int, weights: torch.Tensor | None = None) -> np.ndarray:
    """Sums of ``weights`` (default 1 each) over the pixels of each tile: ``tile`` holds each pixel's tile (flat)."""
    return torch.bincount(tile, weights=weights, minlength=count).numpy()


def _scan(engine: TiledSegmenter, mosaic: Mosaic, area: tuple[float, float, float, float], size: int,
          labels: Callable[[slice, slice], torch.Tensor] | None, tick: Callable[[], None]) -> _Tiles:
    """Run the model over ``area`` and sum its uncertainty, predictions and the labels per tile."""
    rx, ry = mosaic.res
    width, height = round((area[2] - area[0]) / rx), round((area[3] - area[1]) / ry)
    rows, cols = math.ceil(height / size), math.ceil(width / size)
    classes = engine.info.num_classes
    parts: dict[str, list[np.ndarray]] = {"index": [], "valid": [], "entropy": [], "labelled": [], "votes": []}
    scale = math.log(classes) if classes > 1 else 1.0
    for block in engine.blocks(mosaic, area):
        x0, y0, x1, y1 = block.bounds
        # The engine's blocks are whole tiles (its block side is a multiple of the tile's) but at the
        # area's right and bottom edges: there the part of a tile beyond the area counts as no input.
        row, col = round((area[3] - y1) / ry) // size, round((x0 - area[0]) / rx) // size
        h, w = block.classes.shape
        th, tw = math.ceil(h / size), math.ceil(w / size)
        tile = ((torch.arange(h) // size)[:, None] * tw + (torch.arange(w) // size)[None, :]).ravel()
        valid = (block.classes >= 0).ravel()
        p = block.probabilities.clamp_min(1e-12)
        entropy = (-(p * p.log()).sum(dim=0) / scale).ravel().double()
        seen = tile[valid]
        parts["index"].append(((row + np.arange(th))[:, None] * cols + (col + np.arange(tw))[None, :]).ravel())
        parts["valid"].append(_per_tile(seen, th * tw))
        parts["entropy"].append(_per_tile(seen, th * tw, entropy[valid]))
        # The model's vote of each pixel, counted by tile and class at once.
        votes = seen * classes + block.classes.ravel()[valid]
        parts["votes"].append(_per_tile(votes, th * tw * classes).reshape(th * tw, classes))
        labelled = np.zeros(th * tw, np.int64)
        if labels is not None:
            mask = (labels(slice(x0, x1, rx), slice(y0, y1, ry)) != IGNORE_INDEX).ravel()
            labelled = _per_tile(tile[mask], th * tw)
        parts["labelled"].append(labelled)
        tick()
    if not parts["index"]:
        parts["votes"].append(np.zeros((0, classes), np.int64))
    kept = {key: np.concatenate(values) if values else np.zeros(0, np.int64) for key, values in parts.items()}
    order = np.argsort(kept["index"], kind="stable")  # blocks come row by row; their tiles interleave
    return _Tiles(rows, cols, *(kept[key][order] for key in ("index", "valid", "entropy", "labelled", "votes")))


class _LabelReader:
    """``reader(x, y)``: the labels on the grid of the slices ``x`` and ``y`` (map units), IGNORE_INDEX where there
    are none, also where the labels do not reach (the labels dataset raises IndexError there)."""

    def __init__(self, labels: Any, keep: KeepRegion | None) -> None:
        self.labels, self.keep = labels, keep

    def __call__(self, x: slice, y: slice) -> torch.Tensor:
        try:
            sample = self.labels[x, y]
        except IndexError:
            return torch.full((round((y.stop - y.start) / y.step), round((x.stop - x.start) / x.step)), IGNORE_INDEX)
        return (self.keep(sample) if self.keep is not None else sample)["mask"]


def _spread(order: np.ndarray, cols: int, count: int, spacing: int, labelled: np.ndarray) -> list[int]:
    """The first ``count`` tiles of ``order`` (flat indexes) no two of which lie within ``spacing`` tiles of each
    other or of a ``labelled`` tile (flat indexes): labels next to labels teach little that is new."""
    taken = {divmod(int(flat), cols) for flat in labelled}
    chosen = []
    for flat in order:
        r, c = divmod(int(flat), cols)
        if any((r + dr, c + dc) in taken for dr in range(-spacing, spacing + 1) for dc in range(-spacing, spacing + 1)):
            continue
        taken.add((r, c))
        chosen.append(int(flat))
        if len(chosen) == count:
            break
    return chosen


def suggest(
    model: str | os.PathLike,
    imagery: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    count: int = 20,
    tile_size: int | None = None,
    spacing: int = 1,
    min_valid: float = 0.9,
    labels: list[str] | None = None,
    class_column: str | None = None,
    label_nodata: float | None = None,
    background_class: str | None = None,
    label_area: str | None = None,
    region: str | None = None,
    exclude: str | None = None,
    bands: list[int] | None = None,
    nodata: float | None = None,
    device: str = "auto",
    batch_size: int = 8,
    precision: str = "32",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
):
    """Write the ``count`` tiles of ``imagery`` where ``model`` is least sure, to label next.

    Args:
        model: a model file of ``finetune`` or ``probe -o``.
        imagery: GeoTIFFs, a directory, a glob or a VRT, read as :func:`geosscl.predict` reads them.
        out: a GeoPackage (layer ``suggestions``): one square per tile, in the imagery's CRS,
            with ``rank`` (1 = most uncertain), ``uncertainty`` (mean normalised entropy of the
            class probabilities over the tile, 0..1), ``predicted`` (the class the model gives
            most of the tile) and ``valid`` (share of the tile with input).
        count: tiles to suggest.
        tile_size: tile side in pixels of the scene as read (at the model's GSD); default the
            model's tile size, the crop it was trained on.
        spacing: no two suggested tiles lie within this many tiles of each other or of a tile
            holding labels (1: they do not touch; 0: neighbours allowed), so the labels spread over the scene.
        min_valid: least share of a tile with input (tiles on the scene's edge or its nodata are skipped).
        labels: the labels there are already (class rasters or one vector layer, read as
            :func:`geosscl.evaluate` reads them): tiles holding any labelled pixel are skipped.
        class_column, label_nodata, background_class, label_area: as for :func:`geosscl.evaluate`.
        region: polygons to suggest inside (a tile's centre must lie in them).
        exclude: polygons to keep free of suggestions (e.g. the test region): tiles touching them are skipped.
        bands, nodata, device, batch_size, precision: as for :func:`geosscl.predict`.
        overwrite: replace ``out``.
        progress: called with ``(blocks done, blocks in all)``.

    Returns:
        the suggested tiles as a GeoDataFrame (what ``out`` holds), most uncertain first.

    Raises:
        GeossclError: bad input, or no tile left to suggest; nothing is written then.
    """
    import geopandas as gpd

    if count < 1:
        raise GeossclError(f"count: {count}; suggest at least 1 tile")
    if spacing < 0:
        raise GeossclError(f"spacing: {spacing} is negative")
    if not 0 < min_valid <= 1:
        raise GeossclError(f"min_valid: {min_valid} must lie in (0, 1]")
    if not labels:
        given = [option for option, value in (("--class-column", class_column), ("--label-nodata", label_nodata),
                                              ("--no-background-class" if background_class == "" else
                                               "--background-class", background_class), ("--label-area", label_area))
                 if value is not None]
        if given:
            raise GeossclError(f"{given[0]}: describes the labels there are; give them with --labels too")
    check_suffix(out, (".gpkg",), "suggestions are a GeoPackage layer (ogr2ogr converts it)")
    imagery = [os.fspath(p) for p in imagery]
    with atomic_output(out, overwrite, inputs=[model, *imagery, *(labels or []), label_area, region, exclude]) as tmp:
        network, info = load_model(model)
        size = int(tile_size or info.tile_size)
        if size < 1:
            raise GeossclError(f"tile_size: {size} is not a positive number of pixels")
        mosaic = open_scene(imagery, info, bands, nodata=nodata)
        area = mosaic.snap(_extent(mosaic))
        inside = read_region(region, mosaic.crs) if region else None
        outside = read_region(exclude, mosaic.crs) if exclude else None
        if inside is not None:
            if not shapely.intersects(inside, shapely.box(*area)):
                raise GeossclError(f"{region}: region does not overlap the imagery")
            # Only the region's part is read, on the scene's grid of tiles: a tile is the same
            # square whichever region a run is given.
            minx, miny, maxx, maxy = mosaic.snap(shapely.intersection(inside, shapely.box(*area)).bounds)
            step_x, step_y = size * mosaic.res[0], size * mosaic.res[1]
            x0, y1 = area[0], area[3]
            area = (x0 + math.floor(round((minx - x0) / step_x, 6)) * step_x,
                    max(area[1], y1 - math.ceil(round((y1 - miny) / step_y, 6)) * step_y),
                    min(area[2], x0 + math.ceil(round((maxx - x0) / step_x, 6)) * step_x),
                    y1 - math.floor(round((y1 - maxy) / step_y, 6)) * step_y)
        truth = None
        if labels:
            from .evaluation import open_truth  # the labels as evaluate reads them against this model

            dataset, limit, _ = open_truth(mosaic, info, labels, class_column, label_nodata, background_class, label_area)
            truth = _LabelReader(dataset, KeepRegion(limit) if limit is not None else None)
        # Blocks of whole tiles, so that no tile is cut between two blocks.
        block = size * max(1, 1024 // size)
        engine = TiledSegmenter(network, info, device=device, batch_size=batch_size, block_size=block,
                                precision=precision)
        total, done = len(engine.plan(mosaic, area)), 0

        def tick() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        tiles = _scan(engine, mosaic, area, size, truth, tick)

        rx, ry = mosaic.res
        r, c = np.divmod(tiles.index, tiles.cols)
        x0, y1 = area[0] + c * size * rx, area[3] - r * size * ry

        def boxes(index: np.ndarray) -> np.ndarray:
            """The squares of the kept tiles ``index`` (positions in ``tiles``), made only where needed: a scene
            holds millions of tiles."""
            return shapely.box(x0[index], y1[index] - size * ry, x0[index] + size * rx, y1[index])

        share = tiles.valid / (size * size)
        free = share >= min_valid
        reasons = {f"less than {min_valid:.0%} input": int((~free).sum())}
        if truth is not None:
            unlabelled = tiles.labelled == 0
            reasons["labelled already"] = int((free & ~unlabelled).sum())
            free &= unlabelled
        if inside is not None:
            centred = shapely.contains_xy(inside, x0 + size * rx / 2, y1 - size * ry / 2)
            reasons[f"centre outside {region}"] = int((free & ~centred).sum())
            free &= centred
        if outside is not None:
            kept = np.flatnonzero(free)
            touching = kept[shapely.intersects(boxes(kept), outside)]
            reasons[f"touching {exclude}"] = int(touching.size)
            free[touching] = False
        uncertainty = np.where(tiles.valid > 0, tiles.entropy / np.maximum(tiles.valid, 1), 0.0)
        candidates = np.flatnonzero(free)
        if not candidates.size:
            skipped = ", ".join(f"{n} {why}" for why, n in reasons.items() if n)
            raise GeossclError(f"{imagery[0]}: no tile of {size} px is left to suggest (of {tiles.index.size}: "
                               f"{skipped})")
        # Most uncertain first; ties in grid order, so a run is repeatable.
        order = candidates[np.lexsort((candidates, -uncertainty[candidates]))]
        picked = _spread(tiles.index[order], tiles.cols, count, spacing, tiles.index[tiles.labelled > 0])
        chosen = np.searchsorted(tiles.index, np.array(picked, dtype=np.int64))  # grid indexes to positions
        if len(chosen) < count:
            log.warning(f"{imagery[0]}: {len(chosen)} tile(s) of {size} px to suggest, not {count}: "
                        f"{candidates.size} are free of labels and nodata, and suggestions keep {spacing} tile(s) apart "
                        "from each other and from the labels")
        votes = tiles.votes[chosen]
        frame = gpd.GeoDataFrame(
            {
                "rank": np.arange(1, len(chosen) + 1, dtype=np.int32),
                "uncertainty": np.round(uncertainty[chosen], 4),
                "predicted": [info.class_names[int(k)] for k in votes.argmax(axis=1)],
                "valid": np.round(share[chosen], 4),
            },
            geometry=boxes(chosen), crs=mosaic.crs,
        )
        os.remove(tmp)  # atomic_output's placeholder: the GeoPackage driver wants to create the file itself
        frame.to_file(tmp, layer=LAYER, driver="GPKG")
    return frame
