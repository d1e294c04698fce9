"""GeoTIFF mosaics as TorchGeo datasets, and pairs of overlapping views from them."""

from .files import find_rasters, open_raster
from .mosaic import Bounds, Mosaic
from .pairs import PairDataset, resample_views

__all__ = ["Bounds", "Mosaic", "PairDataset", "find_rasters", "open_raster", "resample_views"]
