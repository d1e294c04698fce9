"""Reading one layer of a vector file, named the way QGIS names it."""

from __future__ import annotations

import os

import geopandas as gpd
import pyogrio

from ..errors import GeossclError


def split_source(source: str | os.PathLike) -> tuple[str, str | int | None]:
    """``(path, layer)`` of a vector source: a path, or a QGIS layer source ``PATH|layername=NAME``
    (or ``PATH|layerid=N``), which is what QGIS shows and copies for one layer of a GeoPackage.

    Raises:
        GeossclError: for a ``|`` part other than ``layername`` or ``layerid`` (QGIS's
            ``subset=`` filters cannot be applied here).
    """
    source = os.fspath(source)
    path, *parts = source.split("|")
    layer: str | int | None = None
    for part in parts:
        key, _, value = part.partition("=")
        if key == "layername" and value:
            layer = value
        elif key == "layerid" and value.isdigit():
            layer = int(value)
        else:
            raise GeossclError(f"{source}: unknown layer option {part!r}; name a layer as {path}|layername=NAME")
    return path, layer


def read_layer(source: str | os.PathLike, layer: str | int | None = None) -> gpd.GeoDataFrame:
    """One layer of a vector file (GeoPackage, Shapefile, GeoJSON, ...), as a GeoDataFrame.

    ``source`` is a path, or ``PATH|layername=NAME`` for one layer of a multi-layer file;
    ``layer`` (a name or index) names it for a plain path.
    A file of several layers must name one: GDAL would read its first layer, which is
    rarely the one meant (label polygons next to a study area, say), and nothing would
    say so.

    Raises:
        GeossclError: if the file is missing or unreadable, holds several layers and
            none is named, or lacks the named layer.
    """
    path, named = split_source(source)
    layer = named if layer is None else layer
    if not os.path.exists(path) and "://" not in path and not path.startswith("/vsi"):
        raise GeossclError(f"{path}: no such file")
    try:
        names = [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # noqa: BLE001 - pyogrio raises many kinds
        raise GeossclError(f"{path}: not a readable vector layer ({str(exc).splitlines()[0]})") from None
    if layer is None and len(names) > 1:
        raise GeossclError(f"{path}: holds {len(names)} layers ({', '.join(names)}); name one, as "
                           f"'{path}|layername={names[0]}'")
    if isinstance(layer, str) and layer not in names:
        raise GeossclError(f"{path}: no layer {layer!r}; the file holds {', '.join(names)}")
    if isinstance(layer, int) and not 0 <= layer < len(names):
        raise GeossclError(f"{path}: no layer {layer}; the file holds {len(names)} (ids 0 to {len(names) - 1})")
    try:
        frame = gpd.read_file(path, layer=layer)
    except Exception as exc:  # noqa: BLE001 - pyogrio and fiona raise many kinds
        raise GeossclError(f"{source}: not a readable vector layer ({str(exc).splitlines()[0]})") from None
    _check_degrees(frame, source)
    return frame


def attribute_columns(frame: gpd.GeoDataFrame) -> list[str]:
    """The columns of a layer that are not its geometry, as messages list them."""
    return [str(c) for c in frame.columns if c != frame.geometry.name]


def _check_degrees(frame: gpd.GeoDataFrame, source: str | os.PathLike) -> None:
    """Refuse metres under a geographic CRS. GDAL writes a GeoJSON layer of a projected CRS it has no EPSG
    code for (the NC scene's Lambert conformal conic) with the coordinates as they were and no CRS, and reads
    it back as WGS 84: the polygons would then lie nowhere near the imagery, and every command would say
    only that they miss it."""
    if frame.crs is None or not frame.crs.is_geographic or frame.empty:
        return
    x0, y0, x1, y1 = frame.total_bounds
    if max(abs(x0), abs(x1)) > 360 or max(abs(y0), abs(y1)) > 90:
        raise GeossclError(f"{source}: coordinates up to {max(abs(x0), abs(x1)):.0f}, {max(abs(y0), abs(y1)):.0f} are "
                           f"not degrees, yet the layer's CRS ({frame.crs.to_string()}) is geographic: it was written "
                           "in a projected CRS the file could not keep (GeoJSON keeps WGS 84 or an EPSG code); "
                           "write it as GeoPackage, or give it its CRS")
