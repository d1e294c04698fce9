"""Class names a class raster carries itself: GDAL category names and raster attribute tables.

A land-cover raster made in a GIS names its classes in one of two GDAL structures: a
band's *category names* (one name per value, 0 first; QGIS shows them as the class
labels of a paletted raster) or a *raster attribute table* (RAT: one row per value,
with a name column). GDAL keeps both outside a GeoTIFF, in its PAM sidecar
``FILE.aux.xml``; a VRT keeps them in its own XML; ArcGIS keeps a file raster's table in
``FILE.vat.dbf``. rasterio reads a band's colour table but none of these, hence this
small reader and writer of GDAL's documented XML (the dBASE table is read with pyogrio).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..output import sidecar

log = logging.getLogger("geosscl")

#: GDAL's RAT field usages (``GDALRATFieldUsage``) and text type (``GDALRATFieldType``) this reader looks for.
_GFU_GENERIC, _GFU_NAME, _GFU_MIN_MAX, _GFT_STRING = 0, 2, 5, "2"
_COLOR_USAGE = {"RED": 6, "GREEN": 7, "BLUE": 8}


def pam_enabled() -> bool:
    """Whether GDAL reads and writes PAM sidecars (its ``GDAL_PAM_ENABLED`` option, on by default)."""
    return os.environ.get("GDAL_PAM_ENABLED", "YES").strip().upper() not in ("NO", "FALSE", "OFF", "0")


@dataclass
class Legend:
    """What a class raster's band says of its values: names and colours (RGB 0-255) by value."""

    names: dict[int, str] = field(default_factory=dict)
    colors: dict[int, list[int]] = field(default_factory=dict)


def legend(path: str | os.PathLike, band: int = 1) -> Legend:
    """The class names and colours by value that ``path``'s band holds (empty where it has none).

    Names come from the band's category names, else from its raster attribute table's name
    column; colours from the table's red, green and blue columns (values that are whole
    numbers ≥ 0). Read from the VRT itself, its PAM sidecar, or ArcGIS's ``FILE.vat.dbf``
    (band 1 only; GDAL reads it from version 3.11). Unnamed values are left out. A sidecar
    GDAL could not read either is ignored with a warning, as GDAL ignores it. A band's
    colour table is rasterio's to read.
    """
    path = os.fspath(path)
    sources = [sidecar(path)] if pam_enabled() else []
    if path.lower().endswith(".vrt"):
        sources.insert(0, path)
    for source in sources:
        if not os.path.isfile(source):
            continue
        try:
            root = ET.parse(source).getroot()
        except (ET.ParseError, OSError) as exc:
            log.warning("%s: not read (%s); class names are not taken from it", source, exc)
            continue
        element = root.find(f"./{'VRT' if root.tag == 'VRTDataset' else 'PAM'}RasterBand[@band='{band}']")
        if element is None:
            continue
        try:
            found = _from_table(element)
        except ValueError as exc:  # a field's index or usage that is not a number
            log.warning("%s: its attribute table not read (%s)", source, exc)
            found = Legend()
        found.names = _from_categories(element) or found.names
        if found.names or found.colors:
            return found
    if band == 1 and os.path.isfile(path + ".vat.dbf"):
        return _from_vat_dbf(path + ".vat.dbf")
    return Legend()


def category_names(path: str | os.PathLike, band: int = 1) -> dict[int, str]:
    """Class names by value that ``path``'s band holds (:func:`legend`'s names)."""
    return legend(path, band).names


def _from_categories(band: ET.Element) -> dict[int, str]:
    categories = band.find("CategoryNames")
    if categories is None:
        return {}
    return _named({i: (c.text or "").strip() for i, c in enumerate(categories.findall("Category"))})


def _from_table(band: ET.Element) -> Legend:
    table = band.find("GDALRasterAttributeTable")
    if table is None:
        return Legend()
    fields = {}
    for column in table.findall("FieldDefn"):
        fields[int(column.get("index", len(fields)))] = _Field((column.findtext("Name") or "").strip(),
                                                              column.findtext("Type") == _GFT_STRING,
                                                              int(column.findtext("Usage") or 0))
    rows = ([(f.text or "").strip() for f in row.findall("F")] for row in table.findall("Row"))
    return _table_legend([fields[i] for i in sorted(fields)], rows)


