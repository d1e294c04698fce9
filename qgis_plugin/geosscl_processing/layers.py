"""Layers as the files geosscl reads, and the geosscl executable of the Processing settings."""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np
from osgeo import gdal
from qgis.core import (
    QgsPalettedRasterRenderer,
    QgsProcessingException,
    QgsRasterFileWriter,
    QgsRasterPipe,
    QgsVectorFileWriter,
)

from .runner import EXECUTABLE_SETTING, label_options

#: Raster layers geosscl reads from their file directly (GDAL files); others are written to a GeoTIFF first.
DIRECT_SUFFIXES = (".tif", ".tiff", ".gtif", ".vrt", ".img", ".jp2")


def check_raster(layer, name="Input raster") -> None:
    """Refuse a raster layer geosscl cannot place on the map."""
    if layer is None or not layer.isValid():
        raise QgsProcessingException(f"{name}: not a valid raster layer")
    if not layer.crs().isValid():
        raise QgsProcessingException(f"{layer.name()}: the raster has no CRS; assign one (Layer Properties > Source) first")


def raster_file(layer, scratch, context, feedback, name="input") -> str:
    """The layer's own file when GDAL reads it as a file; otherwise a GeoTIFF copy ``name``.tif in ``scratch``."""
    check_raster(layer)
    source = layer.source().split("|")[0]
    if layer.providerType() == "gdal" and os.path.isfile(source) and source.lower().endswith(DIRECT_SUFFIXES):
        return source
    if layer.providerType() not in ("gdal",):
        raise QgsProcessingException(
            f"{layer.name()}: a {layer.providerType()} layer (a web service or database) cannot be read by geosscl "
            "directly; save it as a GeoTIFF (Export > Save As) first")
    feedback.pushInfo(f"{layer.name()}: not a plain raster file; writing a temporary GeoTIFF")
    path = os.path.join(scratch, f"{name}.tif")
    provider = layer.dataProvider()
    pipe = QgsRasterPipe()
    pipe.set(provider.clone())
    writer = QgsRasterFileWriter(path)
    writer.setOutputFormat("GTiff")
    error = writer.writeRaster(pipe, provider.xSize(), provider.ySize(), provider.extent(), provider.crs(),
                               context.transformContext())
    if error != QgsRasterFileWriter.NoError:
        raise QgsProcessingException(f"{layer.name()}: could not write it as a temporary GeoTIFF (error {error})")
    return path


def check_label_raster(layer) -> None:
    """Refuse a raster that cannot be a class raster: not one band, or no CRS."""
    check_raster(layer, "Class raster")
    if layer.bandCount() != 1:
        raise QgsProcessingException(
            f"{layer.name()}: {layer.bandCount()} bands; a class raster has one band of class ids")


def raster_nodata(layer) -> float | None:
    """The class raster's additional no-data value (Layer Properties > Transparency), if one is set.

    geosscl reads the file's own no-data value itself; this is the one a QGIS user sets
    for files that do not declare theirs (Sen1Floods11's -1, for one).
    """
    return user_nodata(layer, 1, "geosscl takes one value that means unlabelled")


def user_nodata(layer, band, why) -> float | None:
    """The one additional no-data value set on ``band`` of ``layer`` (None: none); several, or a range, are refused
    with ``why``."""
    ranges = layer.dataProvider().userNoDataValues(band)
    if not ranges:
        return None
    if len(ranges) > 1 or ranges[0].min() != ranges[0].max():
        listed = ", ".join(f"{r.min():g}" if r.min() == r.max() else f"{r.min():g}-{r.max():g}" for r in ranges)
        raise QgsProcessingException(f"{layer.name()}: additional no-data values {listed}; {why}")
    return ranges[0].min()


