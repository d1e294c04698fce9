"""Spatial splits: training, validation and test regions that share no pixel.

Random pixels or overlapping windows leak between splits through spatial
autocorrelation; splitting by blocks of ground keeps evaluation honest.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import rasterio.features
import torch
from rasterio.transform import from_bounds
import shapely
from shapely.geometry.base import BaseGeometry

from .data.grid import ALIGN_TOL
from .data.labels import IGNORE_INDEX
from .data.vector import read_layer
from .errors import GeossclError, NoOverlap
from .geometry import polygonal

if TYPE_CHECKING:
    from torchgeo.datasets import GeoDataset

    from .data import Mosaic

DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
#: Draws :func:`block_split` tries, after the seed's, for a first split that holds every class.
REDRAWS = 100
#: :func:`near_labels` keeps a region whose labelled part is this share of it or more.
DENSE = 0.9
#: At most about this many cells in :func:`near_labels`.
MOST_CELLS = 1 << 18


def blocks(region: BaseGeometry, block_size: float) -> list[BaseGeometry]:
    """Square blocks of ``block_size`` map units over ``region``'s bounds, clipped to it (empty ones dropped)."""
    return _grid_blocks(region, block_size)[0]


def _grid_blocks(region: BaseGeometry, block_size: float) -> tuple[list[BaseGeometry], list[int], tuple[float, float, int]]:
    """:func:`blocks`, with each block's flat index ``row * cols + col`` in the grid and the grid's ``(xmin, ymin, cols)``."""
    if not block_size > 0:
        raise GeossclError(f"block_size: must be positive, got {block_size}")
    xmin, ymin, xmax, ymax = region.bounds
    cols, rows = math.ceil((xmax - xmin) / block_size), math.ceil((ymax - ymin) / block_size)
    x0 = xmin + np.arange(cols) * block_size
    y0 = ymin + np.arange(rows) * block_size
    xx, yy = np.meshgrid(x0, y0)
    squares = shapely.box(xx.ravel(), yy.ravel(), xx.ravel() + block_size, yy.ravel() + block_size)
    clipped = shapely.intersection(squares, region)
    kept = [i for i, g in enumerate(clipped) if not g.is_empty and g.area > 0]
    return [polygonal(clipped[i]) for i in kept], kept, (xmin, ymin, cols)


def block_split(
    region: BaseGeometry, block_size: float, fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = 0,
    classes: Sequence[set[int]] | None = None,
) -> dict[str, BaseGeometry]:
    """Assign blocks of ``region`` to splits at random, in proportion to ``fractions``.

    Args:
        region: the area to split (map units of the data's CRS).
        block_size: side of a block, map units; larger than the spatial
            autocorrelation range of the labels, and than a training crop.
        fractions: split name → share of the blocks (summing to 1).
        seed: seed of the assignment.
        classes: the class ids each of ``blocks(region, block_size)`` holds
            (:func:`block_classes`). The first split of ``fractions`` is then drawn to
            hold every class the blocks hold: the seed's draw where it does (the usual
            case with dense labels), else the first of up to :data:`REDRAWS` more draws, seeded
            ``(seed, 1)``, ``(seed, 2)``, ... that does; the seed's draw where none does.

    Returns:
        split name → the union of its blocks; the splits cover ``region`` and
        overlap nowhere.

    Raises:
        GeossclError: if the fractions are invalid or a split gets no block.
    """
    if any(f < 0 for f in fractions.values()) or not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-6):
        raise GeossclError(f"fractions: {dict(fractions)} must be non-negative and sum to 1")
    cells = blocks(region, block_size)
    counts = _apportion(len(cells), list(fractions.values()))
    for (name, fraction), count in zip(fractions.items(), counts):
        if fraction > 0 and count == 0:
            raise GeossclError(
                f"block_size: {len(cells)} block(s) of {block_size:g} map units leave split {name!r} empty; use smaller blocks"
            )
    order = np.random.default_rng(seed).permutation(len(cells))
    if classes is not None:
        if len(classes) != len(cells):
            raise ValueError(f"classes: {len(classes)} sets for {len(cells)} blocks")
        # Sparse labels (a few polygons, a few labelled tiles) in a few large blocks: a class whose
        # every pixel falls in the validation blocks would make a model that never predicts it.
        held = set().union(*classes)
        for attempt in range(REDRAWS + 1):
            draw = order if attempt == 0 else np.random.default_rng([seed, attempt]).permutation(len(cells))
            if set().union(*(classes[i] for i in draw[: counts[0]])) == held:
                order = draw
                break
    out, start = {}, 0
    for name, count in zip(fractions, counts):
        out[name] = shapely.union_all([cells[i] for i in order[start : start + count]])
        start += count
    return out


