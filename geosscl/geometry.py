"""Geometry helpers that need shapely alone (what reads a model's metadata imports them without torch)."""

from __future__ import annotations

import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry


def polygonal(geometry: BaseGeometry) -> BaseGeometry:
    """The polygons of ``geometry``, without the lines and points that clipping leaves.

    Intersections and differences of regions that share an edge (blocks of a split,
    a holdout region of blocks) come back as geometry collections with slivers of
    zero area; TorchGeo's samplers (through ``GeoDataFrame.clip``) accept polygons only.
    """
    if isinstance(geometry, (Polygon, MultiPolygon)):
        return geometry
    parts = [p for p in shapely.get_parts(geometry) if isinstance(p, (Polygon, MultiPolygon)) and not p.is_empty]
    return shapely.union_all(parts) if parts else Polygon()
