"""How geosscl outputs look when loaded: a class map paletted with the colours and class names of the file itself;
suggested tiles as outlines labelled with their rank."""

from __future__ import annotations

import json

from osgeo import gdal
from qgis.core import (QgsFillSymbol, QgsPalettedRasterRenderer, QgsPalLayerSettings, QgsSingleSymbolRenderer,
                       QgsVectorLayerSimpleLabeling)
from qgis.PyQt.QtGui import QColor


def class_table(path: str) -> list[tuple[int, QColor, str]]:
    """``(value, colour, name)`` of every class, from the map's colour table and its ``class_names`` and
    ``class_values`` tags (a model of a product's codes, 10, 20, …, writes those; without the tag the
    values are the class ids)."""
    dataset = gdal.Open(path)
    if dataset is None:
        return []
    names = json.loads(dataset.GetMetadataItem("class_names") or "[]")
    values = json.loads(dataset.GetMetadataItem("class_values") or "null") or range(len(names))
    colours = dataset.GetRasterBand(1).GetColorTable()
    table = []
    for value, name in zip(values, names):
        entry = colours.GetColorEntry(value) if colours is not None and value < colours.GetCount() else (128, 128, 128, 255)
        table.append((value, QColor(*entry[:3]), name))
    return table


def style_class_map(layer) -> bool:
    """Give ``layer`` a paletted renderer with class names; False if the file carries none."""
    table = class_table(layer.source())
    if not table:
        return False
    classes = [QgsPalettedRasterRenderer.Class(value, colour, name) for value, colour, name in table]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    layer.triggerRepaint()
    return True


def style_tiles(layer) -> None:
    """Give suggested tiles outlines without fill, so the imagery to label shows through, labelled by rank."""
    symbol = QgsFillSymbol.createSimple({"style": "no", "outline_color": "255,0,255", "outline_width": "0.8"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    label = QgsPalLayerSettings()
    label.fieldName = "rank"
    label.enabled = True
    layer.setLabeling(QgsVectorLayerSimpleLabeling(label))
    layer.setLabelsEnabled(True)
    layer.triggerRepaint()
