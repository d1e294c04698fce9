"""TorchGeo samplers: pairs of views overlapping in map coordinates, and boxes inside a region."""

from .pairs import OverlappingPairSampler, ViewPair
from .regions import RegionGridSampler, RegionSampler

__all__ = ["OverlappingPairSampler", "RegionGridSampler", "RegionSampler", "ViewPair"]
