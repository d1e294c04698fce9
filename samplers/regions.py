"""Samplers of single boxes over an arbitrary region: random (training) and a covering grid (validation)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import shapely
import torch
from shapely.geometry.base import BaseGeometry
from torchgeo.datasets import GeoDataset
from torchgeo.samplers import GeoSampler, Units

from geosscl.data.grid import ALIGN_TOL, snap_down, snap_up
from geosscl.errors import GeossclError


class RegionSampler(GeoSampler):
    """Samples boxes whose centres are uniform over a region (e.g. scattered label blocks).

    TorchGeo's :class:`~torchgeo.samplers.RandomGeoSampler` places boxes inside the
    *bounding box* of each (roi-clipped) file, so with a few small blocks of labels
    scattered over a scene most boxes would hold no label. Here a polygon of the
    region is drawn by area, a centre uniformly inside it, and the box (``size``
    pixels, whole pixels of the dataset grid) is shifted to lie inside the dataset.
    Parts of a box outside the region are the caller's to mask.

    Yields ``(x_slice, y_slice, t_slice)`` queries, as TorchGeo samplers do.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        dataset: GeoDataset,
        size: float,
        region: BaseGeometry,
        length: int,
        units: Units = Units.PIXELS,
        generator: torch.Generator | None = None,
        origin: tuple[float, float] | None = None,
    ) -> None:
        """Initialise a new sampler.

        Args:
            dataset: dataset to index.
            size: box side, pixels of ``dataset.res`` (or map units with ``Units.CRS``).
                In pixels a box is ``size`` pixels along both axes, also where the
                pixels are not square.
            region: shapely geometry in the dataset CRS the centres are drawn from.
            length: boxes per epoch.
            units: units of ``size``.
            generator: source of the sampler's seed.
            origin: a pixel corner of the imagery's grid, which boxes keep to (default:
                the dataset's ``grid_origin``, else its top-left corner). Give it for an
                ``imagery & labels`` intersection whose extent is off the imagery's grid
                (vector labels end where their polygons do).
        """
        super().__init__(dataset)
        bounds = self.roi.bounds
        #: box (width, height), map units
        self.size = _box_size(size, units, self.res)
        region = shapely.intersection(region, self.roi)
        parts = [g for g in getattr(region, "geoms", [region]) if not g.is_empty and g.area > 0]
        if not parts:
            raise GeossclError("region: does not overlap the dataset")
        origin = origin or getattr(dataset, "grid_origin", (bounds[0], bounds[3]))
        bounds = _inside_grid(bounds, origin, self.res)
        if _wider(self.size, bounds, self.res):
            raise GeossclError(f"size: a box of {self.size[0]:g} × {self.size[1]:g} map units is larger than the dataset")
        self.parts = parts
        areas = np.array([p.area for p in parts])
        self.weights = areas / areas.sum()
        self.length = int(length)
        self.seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        self.epoch = 0
        self._bounds = bounds
        self._origin = np.array(origin, dtype=np.float64)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch: each draws other boxes, reproducibly."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        x0, y0, x1, y1 = self._bounds
        res = np.array(self.res)
        w, h = self.size
        for _ in range(self.length):
            part = self.parts[rng.choice(len(self.parts), p=self.weights)]
            centre = _point_in(part, rng)
            corner = self._origin + np.rint((centre - np.array(self.size) / 2 - self._origin) / res) * res
            minx = float(np.clip(corner[0], x0, x1 - w))
            miny = float(np.clip(corner[1], y0, y1 - h))
            yield slice(minx, minx + w), slice(miny, miny + h), slice(self.toi.left, self.toi.right)


