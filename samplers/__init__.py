"""TorchGeo samplers: pairs of views overlapping in map coordinates, and boxes inside a region."""

from .pairs import OverlappingPairSampler, ViewPair
from .regions import RegionSampler

__all__ = ["OverlappingPairSampler", "RegionSampler", "ViewPair"]