def _from_vat_dbf(path: str) -> Legend:
    """ArcGIS's raster attribute table of a file raster, ``FILE.vat.dbf``, with the column roles GDAL gives it:
    VALUE the values, a text column called NAME or CLASS… the names, real RED, GREEN, BLUE columns (0-1) the
    colours."""
    import pandas as pd
    import pyogrio

    try:
        frame = pyogrio.read_dataframe(path, read_geometry=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable table: GDAL would ignore it too
        log.warning("%s: not read (%s); class names are not taken from it", path, exc)
        return Legend()
    fields = []
    for column in frame.columns:
        name, values = str(column), frame[column]
        text = pd.api.types.is_string_dtype(values) and not pd.api.types.is_numeric_dtype(values)
        usage, scale = _GFU_GENERIC, 1.0
        if name.upper() == "VALUE":
            usage = _GFU_MIN_MAX
        elif text and (name.upper() == "NAME" or name.upper().startswith("CLASS")):
            usage = _GFU_NAME
        elif name.upper() in _COLOR_USAGE and pd.api.types.is_float_dtype(values):
            usage, scale = _COLOR_USAGE[name.upper()], 255.0
        fields.append(_Field(name, text, usage, scale))
    return _table_legend(fields, frame.astype(object).fillna("").astype(str).itertuples(index=False))


@dataclass
class _Field:
    name: str
    text: bool
    usage: int
    scale: float = 1.0  #: of a colour column: its values times this are 0-255


def _table_legend(fields: list[_Field], rows: Iterable[Sequence[str]]) -> Legend:
    """Names and colours by value of a table of ``fields``. The value column is the one of usage GFU_MinMax,
    else "Value"; the name column the one of usage GFU_Name, else the first text column called "Name" or
    "Class…" (how GDAL reads ArcGIS's tables); the colours those of usage GFU_Red, GFU_Green, GFU_Blue."""
    value = next((i for i, f in enumerate(fields) if f.usage == _GFU_MIN_MAX), None)
    if value is None:
        value = next((i for i, f in enumerate(fields) if f.name.lower() == "value"), None)
    name = next((i for i, f in enumerate(fields) if f.usage == _GFU_NAME), None)
    if name is None:
        name = next((i for i, f in enumerate(fields)
                     if f.text and (f.name.lower() == "name" or f.name.lower().startswith("class"))), None)
    rgb = [next((i for i, f in enumerate(fields) if f.usage == usage), None) for usage in _COLOR_USAGE.values()]
    if value is None:
        return Legend()
    found = Legend()
    for cells in rows:
        try:
            number = float(cells[value])
        except (IndexError, ValueError):
            return Legend()
        if number < 0 or number != int(number):
            return Legend()  # a table of ranges or of negative values does not name class ids
        if name is not None and name < len(cells) and cells[name].strip():
            found.names[int(number)] = cells[name].strip()
        try:
            if None not in rgb:
                found.colors[int(number)] = [min(255, max(0, int(float(cells[i]) * fields[i].scale + 0.5))) for i in rgb]
        except (IndexError, ValueError):
            pass  # a row without a colour
    return found


def _named(names: dict[int, str]) -> dict[int, str]:
    return {i: n for i, n in names.items() if n}


def write_category_names(path: str | os.PathLike, names: Sequence[str], band: int = 1) -> str | None:
    """Write ``names`` as the category names of ``path``'s band into its PAM sidecar (made, or
    updated keeping what GDAL put there). GDAL, and so QGIS's paletted renderer and
    ``gdalinfo``, read them from there. Nothing is written where ``GDAL_PAM_ENABLED`` is
    off, as GDAL would write nothing.

    Returns:
        the sidecar's path, or None.
    """
    if not pam_enabled():
        return None
    out = sidecar(path)
    root = ET.Element("PAMDataset")
    if os.path.isfile(out):
        try:
            root = ET.parse(out).getroot()
        except ET.ParseError:
            pass  # GDAL could not read it either: replaced
    element = root.find(f"./PAMRasterBand[@band='{band}']")
    if element is None:
        element = ET.SubElement(root, "PAMRasterBand", band=str(band))
    for old in element.findall("CategoryNames"):
        element.remove(old)
    categories = ET.Element("CategoryNames")
    element.insert(0, categories)
    for name in names:
        ET.SubElement(categories, "Category").text = name
    ET.indent(root)
    ET.ElementTree(root).write(out, encoding="UTF-8", xml_declaration=False)
    return out
