"""The versions of the libraries that decide a run's numbers, recorded with what the run makes."""

from __future__ import annotations

from importlib import metadata

import rasterio

from . import __version__

# A seed reproduces a run only with the same versions of these. Measured: the demo's 40-step pretraining with
# --seed 0 under kornia 0.9.0 and 0.9.2 differed from its first loss on; the model fine-tuned from it scored 17.6
# and 18.5 mIoU.
LIBRARIES = ("torch", "torchvision", "torchgeo", "kornia", "lightning", "segmentation-models-pytorch", "numpy",
             "rasterio")


def software() -> dict[str, str]:
    """``{library: version}`` of geosscl, :data:`LIBRARIES` (those installed) and the GDAL rasterio reads with."""
    found = {"geosscl": __version__}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    found["gdal"] = rasterio.__gdal_version__
    return found
