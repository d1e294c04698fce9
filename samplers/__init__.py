"""TorchGeo samplers that emit pairs of views overlapping in map coordinates."""

from .pairs import OverlappingPairSampler, ViewPair

__all__ = ["OverlappingPairSampler", "ViewPair"]
