"""Imagery and labels read on the date a sampler chose."""

from __future__ import annotations

from typing import Any

from torchgeo.datasets import IntersectionDataset
from torchgeo.datasets.utils import GeoSlice



class DatedIntersection(IntersectionDataset):
    """``imagery & labels`` that also takes ``(query, file)`` items: the imagery read on that file's date.

    :class:`samplers.DateSampler` yields such items, to train and validate on every
    date of a place with one set of labels; a plain ``(x, y, t)`` query reads as
    TorchGeo's :class:`~torchgeo.datasets.IntersectionDataset` does (the first date
    in path order wins).

    Built as TorchGeo's: ``DatedIntersection(mosaic, labels, transforms=...)``, the
    :class:`~geosscl.data.Mosaic` first (its dates are its places that overlap).
    """

    def __getitem__(self, item: GeoSlice | tuple[GeoSlice, str]) -> dict[str, Any]:
        """``{"image": float32 C×H×W (NaN = nodata), "mask": int64 H×W, "crs", "bounds"}``."""
        if not (len(item) == 2 and isinstance(item[1], str)):
            return super().__getitem__(item)
        query, file = item
        imagery, labels = self.datasets
        sample = self.collate_fn([imagery.sample(query, first=file), labels[query]])
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample
