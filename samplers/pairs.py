"""Samplers that yield pairs of overlapping views, drawn in map coordinates."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import shapely
import torch
from shapely.geometry.base import BaseGeometry
from torchgeo.datasets import GeoDataset
from torchgeo.samplers import GeoSampler, Units

from geosscl.errors import GeossclError

Box = tuple[float, float, float, float]
"""``(minx, miny, maxx, maxy)`` in map units of the dataset CRS."""

# Locations tried for one drawn pair geometry before the geometry itself is redrawn.
_PLACEMENT_TRIES = 32
# Geometries drawn for one pair before giving up with an error.
_GEOMETRY_TRIES = 200


class ViewPair(NamedTuple):
    """Two boxes in the dataset CRS that overlap.

    ``box_a`` and ``box_b`` are ``(minx, miny, maxx, maxy)`` in map units. ``file_a``
    is the file (the ``filepath`` of the dataset's index) whose footprint the pair
    was drawn in, or None; ``file_b``, when set, the file view B is read from. Where
    files overlap, such as acquisitions of one place on several dates,
    :class:`geosscl.data.PairDataset` reads view A from ``file_a`` first, so every
    acquisition is drawn and not only the first, and view B from ``file_b``.
    """

    box_a: Box
    box_b: Box
    file_a: str | None = None
    file_b: str | None = None

    @property
    def overlap(self) -> Box:
        """Intersection of the two boxes, in map units."""
        a, b = self.box_a, self.box_b
        return max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])

    @property
    def union(self) -> Box:
        """Smallest box holding both views, in map units."""
        a, b = self.box_a, self.box_b
        return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])

    @property
    def overlap_fraction(self) -> float:
        """Area of the intersection over the area of the smaller box, in [0, 1]."""
        ox0, oy0, ox1, oy1 = self.overlap
        inter = max(ox1 - ox0, 0.0) * max(oy1 - oy0, 0.0)
        return inter / min(_area(self.box_a), _area(self.box_b))

    @property
    def slices(self) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
        """Each box as ``(x_slice, y_slice)``, to index any TorchGeo dataset."""
        return tuple((slice(b[0], b[2]), slice(b[1], b[3])) for b in (self.box_a, self.box_b))  # type: ignore[return-value]


def _area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _range(name: str, value: tuple[float, float], low: float, high: float | None) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not (lo <= hi and lo >= low and (high is None or hi <= high)) or (low == 0 and lo <= 0):
        bound = f"0 < lo <= hi <= {high:g}" if high is not None else "0 < lo <= hi"
        raise GeossclError(f"{name}: range ({lo:g}, {hi:g}) cannot be met; need {bound}")
    return lo, hi


class OverlappingPairSampler(GeoSampler):
    """Samples pairs of boxes that overlap by a controlled fraction.

    Each item is a :class:`ViewPair`: two boxes in the dataset CRS whose overlap
    (area of intersection over area of the smaller box) lies in ``overlap``. Each
    box is ``size`` scaled by a factor drawn uniformly from ``scale`` (the same factor
    on both sides, so a view keeps its aspect), and both lie inside the footprint of
    the dataset's files and inside ``roi``. The pair may straddle files.

    Boxes are whole pixels of the dataset's grid (its ``grid_origin`` and ``res``):
    sides, offsets and positions are integer pixel counts, as with TorchGeo's
    :class:`~torchgeo.samplers.RandomGeoSampler`, so views need no sub-pixel shift.

    How a pair is drawn: the two scale factors and a target overlap ``f ~ U(overlap)``
    fix the boxes' sides and their offset (the intersection's sides split ``f``
    log-uniformly between x and y, rounded to whole pixels; a draw whose rounded
    overlap leaves the range is drawn again; the direction of the offset is random).
    Then a location is drawn: a file weighted by its area, a centre uniform in it,
    and the pair is kept if the footprint ∩ ``roi`` covers both boxes (and, with
    ``max_nodata``, neither box is mostly nodata). Rejection redraws only the
    location, keeping the drawn geometry, so the overlap and scale distributions are
    not biased by it; only when no location in 32 tries fits is the geometry redrawn,
    which favours pairs with a smaller union in tight or patchy regions. The count of
    such redraws is kept in :attr:`geometry_redraws`. The file drawn is the pair's
    ``file_a``. With ``across_files``, ``file_b`` is drawn uniformly from the other
    files whose footprint holds the whole union (other dates of the place; with
    ``max_nodata``, those whose nodata passes on both boxes), or is ``file_a`` where
    there is none: the two views then show one place at two times,
    and the losses ask their features to agree across the change.

    Reproducibility: the stream of pairs is a function of the seed taken from
    ``generator`` at construction, the epoch (:meth:`set_epoch`, advanced by one at
    each full iteration otherwise), the distributed rank and the DataLoader worker
    the sampler runs in. Each (rank, worker) draws from its own independent stream
    and yields its share of ``length``, so ranks and workers never repeat each
    other's pairs. When the sampler is given to a :class:`~torch.utils.data.DataLoader`
    it runs in the main process (there is one stream per rank); set
    ``use_distributed_sampler=False`` in a Lightning ``Trainer``, since the sampler
    already splits by rank.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        dataset: GeoDataset,
        size: float,
        overlap: tuple[float, float] = (0.3, 0.8),
        scale: tuple[float, float] = (1.0, 1.0),
        length: int | None = None,
        roi: BaseGeometry | None = None,
        units: Units = Units.PIXELS,
        generator: torch.Generator | None = None,
        max_nodata: float | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        across_files: bool = False,
    ) -> None:
        """Initialise a new sampler.

        Args:
            dataset: dataset to draw from; its ``index`` gives the file footprints.
            size: side of a view at scale 1, in pixels of ``dataset.res``
                (``units=Units.PIXELS``) or in map units (``Units.CRS``).
            overlap: ``(lo, hi)`` with ``0 < lo <= hi <= 1``: range of the area of
                intersection over the area of the smaller box.
            scale: ``(lo, hi)`` with ``0 < lo <= hi``: range of the factor applied
                to each view's side.
            length: number of pairs per epoch, over all ranks (default: about the
                number of non-overlapping ``size`` boxes in the footprint).
            roi: region to draw from, a shapely geometry in the dataset CRS
                (default: the whole footprint).
            units: whether ``size`` is in pixels or CRS units.
            generator: pseudo-random generator the sampler's seed is drawn from
                (default: torch's global generator).
            max_nodata: if set, reject views whose nodata fraction exceeds it,
                estimated on a coarse grid of the dataset's valid pixels (needs a
                dataset with a ``read(bounds, res)`` method, like
                :class:`geosscl.data.Mosaic`). A file that overlaps others (a date of
                a place) has a grid of its own: a view read from it alone is judged
                by its own nodata (clouds masked on one date reject that date's
                views, not the others'); elsewhere a pixel is valid if any file
                holds it, as a read fills one file's gaps from the others.
            rank: distributed rank (default: ``torch.distributed``'s, or 0).
            world_size: number of ranks (default: ``torch.distributed``'s, or 1).
            across_files: draw view B from another file that holds the union,
                where there is one (see above).

        Raises:
            GeossclError: if a range cannot be met, ``roi`` misses the dataset, or the
                smallest possible pair does not fit inside it.
        """
        if roi is not None and not roi.intersects(shapely.union_all(dataset.index.geometry.values)):
            raise GeossclError(f"roi: {roi.bounds} does not intersect the dataset bounds {tuple(dataset.index.total_bounds)}")
        super().__init__(dataset, roi)
        self.overlap = _range("overlap", overlap, 0.0, 1.0)
        self.scale = _range("scale", scale, 0.0, None)
        if not size > 0:
            raise GeossclError(f"size: must be positive, got {size}")
        if units == Units.PIXELS:
            self.size = (float(size) * self.res[1], float(size) * self.res[0])
        else:
            self.size = (float(size), float(size))
        # Views are drawn in whole pixels of the dataset grid, so reading one needs no
        # sub-pixel shift (TorchGeo's RandomGeoSampler snaps the same way).
        self.size_px = (self.size[1] / self.res[0], self.size[0] / self.res[1])  # (w, h)
        self._anchor = np.array(getattr(dataset, "grid_origin", dataset.index.total_bounds[[0, 3]]), dtype=np.float64)
        if max_nodata is not None and not 0.0 <= max_nodata < 1.0:
            raise GeossclError(f"max_nodata: must lie in [0, 1), got {max_nodata}")

        geoms = [g for g in self.index.geometry.values if g is not None and not g.is_empty and g.area > 0]
        if not geoms:
            raise GeossclError("roi: no part of the dataset lies inside the region of interest")
        self.footprint = shapely.intersection(shapely.union_all(geoms), self.roi)
        shapely.prepare(self.footprint)
        kept = [(g, f) for g, f in zip(self.index.geometry.values, self._filepaths())
                if g is not None and not g.is_empty and g.area > 0]
        self._tiles = np.array([g.bounds for g, _ in kept], dtype=np.float64)
        self._tile_files = [f for _, f in kept]
        areas = np.array([g.area for g, _ in kept])
        self._tile_p = areas / areas.sum()

        # The smallest pair there is: both views at the smallest scale, overlapping fully.
        smallest = (self.size[1] * self.scale[0], self.size[0] * self.scale[0])  # (w, h)
        fx0, fy0, fx1, fy1 = self.footprint.bounds
        if smallest[0] > fx1 - fx0 or smallest[1] > fy1 - fy0:
            raise GeossclError(
                f"size: a view of {smallest[0]:.6g} x {smallest[1]:.6g} map units is larger than "
                f"the region it is drawn from ({fx1 - fx0:.6g} x {fy1 - fy0:.6g})"
            )

        if length is None:
            length = max(1, int(self.footprint.area // (self.size[0] * self.size[1])))
        self.length = int(length)

        self.seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        #: Pairs of this rank's stream to skip at the start of an epoch (drawn and
        #: dropped, so the rest is unchanged): how a resumed run continues its stream.
        self.start = 0
        self.epoch = 0
        self._epoch_set = False
        if world_size is None:
            dist = torch.distributed
            ready = dist.is_available() and dist.is_initialized()
            world_size = dist.get_world_size() if ready else 1
            rank = dist.get_rank() if ready and rank is None else rank
        self.rank = int(rank or 0)
        self.world_size = int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise GeossclError(f"rank: {self.rank} not in 0..{self.world_size - 1}")

        self.max_nodata = max_nodata
        self._coverage: list[tuple[np.ndarray, tuple[float, float, float, float]]] | None = None
        if max_nodata is not None:
            self._coverage_grid(dataset)
        self.geometry_redraws = 0
        self.across_files = bool(across_files)

    def _filepaths(self) -> list[str | None]:
        if "filepath" in self.index.columns:
            return [str(f) for f in self.index["filepath"]]
        return [None] * len(self.index)

    # -- epochs and streams ---------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch: each epoch draws other pairs, reproducibly."""
        self.epoch = int(epoch)
        self._epoch_set = True

    def _stream(self) -> tuple[np.random.Generator, int]:
        """This (rank, worker)'s random generator and number of pairs."""
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        streams = self.world_size * workers
        stream = self.rank * workers + worker
        count = self.length // streams + (1 if stream < self.length % streams else 0)
        seq = np.random.SeedSequence([self.seed, self.epoch, self.rank, worker])
        return np.random.default_rng(seq), count

    def __len__(self) -> int:
        """Number of pairs this rank yields in one epoch (after :attr:`start`)."""
        share = self.length // self.world_size + (1 if self.rank < self.length % self.world_size else 0)
        return max(share - self.start, 0)

    def __iter__(self) -> Iterator[ViewPair]:
        """Yield this rank's (and worker's) pairs for the current epoch.

        Yields:
            :class:`ViewPair` s, boxes in the dataset CRS.
        """
        rng, count = self._stream()
        if not self._epoch_set:
            self.epoch += 1
        self._epoch_set = False
        for i in range(count):
            pair = self._draw(rng)
            if i >= self.start:
                yield pair

    # -- drawing --------------------------------------------------------------

    def _draw(self, rng: np.random.Generator) -> ViewPair:
        placed = 0
        for _ in range(_GEOMETRY_TRIES):
            geometry = self._geometry(rng)
            if geometry is None:
                continue
            placed += 1
            pair = self._place(rng, *geometry)
            if pair is not None:
                return pair
            self.geometry_redraws += 1
        if not placed:
            raise GeossclError(
                f"overlap: range {self.overlap} cannot be met by views of {self.size_px[0]:g} px "
                f"at scale {self.scale} rounded to whole pixels; widen the range"
            )
        # Say how large the ground is against the views: a mosaic of chips (64 px each, apart) holds no
        # view larger than a chip, whatever the number of tries.
        pieces = getattr(self.footprint, "geoms", [self.footprint])
        width, height = max(((g.bounds[2] - g.bounds[0]) / self.res[0], (g.bounds[3] - g.bounds[1]) / self.res[1])
                            for g in pieces)
        largest = max(s * self.scale[1] for s in self.size_px)
        raise GeossclError(
            f"size: no pair of {self.size_px[0]:g} × {self.size_px[1]:g} px views with overlap {self.overlap} and "
            f"scale {self.scale} fits inside the imagery (or region) after {_GEOMETRY_TRIES * _PLACEMENT_TRIES} "
            f"tries: its largest piece spans {width:.0f} × {height:.0f} px, a view up to {largest:.0f} px; "
            "use a smaller size or scale, or a larger region"
        )

    def _geometry(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
        """Both boxes in whole pixels relative to A's lower-left corner.

        Returns:
            ``(a, b)``: ``[x0, y0, x1, y1]`` integer arrays with ``a`` at the origin,
            or None when the overlap rounded to whole pixels misses the range.
        """
        factors = rng.uniform(*self.scale, size=2)
        sides = np.maximum(np.rint(np.outer(factors, self.size_px)), 1).astype(np.int64)  # rows: view; (w, h)
        small = sides.min(axis=0)
        fraction = rng.uniform(*self.overlap)
        # Intersection sides: ix * iy = fraction * small_w * small_h, split log-uniformly.
        u = rng.uniform()
        inter = np.clip(np.rint(small * np.array([fraction**u, fraction ** (1.0 - u)])), 1, small).astype(np.int64)
        achieved = inter.prod() / small.prod()
        if not self.overlap[0] <= achieved <= self.overlap[1]:
            return None
        # Along each axis B sits right (or above) of A, overlapping by `inter`, or left
        # (or below); a full overlap lets the smaller box slide inside the larger one.
        start = np.empty(2, dtype=np.int64)
        for axis in range(2):
            wa, wb, i = sides[0, axis], sides[1, axis], inter[axis]
            if i == small[axis]:
                start[axis] = rng.integers(min(0, wa - wb), max(0, wa - wb) + 1)
            elif rng.uniform() < 0.5:
                start[axis] = wa - i
            else:
                start[axis] = i - wb
        a = np.array([0, 0, sides[0, 0], sides[0, 1]])
        b = np.concatenate([start, start + sides[1]])
        return a, b

    def _place(self, rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> ViewPair | None:
        """Try locations for fixed boxes (whole pixels); return the first that fits."""
        drawn = rng.choice(len(self._tiles), size=_PLACEMENT_TRIES, p=self._tile_p)
        tiles = self._tiles[drawn]
        lo = np.minimum(a[:2], b[:2])
        union_px = np.maximum(a[2:], b[2:]) - lo
        res = np.array(self.res)
        # Centre of the union uniform over the chosen file's footprint, then its corner
        # moved to the nearest pixel corner of the dataset's grid.
        centre = tiles[:, :2] + rng.uniform(size=(_PLACEMENT_TRIES, 2)) * (tiles[:, 2:] - tiles[:, :2])
        corner = self._anchor + np.rint((centre - union_px * res / 2.0 - self._anchor) / res) * res
        origin = corner - lo * res  # A's lower-left corner, map units
        box_a = np.hstack([origin + a[:2] * res, origin + a[2:] * res])
        box_b = np.hstack([origin + b[:2] * res, origin + b[2:] * res])
        ok = shapely.covers(self.footprint, shapely.box(*box_a.T))
        ok &= shapely.covers(self.footprint, shapely.box(*box_b.T))
        if self._coverage is not None:
            ok &= self._valid_fraction(box_a, drawn) >= 1.0 - self.max_nodata
            ok &= self._valid_fraction(box_b, drawn) >= 1.0 - self.max_nodata
        for i in np.flatnonzero(ok):
            a_box, b_box = tuple(float(v) for v in box_a[i]), tuple(float(v) for v in box_b[i])
            file_a = self._tile_files[drawn[i]]
            if not self.across_files:
                return ViewPair(a_box, b_box, file_a)
            x0, y0 = min(a_box[0], b_box[0]), min(a_box[1], b_box[1])
            x1, y1 = max(a_box[2], b_box[2]), max(a_box[3], b_box[3])
            t = self._tiles
            holding = np.flatnonzero((t[:, 0] <= x0) & (t[:, 1] <= y0) & (t[:, 2] >= x1) & (t[:, 3] >= y1))
            others = [j for j in holding if self._tile_files[j] != file_a]
            if others and self._coverage is not None:
                # A pixel of a pair of two dates holds data where both do: the other date is judged on both boxes.
                both = np.vstack([box_a[i], box_b[i]])
                others = [j for j in others
                          if (self._valid_fraction(both, np.array([j, j])) >= 1.0 - self.max_nodata).all()]
            file_b = self._tile_files[others[rng.integers(len(others))]] if others else file_a
            return ViewPair(a_box, b_box, file_a, file_b)
        return None

    # -- nodata ---------------------------------------------------------------

    def _coverage_grid(self, dataset: GeoDataset) -> None:
        """Summed-area tables of valid pixels on cells ``size / 8``, one per place of the footprint.

        One table per connected part, not one over the footprint's bounds: the places of a
        mosaic may lie a continent apart, and a grid over their common bounds is mostly empty
        (scenes in North Carolina and Brazil took over 20 GB).
        """
        read = getattr(dataset, "read", None)
        if read is None:
            raise GeossclError("max_nodata: the dataset has no read(bounds, res) method; use geosscl.data.Mosaic")
        cell = (self.size[1] / 8.0, self.size[0] / 8.0)
        places = [g for g in shapely.get_parts(self.footprint) if g.area > 0]
        self._coverage = []
        for place in places:
            x0, y0, x1, y1 = place.bounds
            width = max(1, math.ceil((x1 - x0) / cell[0]))
            height = max(1, math.ceil((y1 - y0) / cell[1]))
            bounds = (x0, y1 - height * cell[1], x0 + width * cell[0], y1)
            image = read(bounds, cell)[0]
            valid = ~np.isnan(image).any(axis=0)
            table = np.zeros((height + 1, width + 1), dtype=np.float64)
            table[1:, 1:] = valid.cumsum(0).cumsum(1)
            self._coverage.append((table, (bounds[0], bounds[3], cell[0], cell[1])))
        self._places = shapely.STRtree(places)
        # A date's own grid: read from its file alone (its place covers the grid, which stays
        # inside it), as PairDataset reads a view whose union that file holds.
        self._date_coverage = {}
        tiles = shapely.box(*self._tiles.T)
        for i, j in zip(*shapely.STRtree(tiles).query(tiles, predicate="intersects")):
            if i == j or i in self._date_coverage or shapely.intersection(tiles[i], tiles[j]).area <= 0:
                continue
            x0, y0, x1, y1 = self._tiles[i]
            width = max(1, math.floor((x1 - x0) / cell[0] + 1e-9))
            height = max(1, math.floor((y1 - y0) / cell[1] + 1e-9))
            bounds = (x0, y1 - height * cell[1], x0 + width * cell[0], y1)
            valid = ~np.isnan(read(bounds, cell, first=self._tile_files[i])[0]).any(axis=0)
            table = np.zeros((height + 1, width + 1), dtype=np.float64)
            table[1:, 1:] = valid.cumsum(0).cumsum(1)
            self._date_coverage[i] = (table, (bounds[0], bounds[3], cell[0], cell[1]))

    def _valid_fraction(self, boxes: np.ndarray, tiles: np.ndarray | None = None) -> np.ndarray:
        """Fraction of valid grid cells in each box (rows ``minx, miny, maxx, maxy``).

        A box the footprint covers lies in one place, the one holding its centre; a box
        whose centre is in none gets 0. A box read from ``tiles`` (its tile's row, one per
        box) that a date covers is judged on that date's own grid.
        """
        centres = shapely.points((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2)
        hit, place = self._places.query(centres, predicate="intersects")
        which = np.full(len(boxes), -1)
        which[hit] = place
        fraction = np.zeros(len(boxes))
        for p in np.unique(which[which >= 0]):
            rows = which == p
            fraction[rows] = self._fraction_in(self._coverage[p], boxes[rows])
        if tiles is not None and self._date_coverage:
            t = self._tiles[tiles]
            inside = (t[:, 0] <= boxes[:, 0]) & (t[:, 1] <= boxes[:, 1]) & (t[:, 2] >= boxes[:, 2]) & (t[:, 3] >= boxes[:, 3])
            for tile in np.unique(tiles[inside]):
                if int(tile) in self._date_coverage:
                    rows = inside & (tiles == tile)
                    fraction[rows] = self._fraction_in(self._date_coverage[int(tile)], boxes[rows])
        return fraction

    @staticmethod
    def _fraction_in(coverage: tuple[np.ndarray, tuple[float, float, float, float]], boxes: np.ndarray) -> np.ndarray:
        table, (x0, top, cw, ch) = coverage
        h, w = table.shape[0] - 1, table.shape[1] - 1
        c0 = np.clip(np.floor((boxes[:, 0] - x0) / cw).astype(int), 0, w)
        c1 = np.clip(np.ceil((boxes[:, 2] - x0) / cw).astype(int), 0, w)
        r0 = np.clip(np.floor((top - boxes[:, 3]) / ch).astype(int), 0, h)
        r1 = np.clip(np.ceil((top - boxes[:, 1]) / ch).astype(int), 0, h)
        count = table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
        cells = np.maximum((r1 - r0) * (c1 - c0), 1)
        return count / cells