def imagery_nodata(layers) -> float | None:
    """The imagery's additional no-data value (Layer Properties > Transparency), for geosscl's ``--nodata``:
    None where no layer sets one.

    What a QGIS user sets for imagery whose fill (a black collar, zeros outside the swath) the
    file does not declare; QGIS then shows those pixels transparent, and geosscl must skip them
    too. One value for every band of every layer, as ``--nodata`` takes. ``--nodata`` replaces
    a file's own no-data value where QGIS's is additional, so a band that also uses its file's
    own, other value is refused: passed on, that value's pixels would be read as data.
    """
    value, first = None, None
    for layer in layers:
        for band in range(1, layer.bandCount() + 1):
            own = user_nodata(layer, band, "geosscl takes one no-data value for the imagery")
            if own is None:
                continue
            if value is not None and own != value:
                raise QgsProcessingException(
                    f"{layer.name()}: additional no-data value {own:g} where {first} has {value:g}; "
                    "geosscl takes one no-data value for every band of the imagery")
            value, first = own, f"{layer.name()} band {band}"
    if value is None:
        return None
    for layer in layers:
        provider = layer.dataProvider()
        for band in range(1, layer.bandCount() + 1):
            if not (provider.sourceHasNoDataValue(band) and provider.useSourceNoDataValue(band)):
                continue
            own = provider.sourceNoDataValue(band)
            if own != value and not math.isnan(own):  # NaN: geosscl masks non-finite values of any float file
                raise QgsProcessingException(
                    f"{layer.name()}: band {band} has its file's no-data value {own:g} and the additional {value:g}; "
                    f"geosscl takes one no-data value per band: untick the file's 'No data value' (Layer Properties > "
                    f"Transparency) to use {value:g} alone, or set no additional value")
    return value


def raster_values(path, nodata=None) -> set[float]:
    """The values of band 1 of ``path``, but its no-data value and ``nodata``, read a few MB at a time."""
    dataset = gdal.Open(path)
    band = dataset.GetRasterBand(1)
    rows = max(1, (1 << 22) // band.XSize)
    values = set()
    for y in range(0, band.YSize, rows):
        values.update(np.unique(band.ReadAsArray(0, y, band.XSize, min(rows, band.YSize - y))).tolist())
    return values - {band.GetNoDataValue(), nodata}


def raster_classes(layer, path, nodata=None) -> dict[int, dict] | None:
    """Class names and colours by id from the class raster's paletted style (None for any other style), in the
    form of a geosscl classes file, so that they travel into the model.

    Only the ids the raster holds (its file is ``path``) are kept: a raster with a colour
    table opens in QGIS with a 256-entry palette, which would make a 256-class model.
    A palette that names no class (QGIS labels a colour table's entries by value) gives
    None too: geosscl then reads the names the file carries itself (category names, a
    raster attribute table, which QGIS 3.22 does not show) and its colour table.
    """
    renderer = layer.renderer()
    if not isinstance(renderer, QgsPalettedRasterRenderer):
        return None
    present = raster_values(path, nodata)
    classes, any_named = {}, False
    for entry in renderer.classes():
        if entry.value < 0 or entry.value not in present:
            continue  # negative: never a class id (geosscl says what to do with such values)
        if entry.value != int(entry.value):
            raise QgsProcessingException(f"{layer.name()}: its style has the value {entry.value:g}; class ids are integers")
        colour = entry.color
        named = entry.label and entry.label != f"{entry.value:g}"  # QGIS labels a colour table's entries by value
        classes[int(entry.value)] = {"name": entry.label if named else f"class {int(entry.value)}",
                                     "color": [colour.red(), colour.green(), colour.blue()]}
        any_named = any_named or bool(named)
    return classes if any_named else None


def label_files(labels, scratch, context, feedback, *, with_classes=True) -> tuple[list[str], dict[str, str]]:
    """geosscl's label options for ``labels`` (a :class:`~.base.LabelLayers`), with any copies written to
    ``scratch``; and each copy's path -> the name of the layer it holds, to name the layer in geosscl's errors.

    ``with_classes``: pass the class raster's paletted style as a classes file (training; an evaluation takes the
    model's classes).
    """
    copies = {}
    area = None
    if labels.area is not None:
        area = vector_file(labels.area, scratch, "label area", context)
        copies[area] = labels.area.name()
    if labels.is_raster:
        path = raster_file(labels.layer, scratch, context, feedback, name="labels")
        copies[path] = labels.layer.name()
        nodata = raster_nodata(labels.layer)
        classes = raster_classes(labels.layer, path, nodata) if with_classes else None
        classes_file = None
        if classes:
            classes_file = os.path.join(scratch, "classes.json")
            with open(classes_file, "w") as f:
                json.dump(classes, f)
            feedback.pushInfo(f"{labels.layer.name()}: class names and colours from its paletted style: "
                              + ", ".join(f"{i} {c['name']}" for i, c in sorted(classes.items())))
        return label_options(path, label_area=area, nodata=nodata, classes=classes_file), copies
    path = vector_file(labels.layer, scratch, "labels", context)
    copies[path] = labels.layer.name()
    return label_options(path, class_column=labels.class_field, background_class=labels.background,
                         label_area=area), copies


def check_vector(layer, name) -> None:
    """Refuse a vector layer geosscl cannot place on the map, or one without features."""
    if layer is None or not layer.isValid():
        raise QgsProcessingException(f"{name}: not a valid vector layer")
    if not layer.crs().isValid():
        raise QgsProcessingException(f"{layer.name()}: the layer has no CRS; assign one (Layer Properties > Source) first")
    if layer.featureCount() == 0:
        raise QgsProcessingException(f"{layer.name()}: the layer has no features")


def vector_file(layer, scratch, name, context) -> str:
    """The layer's features (all of them, with every field and the layer's CRS) as a GeoPackage in ``scratch``.

    Always a copy: a layer may be one of several in a GeoPackage, a memory layer being
    digitised, a filtered or remote layer, none of which geosscl could open by path.
    """
    check_vector(layer, name)
    path = os.path.join(scratch, f"{name.lower().replace(' ', '_')}.gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.fileEncoding = "UTF-8"
    error, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, context.transformContext(), options)
    if error != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"{layer.name()}: could not write it as a temporary GeoPackage ({message})")
    return path


