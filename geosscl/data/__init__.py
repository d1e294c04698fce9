"""GeoTIFF mosaics as TorchGeo datasets, and pairs of overlapping views from them."""

from .dates import DatedIntersection
from .files import find_rasters, open_raster
from .labels import IGNORE_INDEX, RasterLabels, VectorLabels, open_labels
from .mosaic import Bounds, Mosaic, RawWindow
from .pairs import PairDataset, collate_pairs, cut_views

__all__ = [
    "IGNORE_INDEX", "Bounds", "DatedIntersection", "Mosaic", "PairDataset", "RasterLabels", "RawWindow", "VectorLabels",
    "collate_pairs", "cut_views", "find_rasters", "open_labels", "open_raster",
]
