"""geosscl: self-supervised segmentation networks for GeoTIFF mosaics.

Data flow (see ``docs``): :class:`geosscl.data.Mosaic` reads a mosaic,
:class:`samplers.OverlappingPairSampler` draws view pairs that overlap in map
coordinates, :class:`geosscl.data.PairDataset` reads the union of each pair once
and :func:`geosscl.data.cut_views` resamples both views from it on the training
device.
"""

from .errors import GeossclError


def __getattr__(name):
    # Mosaic and PairDataset import torch and TorchGeo's datasets (about 4 s): loaded when first used, so that
    # `geosscl --help`, `geosscl --version` and the plugin's calls that fail early do not wait for them.
    if name in ("Mosaic", "PairDataset"):
        from . import data

        return getattr(data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pretrain(imagery, out, **options):
    """Run SSCCL pretraining (see :class:`geosscl.training.PretrainConfig` for options); return the run directory."""
    from .training import PretrainConfig, pretrain as run

    if isinstance(imagery, str):
        imagery = [imagery]
    return run(PretrainConfig(imagery=[str(p) for p in imagery], out=str(out), **options))


def predict(scene, model, out, **options):
    """Segment a scene or mosaic (files, or an xarray DataArray) into a class-map COG (see
    :func:`geosscl.prediction.predict`); return its path."""
    from .prediction import predict as run

    return run(scene, model, out, **options)


def segment(scene, model, bounds=None, **options):
    """Class map of a window or a small scene in memory: ``(uint8 H×W, rasterio profile)``, or a DataArray for an xarray
    scene (see :func:`geosscl.prediction.segment`)."""
    from .prediction import segment as run

    return run(scene, model, bounds, **options)


def suggest(model, imagery, out, **options):
    """Write the tiles of ``imagery`` where ``model`` is least sure, free of the labels there are, to label next
    (a GeoPackage; see :func:`geosscl.suggestions.suggest`); return them as a GeoDataFrame."""
    from .suggestions import suggest as run

    if isinstance(imagery, str):
        imagery = [imagery]
    return run(model, imagery, out, **options)


def load_model(path):
    """``(network, info)`` of a geosscl model file; loading never runs code from the file."""
    from .modelfile import load_model as load

    return load(path)


__all__ = ["GeossclError", "Mosaic", "PairDataset", "load_model", "predict", "pretrain", "segment", "suggest"]
__version__ = "0.1.0"
