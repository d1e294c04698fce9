"""A sampler of single boxes centred inside an arbitrary region."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import shapely
import torch
from shapely.geometry.base import BaseGeometry
from torchgeo.datasets import GeoDataset
from torchgeo.samplers import GeoSampler, Units

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
    ) -> None:
        """Initialise a new sampler.

        Args:
            dataset: dataset to index.
            size: box side, pixels of ``dataset.res`` (or map units with ``Units.CRS``).
            region: shapely geometry in the dataset CRS the centres are drawn from.
            length: boxes per epoch.
            units: units of ``size``.
            generator: source of the sampler's seed.
        """
        super().__init__(dataset)
        bounds = self.roi.bounds
        self.size = float(size) * (self.res[0] if units == Units.PIXELS else 1.0)
        region = shapely.intersection(region, self.roi)
        parts = [g for g in getattr(region, "geoms", [region]) if not g.is_empty and g.area > 0]
        if not parts:
            raise GeossclError("region: does not overlap the dataset")
        if self.size > bounds[2] - bounds[0] or self.size > bounds[3] - bounds[1]:
            raise GeossclError(f"size: a box of {self.size:g} map units is larger than the dataset")
        self.parts = parts
        areas = np.array([p.area for p in parts])
        self.weights = areas / areas.sum()
        self.length = int(length)
        self.seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        self.epoch = 0
        self._bounds = bounds
        self._origin = np.array(getattr(dataset, "grid_origin", (bounds[0], bounds[3])), dtype=np.float64)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch: each draws other boxes, reproducibly."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        x0, y0, x1, y1 = self._bounds
        res = np.array(self.res)
        for _ in range(self.length):
            part = self.parts[rng.choice(len(self.parts), p=self.weights)]
            centre = _point_in(part, rng)
            corner = self._origin + np.rint((centre - self.size / 2 - self._origin) / res) * res
            minx = float(np.clip(corner[0], x0, x1 - self.size))
            miny = float(np.clip(corner[1], y0, y1 - self.size))
            yield slice(minx, minx + self.size), slice(miny, miny + self.size), slice(self.toi.left, self.toi.right)


def _point_in(polygon: BaseGeometry, rng: np.random.Generator) -> np.ndarray:
    """A point uniform in ``polygon`` (rejection from its bounding box)."""
    xmin, ymin, xmax, ymax = polygon.bounds
    for _ in range(1000):
        point = rng.uniform((xmin, ymin), (xmax, ymax))
        if polygon.contains(shapely.Point(point)):
            return point
    return np.array(polygon.representative_point().coords[0])
