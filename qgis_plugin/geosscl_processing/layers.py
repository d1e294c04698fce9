"""Layers as the files geosscl reads, and the geosscl executable of the Processing settings."""

from __future__ import annotations

import os

from qgis.core import QgsProcessingException, QgsRasterFileWriter, QgsRasterPipe, QgsVectorFileWriter

from .runner import EXECUTABLE_SETTING

#: Raster layers geosscl reads from their file directly (GDAL files); others are written to a GeoTIFF first.
DIRECT_SUFFIXES = (".tif", ".tiff", ".gtif", ".vrt", ".img", ".jp2")


def check_raster(layer) -> None:
    """Refuse a raster layer geosscl cannot place on the map."""
    if layer is None or not layer.isValid():
        raise QgsProcessingException("Input raster: not a valid raster layer")
    if not layer.crs().isValid():
        raise QgsProcessingException(f"{layer.name()}: the raster has no CRS; assign one (Layer Properties > Source) first")


def raster_file(layer, scratch, context, feedback) -> str:
    """The layer's own file when GDAL reads it as a file; otherwise a GeoTIFF copy in ``scratch``."""
    check_raster(layer)
    source = layer.source().split("|")[0]
    if layer.providerType() == "gdal" and os.path.isfile(source) and source.lower().endswith(DIRECT_SUFFIXES):
        return source
    if layer.providerType() not in ("gdal",):
        raise QgsProcessingException(
            f"{layer.name()}: a {layer.providerType()} layer (a web service or database) cannot be read by geosscl "
            "directly; save it as a GeoTIFF (Export > Save As) first")
    feedback.pushInfo(f"{layer.name()}: not a plain raster file; writing a temporary GeoTIFF")
    path = os.path.join(scratch, "input.tif")
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
    """``message`` with the temporary copies' paths (keys) replaced by the names of the layers they hold."""
    for path, name in copies.items():
        message = message.replace(path, f"layer '{name}'")
    return message
