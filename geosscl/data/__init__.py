"""GeoTIFF mosaics as TorchGeo datasets, and pairs of overlapping views from them."""

from .files import find_rasters, open_raster
from .labels import IGNORE_INDEX, RasterLabels, VectorLabels, open_labels
from .mosaic import Bounds, Mosaic
from .pairs import PairDataset, resample_views

__all__ = [
    "IGNORE_INDEX", "Bounds", "Mosaic", "PairDataset", "RasterLabels", "VectorLabels",
    "find_rasters", "open_labels", "open_raster", "resample_views",
]
