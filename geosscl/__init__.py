"""geosscl: self-supervised segmentation networks for GeoTIFF mosaics.

Data flow (see ``docs``): :class:`geosscl.data.Mosaic` reads a mosaic,
:class:`samplers.OverlappingPairSampler` draws view pairs that overlap in map
coordinates and :class:`geosscl.data.PairDataset` turns each pair into two
image tensors.
"""

from .data import Mosaic, PairDataset
from .errors import GeossclError


def pretrain(imagery, out, **options):
    """Run SSCCL pretraining (see :class:`geosscl.training.PretrainConfig` for options); return the run directory."""
    from .training import PretrainConfig, pretrain as run

    if isinstance(imagery, str):
        imagery = [imagery]
    return run(PretrainConfig(imagery=[str(p) for p in imagery], out=str(out), **options))


__all__ = ["GeossclError", "Mosaic", "PairDataset", "pretrain"]
__version__ = "0.1.0"