class RegionGridSampler(GeoSampler):
    """Each box of a grid that covers a region (e.g. scattered validation blocks), once.

    Written by hand because TorchGeo's :class:`~torchgeo.samplers.GridGeoSampler` (0.8.1)
    covers the bounding box of the roi-clipped files and: yields nothing over a region
    narrower than one box (a few thin validation blocks, a strip of polygons); counts
    ``ceil((extent - size) / stride) + 1`` boxes, so that floating-point noise in an extent
    of exactly k boxes (fine pixels in degrees: the Sen1Floods11 chip) adds a box wholly
    beyond the region and the imagery, which the dataset then refuses; and yields every box
    of the bounding box, also those without a part in the region.

    Here the grid starts at the region's min corner, snapped to the imagery's pixel grid
    (``origin``), and is counted with a tolerance; the last box of a row may reach past the region (as
    TorchGeo's does: boxes never overlap, so no pixel is scored twice). Along an axis
    where the region is narrower than a box, one box is centred on it, shifted inside the
    dataset (on the grid). Only boxes holding part of the region are yielded; parts of a box outside
    the region are the caller's to mask.

    Yields ``(x_slice, y_slice, t_slice)`` queries, as TorchGeo samplers do.

    .. versionadded:: 0.1
    """

    def __init__(self, dataset: GeoDataset, size: float, region: BaseGeometry, units: Units = Units.PIXELS,
                 origin: tuple[float, float] | None = None) -> None:
        """Initialise a new sampler.

        Args:
            dataset: dataset to index.
            size: box side, pixels of ``dataset.res`` along both axes (or map units
                with ``Units.CRS``).
            region: shapely geometry in the dataset CRS to cover.
            units: units of ``size``.
            origin: a pixel corner of the imagery's grid, which boxes keep to (as in
                :class:`RegionSampler`).
        """
        super().__init__(dataset)
        bounds = self.roi.bounds
        sides = _box_size(size, units, self.res)
        region = shapely.intersection(region, self.roi)
        if region.is_empty or region.area <= 0:
            raise GeossclError("region: does not overlap the dataset")
        origin = origin or getattr(dataset, "grid_origin", (bounds[0], bounds[3]))
        bounds = _inside_grid(bounds, origin, self.res)
        if _wider(sides, bounds, self.res):
            raise GeossclError(f"size: a box of {sides[0]:g} × {sides[1]:g} map units is larger than the dataset")
        starts = []
        for lo, hi, start, stop, step, zero, side in (
                (region.bounds[0], region.bounds[2], bounds[0], bounds[2], self.res[0], origin[0], sides[0]),
                (region.bounds[1], region.bounds[3], bounds[1], bounds[3], self.res[1], origin[1], sides[1])):
            if hi - lo < side:
                first = snap_down(lo - (side - (hi - lo)) / 2, zero, step)
                starts.append([max(start, min(first, stop - side))])
            else:
                first = snap_down(lo, zero, step)
                count = max(1, math.ceil((hi - first) / side - ALIGN_TOL))
                starts.append([first + i * side for i in range(count)])
        #: box (width, height), map units
        self.size = sides
        w, h = sides
        self.boxes = [(x, y) for y in starts[1] for x in starts[0]
                      if shapely.intersection(shapely.box(x, y, x + w, y + h), region).area > 0]

    def __len__(self) -> int:
        return len(self.boxes)

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        w, h = self.size
        for x, y in self.boxes:
            yield slice(x, x + w), slice(y, y + h), slice(self.toi.left, self.toi.right)


def _inside_grid(bounds: tuple[float, float, float, float], origin: tuple[float, float],
                 res: tuple[float, float]) -> tuple[float, float, float, float]:
    """``bounds`` shrunk to whole pixels of the grid through ``origin`` (boxes shifted inside stay on it)."""
    x0, y0, x1, y1 = bounds
    return (snap_up(x0, origin[0], res[0]), snap_up(y0, origin[1], res[1]),
            snap_down(x1, origin[0], res[0]), snap_down(y1, origin[1], res[1]))


def _box_size(size: float, units: Units, res: tuple[float, float]) -> tuple[float, float]:
    """(width, height) in map units of a box ``size`` pixels (or map units) on a side."""
    if units == Units.PIXELS:
        return float(size) * res[0], float(size) * res[1]
    return float(size), float(size)


def _wider(sides: tuple[float, float], bounds: tuple[float, float, float, float], res: tuple[float, float]) -> bool:
    """Whether a box of ``sides`` (width, height) exceeds ``bounds`` along either axis (by more than float noise)."""
    return sides[0] > bounds[2] - bounds[0] + ALIGN_TOL * res[0] or sides[1] > bounds[3] - bounds[1] + ALIGN_TOL * res[1]


def _point_in(polygon: BaseGeometry, rng: np.random.Generator) -> np.ndarray:
    """A point uniform in ``polygon`` (rejection from its bounding box)."""
    xmin, ymin, xmax, ymax = polygon.bounds
    for _ in range(1000):
        point = rng.uniform((xmin, ymin), (xmax, ymax))
        if polygon.contains(shapely.Point(point)):
            return point
    return np.array(polygon.representative_point().coords[0])
