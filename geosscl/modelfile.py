"""The geosscl model file: weights plus everything needed to use them, in one safetensors file.

safetensors holds tensors and a string→string header, nothing executable, so opening
a model file someone handed you cannot run code. The header key ``geosscl`` holds
JSON metadata: architecture, bands and their normalisation, classes and colours,
ground sampling distance, tiling, provenance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rasterio.crs import CRS
from safetensors import SafetensorError, safe_open

from .errors import GeossclError
from .output import atomic_output

if TYPE_CHECKING:
    from .models import SegmentationNetwork

# torch, the networks and TorchGeo's datasets (4–8 s to import) are imported where weights are read or written:
# reading a model's metadata (`geosscl info`, checks before a command's work) needs none of them.

FORMAT = "geosscl-model/1"

#: Colours for classes without one: a qualitative palette (RGB 0-255).
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]


@dataclass
class ModelInfo:
    """What a model needs besides its weights.

    Attributes:
        arch: ``"unet"``, ``"deeplabv3plus"`` or ``"hypercolumn"`` (a linear classifier
            of frozen encoder stages, written by ``geosscl probe --output``).
        encoder: encoder name.
        bands: 1-based band indexes of the imagery, in input order.
        band_names: what each of those bands is (``B4``, or the file's band description), as
            the training imagery named them; None items where it did not, None for files
            written before names were kept. Imagery whose names put these bands elsewhere is
            refused (:func:`~geosscl.data.bandnames.check_band_names`).
        band_mean: per-band mean used to normalise inputs.
        band_std: per-band standard deviation.
        class_names: name of each class id, ``num_classes`` of them.
        class_colors: RGB (0-255) of each class id.
        class_values: the value of each class id in the class rasters the model was trained
            on and in the class maps it writes (ESA WorldCover's 10, 20, … 100; NLCD's 11 …
            95), so that a product's codes need no class of their own for every value
            between them; None (files written before it was kept, too): the ids 0, 1, …
            themselves. See :attr:`map_values`.
        background_class: the class of the pixels outside every polygon of the training labels
            (``--background-class``: the ground between buildings of a footprint layer), one of
            ``class_names``; None where the labels had none. Class polygons leave it out.
        res: pixel size ``(xres, yres)`` of the training imagery, map units.
        crs: CRS of the training imagery (WKT), for reference.
        gsd: ground sampling distance of the training imagery, metres (a pixel's mean
            side; for a geographic CRS, at the imagery's centre latitude). Files written
            before it was kept have None: :meth:`training_gsd` falls back on ``res``.
        nodata: the value of the imagery meaning "no data" given over its files' own
            (``--nodata``: a fill the files do not declare); prediction and evaluation
            apply it too. None: each file's own.
        decoder_channels: U-Net decoder widths (None: smp's default).
        stages: the encoder stages a hypercolumn classifier reads (None for other architectures).
        tile_size: tile side for prediction, pixels (``geosscl finetune`` writes its
            crop size: what the network was trained and validated on).
        tile_overlap: overlap of prediction tiles, pixels.
        provenance: how the model was made (init, data, settings, metrics).
    """

    arch: str
    encoder: str
    bands: list[int]
    band_mean: list[float]
    band_std: list[float]
    class_names: list[str]
    class_colors: list[list[int]]
    res: list[float]
    class_values: list[int] | None = None
    background_class: str | None = None
    band_names: list[str | None] | None = None
    crs: str = ""
    gsd: float | None = None
    nodata: float | None = None
    decoder_channels: list[int] | None = None
    stages: list[int] | None = None
    tile_size: int = 512
    tile_overlap: int = 64
    provenance: dict[str, Any] = field(default_factory=dict)

    def training_gsd(self) -> float | None:
        """Ground sampling distance of the training imagery, metres (None when unknown)."""
        if self.gsd is not None:
            return self.gsd
        if not self.crs:
            return None
        crs = CRS.from_wkt(self.crs)
        if crs.is_geographic:
            return None  # degrees, at a latitude the file does not say
        from .data.mosaic import ground_sampling_distance

        return ground_sampling_distance(crs, tuple(self.res), (0.0, 0.0, 0.0, 0.0))

    @property
    def in_channels(self) -> int:
        """Number of input bands."""
        return len(self.bands)

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.class_names)

    @property
    def map_values(self) -> list[int]:
        """The value of each class id in class rasters and maps (``class_values``, or the ids)."""
        return list(self.class_values) if self.class_values is not None else list(range(self.num_classes))

    @property
    def class_column(self) -> str | None:
        """The vector layer column the model's labels were read from (None: class rasters, or not recorded)."""
        column = self.provenance.get("class_column")
        settings = self.provenance.get("settings")
        if column is None and isinstance(settings, dict):  # files written before the column was recorded
            column = settings.get("class_column")
        return column if isinstance(column, str) and column else None

    def by_value(self) -> tuple[dict[int, str], dict[int, list[int]]]:
        """Class names and colours keyed by their value in class maps."""
        values = self.map_values
        return dict(zip(values, self.class_names)), dict(zip(values, self.class_colors))


def class_values(values: Iterable[int]) -> list[int] | None:
    """``values`` (the label values of the classes, in id order) as :attr:`ModelInfo.class_values`:
    None where they are the ids 0, 1, … themselves."""
    values = [int(v) for v in values]
    return None if values == list(range(len(values))) else values


def default_colors(count: int) -> list[list[int]]:
    """``count`` distinct colours from :data:`PALETTE` (repeating when exhausted)."""
    return [list(PALETTE[i % len(PALETTE)]) for i in range(count)]


def save_model(
    path: str | os.PathLike, network: SegmentationNetwork, info: ModelInfo, overwrite: bool = False,
    half: bool = False,
) -> None:
    """Write ``network``'s weights and ``info`` to ``path`` (atomically).

    ``half`` stores floating-point weights as float16 (half the file; loading casts
    them back to float32), for models that travel, like the bundled one.

    Raises:
        GeossclError: if the path exists without ``overwrite``, or its folder is unusable.
    """
    from safetensors.torch import save_file

    header = {"format": FORMAT, **asdict(info)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    with atomic_output(path, overwrite) as tmp:
        save_file(tensors, tmp, metadata={"geosscl": json.dumps(header)})


def read_info(path: str | os.PathLike) -> ModelInfo:
    """The metadata of a model file, without loading its weights.

    Raises:
        GeossclError: if the file is missing, not safetensors, or not a geosscl model.
    """
    path = os.fspath(path)
    if path.lower().endswith(".onnx"):
        from .onnx import read_onnx_info

        return read_onnx_info(path)
    if not os.path.isfile(path):
        raise GeossclError(f"{path}: no such model file")
    try:
        with safe_open(path, framework="numpy") as f:
            header = (f.metadata() or {}).get("geosscl")
    except (SafetensorError, OSError, ValueError) as exc:
        raise GeossclError(f"{path}: not a geosscl model file ({str(exc).splitlines()[0][:100]})") from None
    if header is None:
        raise GeossclError(f"{path}: a safetensors file, but not a geosscl model (no geosscl metadata)")
    try:
        data = json.loads(header)
        found = data.pop("format")
        if found != FORMAT:
            raise GeossclError(f"{path}: model format {found!r} is not {FORMAT}")
        info = ModelInfo(**data)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise GeossclError(f"{path}: corrupt geosscl metadata ({exc})") from None
    return checked(info, path)


def checked(info: ModelInfo, path: str) -> ModelInfo:
    """``info``, read from ``path``, once its fields agree with one another.

    Raises:
        GeossclError: if its background class is not one of its classes.
    """
    if info.background_class is not None and info.background_class not in info.class_names:
        raise GeossclError(f"{path}: corrupt geosscl metadata (background class {info.background_class!r} is not "
                           f"one of its classes, {', '.join(info.class_names)})")
    return info


def load_model(path: str | os.PathLike) -> tuple[SegmentationNetwork, ModelInfo]:
    """Rebuild the network of a model file, weights loaded, in eval mode.

    A ``.onnx`` file exported by ``geosscl export`` is run by onnxruntime instead.

    Raises:
        GeossclError: if the file is not a geosscl model or its weights do not fit it.
    """
    if os.fspath(path).lower().endswith(".onnx"):
        from .onnx import load_onnx

        return load_onnx(path)  # type: ignore[return-value]
    from safetensors.torch import load_file

    from .models import SegmentationNetwork

    info = read_info(path)
    network = SegmentationNetwork(info.in_channels, info.num_classes, arch=info.arch, encoder=info.encoder,
                                  decoder_channels=info.decoder_channels, stages=info.stages)
    try:
        state = load_file(os.fspath(path))
        network.load_state_dict(state)
    except (SafetensorError, RuntimeError) as exc:
        raise GeossclError(f"{os.fspath(path)}: weights do not match the model's metadata ({str(exc).splitlines()[0][:160]})") from None
    return network.eval(), info