def label_fraction(
    region: BaseGeometry, fraction: float, block_size: float, seed: int = 0, option: str = "label_fraction",
    region_name: str = "training region",
) -> BaseGeometry:
    """Blocks of ``region`` holding about ``fraction`` of its area: the labels a run may use there.

    ``option`` and ``region_name`` only word the errors (the validation region's
    share is ``val_label_fraction``).

    Raises:
        GeossclError: if ``fraction`` is not in (0, 1] or leaves no whole block.
    """
    if not 0 < fraction <= 1:
        raise GeossclError(f"{option}: must lie in (0, 1], got {fraction}")
    cells = blocks(region, block_size)
    order = np.random.default_rng(seed).permutation(len(cells))
    target = fraction * region.area
    chosen, area = [], 0.0
    for i in order:
        if area >= target:
            break
        if cells[i].area < 1e-6 * block_size**2:
            # A float sliver where the region's edges meet the grid: it holds no pixel.
            # (Dropping it in blocks() would reorder the permutation: other draws.)
            continue
        if area + cells[i].area <= 1.5 * target:  # a block may overshoot the share by half, no more
            chosen.append(cells[i])
            area += cells[i].area
    if not chosen:
        raise GeossclError(
            f"{option}: {fraction} of the {region_name} leaves no labelled block "
            f"(one block of {block_size:g} map units is larger); use smaller blocks"
        )
    return shapely.union_all(chosen)


def _apportion(total: int, shares: list[float]) -> list[int]:
    """Whole counts summing to ``total``, closest to ``total * share`` (largest remainders)."""
    exact = [total * s for s in shares]
    counts = [math.floor(e) for e in exact]
    for i in sorted(range(len(shares)), key=lambda i: exact[i] - counts[i], reverse=True)[: total - sum(counts)]:
        counts[i] += 1
    return counts


def read_region(path: str, crs: Any) -> BaseGeometry:
    """The union of a vector layer's geometries, in ``crs``.

    Raises:
        GeossclError: if the layer cannot be read or has no CRS.
    """
    frame = read_layer(path)
    if frame.crs is None:
        raise GeossclError(f"{path}: region layer has no CRS")
    return polygonal(shapely.union_all(frame.to_crs(crs).geometry.values))


def label_extent(mosaic: Mosaic, label_area: str | None) -> tuple[gpd.GeoSeries, BaseGeometry | None]:
    """Where labels count: the imagery's footprint, within the polygons of ``label_area`` if given.

    Returns:
        that area as a GeoSeries in the mosaic's CRS (the extent of a background class),
        and the label area's geometry in that CRS (``None`` without one).

    Raises:
        GeossclError: if the label area cannot be read or misses the imagery.
    """
    footprint = mosaic.footprint()
    if not label_area:
        return footprint, None
    limit = read_region(label_area, mosaic.crs)
    inside = polygonal(shapely.intersection(footprint.iloc[0], limit))
    if inside.is_empty:
        raise NoOverlap(f"{label_area}: label area does not overlap the imagery")
    return gpd.GeoSeries([inside], crs=footprint.crs), limit


class KeepRegion:
    """Sample transform: labels outside ``region`` become :data:`IGNORE_INDEX`."""

    def __init__(self, region: BaseGeometry) -> None:
        self.region = region

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        x, y = sample["bounds"][0], sample["bounds"][1]
        outside = pixels_outside(self.region, (x.start, y.start, x.stop, y.stop), sample["mask"].shape[-2:])
        sample["mask"] = sample["mask"].masked_fill(torch.from_numpy(outside), IGNORE_INDEX)
        return sample


