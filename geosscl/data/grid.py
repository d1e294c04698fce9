"""The ``crs`` and ``res`` of geosscl's TorchGeo datasets, and snapping to a pixel grid."""

from __future__ import annotations

import math
from typing import Any

from rasterio.crs import CRS

#: How far from a grid line, in pixels, a coordinate still counts as on it (float noise).
ALIGN_TOL = 1e-6


def snap_down(value: float, origin: float, step: float) -> float:
    """``value`` moved to the grid line through ``origin`` (spacing ``step``) at or below it."""
    return origin + math.floor((value - origin) / step + ALIGN_TOL) * step


def snap_up(value: float, origin: float, step: float) -> float:
    """``value`` moved to the grid line through ``origin`` (spacing ``step``) at or above it."""
    return origin + math.ceil((value - origin) / step - ALIGN_TOL) * step


class MapGrid:
    """``crs`` and ``res`` properties for a :class:`~torchgeo.datasets.GeoDataset`.

    Mixed in before the TorchGeo base class. Setting ``res`` is silent (TorchGeo's
    setter prints a line at each change, e.g. in ``imagery & labels``); setting a
    ``crs`` with another definition calls :meth:`_reproject`, even when rasterio
    deems the two equivalent, so the index always carries the CRS it was asked for.
    """

    _crs: CRS
    _res: tuple[float, float]

    @property
    def crs(self) -> CRS:
        """CRS of the dataset: every bound and query is in its map units."""
        return self._crs

    @crs.setter
    def crs(self, new_crs: Any) -> None:
        new_crs = CRS.from_user_input(new_crs)
        if new_crs.to_wkt() != self._crs.to_wkt():
            self._crs = new_crs
            self._reproject()

    @property
    def res(self) -> tuple[float, float]:
        """Resolution ``(xres, yres)`` in units of :attr:`crs`."""
        return self._res

    @res.setter
    def res(self, new_res: float | tuple[float, float]) -> None:
        self._res = (float(new_res), float(new_res)) if isinstance(new_res, int | float) else tuple(map(float, new_res))

    def _reproject(self) -> None:
        """Rebuild whatever depends on the CRS (index, bounds) after :attr:`crs` changed."""
        raise NotImplementedError
