"""Boxes of another sampler, each read from one date (or every date) of the place it falls in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torchgeo.samplers import GeoSampler

from geosscl.data.mosaic import Mosaic


class DatedQuery(NamedTuple):
    """A TorchGeo query and the file of the date to read it from (see ``Mosaic.read``'s ``first``)."""

    query: tuple[slice, slice, slice]
    file: str


class DateSampler(GeoSampler):
    """The boxes of ``boxes``, each paired with a date of the imagery that holds it.

    Where several files of a mosaic cover one place (dates of a tile), a dataset reads
    the first in path order; labels drawn once and true on every date (stable land
    cover) can train on them all. Here each box of ``boxes`` is read from one of the
    dates holding it, drawn at random (training), or from each of them in turn
    (``each=True``: validation on every date). The date is drawn here, not in the
    dataset, so that it depends on the seed alone, not on the number of loader
    workers.

    TorchGeo's samplers choose a date through a query's time slice, which needs the
    acquisition time of every file; a folder of GeoTIFFs seldom says it in a form one
    can rely on, hence this sampler. It yields :class:`DatedQuery` items, which
    :class:`geosscl.data.DatedIntersection` reads.

    .. versionadded:: 0.1
    """

    def __init__(self, boxes: GeoSampler, mosaic: Mosaic, each: bool = False,
                 generator: torch.Generator | None = None) -> None:
        """Initialise a new sampler.

        Args:
            boxes: a sampler of ``(x_slice, y_slice, t_slice)`` queries over ``mosaic``
                (or over an intersection of it with labels).
            mosaic: the imagery whose dates are drawn.
            each: yield every box once per date holding it, in path order (else once,
                from a date drawn at random).
            generator: source of the sampler's seed.
        """
        super().__init__(mosaic)
        self.boxes = boxes
        self.mosaic = mosaic
        self.each = bool(each)
        self.seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        self.epoch = 0
        self._length = sum(len(self._dates(q)) for q in boxes) if each else len(boxes)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch: each draws other dates (and other boxes, where ``boxes`` has ``set_epoch``)."""
        self.epoch = int(epoch)
        if hasattr(self.boxes, "set_epoch"):
            self.boxes.set_epoch(epoch)

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[DatedQuery]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for query in self.boxes:
            dates = self._dates(query)
            if self.each:
                yield from (DatedQuery(query, f) for f in dates)
            else:
                yield DatedQuery(query, dates[rng.integers(len(dates))])

    def _dates(self, query: tuple[slice, slice, slice]) -> list[str]:
        x, y = query[0], query[1]
        return self.mosaic.places_at((x.start, y.start, x.stop, y.stop))
