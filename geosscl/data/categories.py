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
from collections.abc import Sequence

log = logging.getLogger("geosscl")

#: GDAL's RAT field usages (``GDALRATFieldUsage``) and text type (``GDALRATFieldType``) this reader looks for.
_GFU_NAME, _GFU_MIN_MAX, _GFT_STRING = 2, 5, "2"


def sidecar(path: str | os.PathLike) -> str:
    """GDAL's PAM sidecar of ``path``: ``FILE.aux.xml``."""
    return os.fspath(path) + ".aux.xml"


def pam_enabled() -> bool:
    """Whether GDAL reads and writes PAM sidecars (its ``GDAL_PAM_ENABLED`` option, on by default)."""
    return os.environ.get("GDAL_PAM_ENABLED", "YES").strip().upper() not in ("NO", "FALSE", "OFF", "0")


def category_names(path: str | os.PathLike, band: int = 1) -> dict[int, str]:
    """Class names by value that ``path``'s band holds (empty when it names none).

    Read from the band's category names, else from its raster attribute table's name
    column (values that are whole numbers ≥ 0): in the VRT itself, its PAM sidecar, or
    ArcGIS's ``FILE.vat.dbf`` (band 1 only; GDAL reads it from version 3.11). Unnamed
    values are left out. A sidecar GDAL could not read either is ignored with a warning,
    as GDAL ignores it.
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
        names = _from_categories(element) or _from_table(element)
        if names:
            return names
    if band == 1 and os.path.isfile(path + ".vat.dbf"):
        return _from_vat_dbf(path + ".vat.dbf")
    return {}


def class_list(names: dict[int, str]) -> list[str]:
    """``names`` by value as a list of class names by id, ``"class N"`` where a value has none."""
    return [names.get(i) or f"class {i}" for i in range(max(names, default=-1) + 1)]


def _from_categories(band: ET.Element) -> dict[int, str]:
    categories = band.find("CategoryNames")
    if categories is None:
        return {}
    return _named({i: (c.text or "").strip() for i, c in enumerate(categories.findall("Category"))})


def _from_table(band: ET.Element) -> dict[int, str]:
    table = band.find("GDALRasterAttributeTable")
    if table is None:
        return {}
    fields = {}
    for field in table.findall("FieldDefn"):
        fields[int(field.get("index", len(fields)))] = ((field.findtext("Name") or "").strip(),
                                                        field.findtext("Type") == _GFT_STRING,
                                                        int(field.findtext("Usage") or 0))
    rows = ([(f.text or "").strip() for f in row.findall("F")] for row in table.findall("Row"))
    return _table_names([fields[i] for i in sorted(fields)], rows)


def _from_vat_dbf(path: str) -> dict[int, str]:
    """ArcGIS's raster attribute table of a file raster, ``FILE.vat.dbf``."""
    import pandas as pd
    import pyogrio

    try:
        frame = pyogrio.read_dataframe(path, read_geometry=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable table: GDAL would ignore it too
        log.warning("%s: not read (%s); class names are not taken from it", path, exc)
        return {}
    fields = [(str(c), pd.api.types.is_string_dtype(frame[c]) and not pd.api.types.is_numeric_dtype(frame[c]), 0)
              for c in frame.columns]
    return _table_names(fields, frame.fillna("").astype(str).itertuples(index=False))


def _table_names(fields: list[tuple[str, bool, int]], rows) -> dict[int, str]:
    """Names by value of a table of ``fields`` (name, holds text, GDAL usage). The value column is the one of
    usage GFU_MinMax, else "Value"; the name column the one of usage GFU_Name, else the first text column called
    "Name" or "Class…" (how GDAL reads ArcGIS's tables)."""
    value = next((i for i, (_, _, usage) in enumerate(fields) if usage == _GFU_MIN_MAX), None)
    if value is None:
        value = next((i for i, (name, _, _) in enumerate(fields) if name.lower() == "value"), None)
    name = next((i for i, (_, _, usage) in enumerate(fields) if usage == _GFU_NAME), None)
    if name is None:
        name = next((i for i, (n, text, _) in enumerate(fields)
                     if text and (n.lower() == "name" or n.lower().startswith("class"))), None)
    if value is None or name is None:
        return {}
    names = {}
    for cells in rows:
        try:
            number = float(cells[value])
        except (IndexError, ValueError):
            return {}
        if number < 0 or number != int(number):
            return {}  # a table of ranges or of negative values does not name class ids
        names[int(number)] = cells[name].strip() if name < len(cells) else ""
    return _named(names)


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
        root = ET.parse(out).getroot()
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