def configured_executable() -> str | None:
    """The geosscl executable set in Processing > Options > Providers > geosscl, if any."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig

        return ProcessingConfig.getSetting(EXECUTABLE_SETTING) or None
    except (ImportError, KeyError):
        return None


def named_after_layers(message: str, copies: dict[str, str]) -> str:
    """``message`` with the files' paths (keys) replaced by the names of the layers they hold, and the command
    line's words (``--every-date``, advice on unlabelled values) as a QGIS user sees them in the dialog."""
    for path, name in copies.items():
        message = message.replace(path, f"layer '{name}'")
    message = message.replace("every-date: no two files of the imagery cover the same ground",
                              "Other dates: no two of the rasters cover the same ground")
    message = bands_advice(message, None)
    return re.sub(r"pass --label-nodata (\S+)", r"set \1 as the class raster's additional no-data value "
                  "(Layer Properties > Transparency)", message)


def bands_advice(message: str, parameter: str | None) -> str:
    """The command line's advice to read bands in the model's order (``pass -b/--bidx 4,3,2,1``) in the
    dialog's words: the algorithm's ``parameter`` that picks bands, or, for one without, GDAL's tool."""
    if parameter:
        return re.sub(r"pass -b/--bidx (?:(\S+) )?to read them in its order",
                      lambda m: f"set '{parameter}' to {m.group(1)}" if m.group(1) else f"set '{parameter}'", message)
    return re.sub(r"pass -b/--bidx (?:(\S+) )?to read them in its order",
                  lambda m: "rearrange the layer's bands" + (f" as {m.group(1)}" if m.group(1) else "")
                  + " first (Processing Toolbox > GDAL > Raster conversion > Rearrange bands)", message)
