"""The ``crs`` and ``res`` of geosscl's TorchGeo datasets."""

from __future__ import annotations

from typing import Any

from rasterio.crs import CRS


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
