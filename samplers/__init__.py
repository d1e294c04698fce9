"""TorchGeo samplers: pairs of views overlapping in map coordinates, boxes inside a region, and the date to read a box on."""

from .dates import DatedQuery, DateSampler
from .pairs import OverlappingPairSampler, ViewPair
from .regions import RegionGridSampler, RegionSampler

__all__ = ["DateSampler", "DatedQuery", "OverlappingPairSampler", "RegionGridSampler", "RegionSampler", "ViewPair"]