def pixels_outside(region: BaseGeometry, bounds: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
    """The pixels of a grid of ``shape`` (rows, columns) over ``bounds`` (minx, miny, maxx, maxy; north up)
    whose centres lie outside ``region``, as a boolean array of that shape."""
    if region.is_empty:
        return np.ones(tuple(shape), bool)
    return rasterio.features.geometry_mask([region], tuple(shape), from_bounds(*bounds, shape[1], shape[0]))


def class_pixels(labels: GeoDataset, region: BaseGeometry, grid: Mosaic, tile: int = 1024) -> dict[int, int]:
    """Labelled pixels per class id inside ``region``: pixels of the imagery ``grid`` whose centres it holds.

    The region's bounds are cut into windows of ``tile`` pixels on ``grid``'s pixel grid,
    and only the part of the region in each window is read (snapped out to whole pixels):
    each pixel is counted once, a few scattered blocks cost a few small reads, and a
    region as large as a mosaic is read a window at a time.
    """
    counts: dict[int, int] = {}
    for mask, _ in _labelled_windows(labels, region, grid, tile):
        ids, n = torch.unique(mask[mask != IGNORE_INDEX], return_counts=True)
        for i, c in zip(ids.tolist(), n.tolist()):
            counts[i] = counts.get(i, 0) + c
    return counts


def block_classes(labels: GeoDataset, region: BaseGeometry, block_size: float, grid: Mosaic, tile: int = 1024) -> list[set[int]]:
    """The class ids of the labelled pixels in each of ``blocks(region, block_size)``, in that order.

    Read as :func:`class_pixels` reads (one pass over the region, a window at a time);
    each pixel counts in the block holding its centre.
    """
    return _classes_by_block(labels, region, block_size, grid, tile)[1]


def _classes_by_block(labels: GeoDataset, region: BaseGeometry, block_size: float, grid: Mosaic,
                      tile: int = 1024) -> tuple[list[BaseGeometry], list[set[int]]]:
    """:func:`blocks` and :func:`block_classes` of one grid, made once."""
    cells, kept, (xmin, ymin, cols) = _grid_blocks(region, block_size)
    position = {flat: i for i, flat in enumerate(kept)}
    found: list[set[int]] = [set() for _ in cells]
    rx, ry = grid.res
    for mask, (left, top) in _labelled_windows(labels, region, grid, tile):
        ids = mask.numpy()
        rows, columns = np.nonzero(ids != IGNORE_INDEX)
        if not len(rows):
            continue
        # The block of each row and column of the window, then (block, class) pairs counted by bincount:
        # linear in the pixels (np.unique over pairs sorts them, 5× slower on a dense land-use raster).
        block_col = np.floor((left + (np.arange(ids.shape[1]) + 0.5) * rx - xmin) / block_size).astype(np.int64)
        block_row = np.floor((top - (np.arange(ids.shape[0]) + 0.5) * ry - ymin) / block_size).astype(np.int64)
        c0, r0, across = block_col.min(), block_row.min(), int(block_col.max() - block_col.min() + 1)
        values = ids[rows, columns]
        low, kinds = int(values.min()), int(values.max() - values.min() + 1)
        pairs = ((block_row[rows] - r0) * across + block_col[columns] - c0) * kinds + (values - low)
        for key in np.flatnonzero(np.bincount(pairs)).tolist():
            spot, value = divmod(key, kinds)
            flat = int(r0 + spot // across) * cols + int(c0 + spot % across)
            if flat in position:
                found[position[flat]].add(value + low)
    return cells, found


def near_labels(labels: GeoDataset, region: BaseGeometry, grid: Mosaic, cell: int, reach: float,
                most_cells: int = MOST_CELLS) -> BaseGeometry:
    """The part of ``region`` within ``reach`` pixels of a cell of ``cell`` pixels holding a labelled pixel of it;
    ``region`` itself where that part is most of it (:data:`DENSE`: dense labels keep their sampling).

    Where crops are drawn over sparse labels (a few polygons over a scene, a raster mostly nodata),
    boxes drawn anywhere in ``region`` mostly hold no label. A box centred in the result holds a
    whole labelled cell when its side is ``2 * (reach + cell)`` pixels or more. Cells grow past
    ``cell`` where ``region`` would hold more than ``most_cells`` of them, and the reach shrinks by
    as much (not below 0: past that, a box may hold only the empty part of a cell). One pass over
    the labels of ``region``.
    """
    if region.is_empty:
        return region
    size = float(grid.res[0])
    side = max(cell, math.ceil(math.sqrt(region.area / most_cells) / size))
    reach = max(0.0, reach - (side - cell))
    near = [c for c, held in zip(*_classes_by_block(labels, region, side * size, grid)) if held]
    if not near or sum(c.area for c in near) >= DENSE * region.area:  # (disjoint cells: no union needed to tell)
        return region
    within = shapely.union_all(near)
    if reach > 0:
        within = within.buffer(reach * size, cap_style="square", join_style="mitre")
    within = polygonal(shapely.intersection(within, region))
    return region if within.area >= DENSE * region.area else within


def _labelled_windows(labels: GeoDataset, region: BaseGeometry, grid: Mosaic, tile: int) -> Iterator[tuple[torch.Tensor, tuple[float, float]]]:
    """The labels of ``region`` window by window: each window's mask (outside the region
    :data:`IGNORE_INDEX`) and the map coordinates of its top-left corner."""
    if region.is_empty:
        return
    keep = KeepRegion(region)
    rx, ry = grid.res
    x0, y0, x1, y1 = grid.snap(region.bounds)
    for wy in np.arange(y0, y1 - ALIGN_TOL * ry, tile * ry):
        for wx in np.arange(x0, x1 - ALIGN_TOL * rx, tile * rx):
            window = (wx, wy, min(wx + tile * rx, x1), min(wy + tile * ry, y1))
            piece = shapely.intersection(region, shapely.box(*window))
            if piece.is_empty or piece.area <= 0:
                continue
            # (snapping outwards stays inside the window: its edges are on the grid)
            bx0, by0, bx1, by1 = grid.snap(piece.bounds)
            bx0, by0, bx1, by1 = max(bx0, window[0]), max(by0, window[1]), min(bx1, window[2]), min(by1, window[3])
            yield keep(labels[bx0:bx1:rx, by0:by1:ry])["mask"], (bx0, by1)
