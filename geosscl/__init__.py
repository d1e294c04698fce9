"""geosscl: self-supervised segmentation networks for GeoTIFF mosaics.

Data flow (see ``docs``): :class:`geosscl.data.Mosaic` reads a mosaic,
:class:`samplers.OverlappingPairSampler` draws view pairs that overlap in map
coordinates and :class:`geosscl.data.PairDataset` turns each pair into two
image tensors.
"""

from .data import Mosaic, PairDataset
from .errors import GeossclError

__all__ = ["GeossclError", "Mosaic", "PairDataset"]
__version__ = "0.1.0"
