"""The ground a model was fine-tuned on, kept in its model file so that evaluation can tell held-out labels apart.

``geosscl finetune`` and ``geosscl probe --output`` record, in the model file's provenance, the
region whose labels trained the model and the region whose labels chose it (validation), in the
CRS of the training imagery. ``geosscl evaluate`` then says how many of the pixels it scores lie
there (scores over them are not of held-out ground) and, with ``--held-out``, scores only the rest.

A region of a block split over a large mosaic is the union of thousands of squares (a megabyte
of WKT for 90,000 blocks); stored as zlib-compressed WKB in base64 it takes about a sixth of that.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import shapely
from rasterio.crs import CRS
from shapely.geometry.base import BaseGeometry

from .errors import GeossclError
from .geometry import polygonal
from .modelfile import ModelInfo

#: Provenance key of the record.
KEY = "ground"
#: WGS 84 / NSIDC EASE-Grid 2.0 Global: equal-area, for areas anywhere.
EQUAL_AREA = "EPSG:6933"


@dataclass
class Ground:
    """Where a model met labels while it was made, in one CRS (polygons; either may be empty).

    Attributes:
        training: the region whose labels trained it (with those of the model it was fine-tuned from).
        validation: the region whose labels chose its weights, less ``training``.
    """

    training: BaseGeometry
    validation: BaseGeometry

    @property
    def seen(self) -> BaseGeometry:
        """Everywhere the model met labels."""
        return polygonal(shapely.union(self.training, self.validation))


def encode(geometry: BaseGeometry) -> str:
    """``geometry`` as text for a model file's JSON header (base64 of zlib-compressed WKB)."""
    return base64.b64encode(zlib.compress(shapely.to_wkb(geometry), 9)).decode("ascii")


def decode(text: Any, source: str = "model") -> BaseGeometry:
    """The geometry :func:`encode` wrote.

    Raises:
        GeossclError: naming ``source`` (the model file), where the text is not such a geometry (a file edited by
            hand, or cut short).
    """
    try:
        geometry = shapely.from_wkb(zlib.decompress(base64.b64decode(text, validate=True)))
    except (TypeError, ValueError, zlib.error, shapely.errors.GEOSException) as exc:  # binascii.Error is a ValueError
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        raise GeossclError(f"{source}: its record of the ground it was trained on is damaged ({reason}); "
                           "fine-tune it again, or remove the provenance's 'ground' entry") from None
    return geometry


def record(training: BaseGeometry, validation: BaseGeometry, earlier: Ground | None = None) -> dict[str, str]:
    """The provenance entry of a model trained on the labels of ``training`` and validated on those of
    ``validation`` (both in the model's CRS); ``earlier``: the ground of the model it was fine-tuned
    from, in that CRS, whose labels it carries too."""
    if earlier is not None:
        training = polygonal(shapely.union(training, earlier.seen))
    validation = polygonal(shapely.difference(validation, training))
    return {"training": encode(training), "validation": encode(validation)}


def model_ground(info: ModelInfo, crs: CRS | None = None, source: str = "model") -> Ground | None:
    """The ground recorded in model ``info`` (read from the file ``source``), in ``crs``
    (default: the model's own); None for a model made without labels or before it was recorded."""
    entry = info.provenance.get(KEY)
    if not entry:
        return None
    parts = [decode(_part(entry, name, source), source) for name in ("training", "validation")]
    if crs is not None and info.crs and CRS.from_wkt(info.crs) != crs:
        # Block edges are straight in the model's CRS, curves in another: vertices every 16
        # pixels of the model keep the warped edges within a fraction of a pixel.
        step = 16 * min(abs(r) for r in info.res)
        parts = [polygonal(g) for g in gpd.GeoSeries([shapely.segmentize(g, step) if not g.is_empty else g for g in parts],
                                                     crs=CRS.from_wkt(info.crs)).to_crs(crs).values]
    return Ground(*(polygonal(g) for g in parts))


def _part(entry: Any, name: str, source: str) -> Any:
    """``entry[name]``, or an error naming ``source`` where the record lacks it."""
    if not isinstance(entry, dict) or name not in entry:
        raise GeossclError(f"{source}: its record of the ground it was trained on is damaged (no {name} region); "
                           "fine-tune it again, or remove the provenance's 'ground' entry")
    return entry[name]


def summary(entry: dict[str, str], crs: str, source: str = "model") -> dict[str, Any]:
    """The record as ``geosscl info`` prints it: each region's bounds (in the model's CRS, WKT ``crs``)
    and area in km² (on an equal-area grid)."""
    out = {}
    for name in ("training", "validation"):
        geometry = decode(_part(entry, name, source), source)
        km2 = 0.0
        if not geometry.is_empty and crs:
            km2 = float(gpd.GeoSeries([geometry], crs=CRS.from_wkt(crs)).to_crs(EQUAL_AREA).area.iloc[0]) / 1e6
        out[name] = {"bounds": None if geometry.is_empty else list(geometry.bounds), "area_km2": round(km2, 4)}
    return out
