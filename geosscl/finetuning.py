"""``geosscl.finetune``: a segmenter from imagery, a few labels and (optionally) an SSCCL run.

Labels are split by region, never by pixel: a validation region (given, or blocks
drawn with the seed) and the training region share no pixel, and ``label_fraction``
keeps whole blocks of the training region. Labels outside a split's region are
ignored there (the imagery around them is still seen as context).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning.pytorch as pl
import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry
import torch
import yaml
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader
from torchgeo.datasets import IntersectionDataset, stack_samples

from .data import DatedIntersection, Mosaic, RasterLabels, VectorLabels, open_labels
from .data.bandnames import check_band_names
from .data.labels import nodata_hint
from .data.stats import band_statistics, warn_other_units
from .errors import GeossclError, RunStopped
from .ground import KEY as GROUND, Ground, model_ground, record
from .modelfile import ModelInfo, class_values, default_colors, load_model, read_info, save_model
from .output import check_output, check_suffix
from .prediction import NODATA_CLASS
from .splits import (KeepRegion, block_classes, block_split, class_pixels, label_extent, label_fraction, near_labels,
                     polygonal, read_region)
from .versions import software

log = logging.getLogger("geosscl")


@dataclass
class FinetuneConfig:
    """Settings of a fine-tuning run; every field is also a ``geosscl finetune`` option."""

    imagery: list[str]
    labels: list[str]
    out: str = ""  #: the model file (not needed to probe)
    classes: str | None = None
    class_column: str | None = None
    #: value of the class rasters meaning "unlabelled" where their files do not declare it as nodata
    label_nodata: float | None = None
    #: class of a vector layer's pixels outside every polygon, inside the imagery (footprint layers);
    #: None: an ``init`` model's background class, where it has one; ``""``: none, those pixels are unlabelled
    background_class: str | None = None
    #: polygons where the labels are complete; outside them no pixel is labelled (default: everywhere)
    label_area: str | None = None
    #: train (and validate) on every date of a place, with the same labels: labels true on
    #: all of them (stable land cover). Default: where files overlap, the first one is read.
    every_date: bool = False
    init: str = "random"
    label_fraction: float = 1.0
    #: share of the validation region whose labels are used (whole blocks, as
    #: label_fraction draws them): to simulate few labels honestly, validation
    #: should not hold more labels than a user with that few would have.
    val_label_fraction: float = 1.0
    freeze_encoder: bool = False
    linear_probe: bool = False
    crop_size: int = 128
    batch_size: int = 16
    max_steps: int | None = 500
    max_time: float | None = None
    val_region: str | None = None
    holdout_region: str | None = None
    val_fraction: float = 0.2
    block_size: int | None = None
    bands: list[int] | None = None
    #: value of the imagery meaning "no data", over what its files declare (default: ``init``'s, else the files')
    nodata: float | None = None
    arch: str = "unet"
    encoder: str = "resnet18"
    decoder_channels: list[int] | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    pretrained_lr_factor: float = 1.0
    warmup_steps: int = 0
    #: "auto" (median-frequency balancing of the training labels' classes), one weight per class, or None (all 1)
    class_weights: str | list[float] | None = None
    accelerator: str = "auto"
    devices: int | str = "auto"
    #: "32", or "bf16": forward passes under bfloat16 autocast (float32 weights, losses and model file)
    precision: str = "32"
    num_workers: int = 2
    seed: int = 0
    overwrite: bool = False
    quiet: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)

    def inputs(self) -> list[str | None]:
        """Everything the run reads (imagery, labels, classes, regions, the model it starts from)."""
        return [*self.imagery, *self.labels, self.classes, self.label_area, self.init, self.val_region,
                self.holdout_region]


@dataclass
class Classes:
    """The classes of a model: names, colours and the value of each in class rasters and maps."""

    names: list[str]
    values: list[int]
    colors: list[list[int]] | None = None  #: RGB 0-255; None: not given


def read_classes(path: str) -> Classes:
    """Class names, and optional colours, from a YAML/JSON classes file.

    Accepted forms: a list of names (ids 0, 1, …); or a mapping ``value: name`` or
    ``value: {name: …, color: [r, g, b]}``, whose classes are those listed, each with
    its value in the class rasters (ESA WorldCover's ``10: Tree cover`` … ``100: Moss
    and lichen`` make 11 classes, not 101).
    """
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise GeossclError(f"{path}: cannot read classes file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise GeossclError(f"{path}: not valid YAML/JSON ({str(exc).splitlines()[0]})") from None
    if isinstance(data, list) and data:
        return Classes([str(n) for n in data], list(range(len(data))))
    if isinstance(data, dict) and data:
        try:
            entries = {int(k): v for k, v in data.items()}
        except ValueError:
            raise GeossclError(f"{path}: class values must be integers") from None
        values = sorted(entries)
        if values[0] < 0:
            raise GeossclError(f"{path}: class values must be non-negative")
        names, colors = [], default_colors(len(values))
        for i, value in enumerate(values):
            entry = entries[value]
            if isinstance(entry, dict):
                names.append(str(entry.get("name", f"class {value}")))
                if "color" in entry:
                    colors[i] = [int(c) for c in entry["color"]][:3]
            else:
                names.append(str(entry))
        return Classes(names, values, colors)
    raise GeossclError(f"{path}: expected a list of class names or a mapping of value to name")


@dataclass
class Setup:
    """What a fine-tuning run (or a probe of one) reads and where it may use labels."""

    mosaic: Mosaic
    labels: RasterLabels | VectorLabels
    checkpoint: dict[str, Any] | None
    arch: str
    encoder: str
    decoder_channels: list[int] | None
    band_mean: list[float]
    band_std: list[float]
    class_names: list[str]
    class_colors: list[list[int]]
    num_classes: int
    area: BaseGeometry  #: the labelled imagery
    labelled: BaseGeometry  #: the training blocks whose labels are used
    val_region: BaseGeometry
    class_values: list[int] | None = None  #: the value of each class in the labels (:attr:`ModelInfo.class_values`)
    class_weights: list[float] | None = None  #: of the cross-entropy, by class id
    #: A model file's weights to start from (``init`` a ``.safetensors``), and whether its
    #: segmentation head is used (the classes are its own).
    init_model: InitModel | None = None
    #: What each band is (:attr:`ModelInfo.band_names`): the imagery's names, else those of ``init``.
    band_names: list[str | None] | None = None
    #: The vector labels' class outside their polygons (:attr:`ModelInfo.background_class`).
    background_class: str | None = None


@dataclass
class InitModel:
    """A geosscl model file as the start of a fine-tuning run."""

    state: dict[str, torch.Tensor]  #: the network's state_dict
    info: ModelInfo
    keep_head: bool = True
    ground: Ground | None = None  #: where its labels were, in the imagery's CRS (carried into the new model's record)


def open_init_model(path: str, mosaic: Mosaic, chosen: bool = False) -> InitModel:
    """A fine-tuned model file to fine-tune further (more labels, another place).

    Raises:
        GeossclError: if it is not a geosscl model file, is a classifier of frozen features
            (``geosscl probe -o``: not trained by gradient steps) or an ONNX export, or reads
            another number of bands, or bands ``mosaic`` names in another order (unless the
            bands were ``chosen`` with ``-b``: then a warning).
    """
    from .models.network import ARCHITECTURES

    if path.lower().endswith(".onnx"):
        raise GeossclError(f"{path}: an ONNX export cannot be fine-tuned; give the .safetensors model it was exported from")
    network, info = load_model(path)
    if info.arch not in ARCHITECTURES:
        raise GeossclError(f"{path}: a {info.arch} model (a classifier of frozen encoder features, made by geosscl probe) "
                           "cannot be fine-tuned; give a model made by geosscl finetune, or the pretraining run's last.ckpt")
    # Names first: imagery holding the model's bands among others, or in another order, is told the -b that reads them.
    check_band_names(info.band_names, mosaic.all_band_names, mosaic.band_indexes, mosaic.source, path, chosen)
    if info.in_channels != mosaic.num_bands:
        raise GeossclError(f"{path}: the model reads {info.in_channels} bands, the imagery has {mosaic.num_bands}")
    # Read now, not when the new model is written: a damaged record fails before the training does.
    ground = model_ground(info, mosaic.crs, path)
    return InitModel(network.state_dict(), info, ground=ground)  # the network is dropped: its tensors are the only copy


def prepare(config: FinetuneConfig) -> Setup:
    """Open the imagery, labels and checkpoint of ``config`` and draw its regions.

    Raises:
        GeossclError: for bad input (nothing is written).
    """
    from .training import load_checkpoint

    is_model = config.init.lower().endswith((".safetensors", ".onnx"))
    checkpoint = load_checkpoint(config.init) if not is_model and config.init != "random" else None
    # The imagery is read as init was trained on it: with its nodata value, unless --nodata gives one.
    inherited = (read_info(config.init).nodata if config.init.lower().endswith(".safetensors")  # ONNX: refused below
                 else checkpoint["hyper_parameters"].get("nodata") if checkpoint else None)
    mosaic = Mosaic(config.imagery, bands=config.bands, nodata=inherited if config.nodata is None else config.nodata)
    if config.every_date:
        mosaic.require_dates("every-date")
    arch, encoder, decoder, init_model = config.arch, config.encoder, config.decoder_channels, None
    if is_model:
        init_model = open_init_model(config.init, mosaic, chosen=config.bands is not None)
        info = init_model.info
        arch, encoder, decoder = info.arch, info.encoder, info.decoder_channels
        mean, std = info.band_mean, info.band_std  # what the network was trained on
        warn_other_units(mosaic, mean, mosaic.source, f"the training imagery of {config.init}")
        band_names = mosaic.known_band_names or info.band_names  # names travel on to the model made from it
    elif checkpoint is not None:
        hp = checkpoint["hyper_parameters"]
        check_band_names(hp.get("band_names"), mosaic.all_band_names, mosaic.band_indexes, mosaic.source,
                         config.init, chosen=config.bands is not None)
        if hp["in_channels"] != mosaic.num_bands:
            raise GeossclError(f"{config.init}: checkpoint has {hp['in_channels']} bands, the imagery {mosaic.num_bands}")
        arch, encoder, decoder = hp["arch"], hp["encoder"], hp.get("decoder_channels")
        mean, std = hp["band_mean"], hp["band_std"]
        warn_other_units(mosaic, mean, mosaic.source, f"the pretraining imagery of {config.init}")
        band_names = mosaic.known_band_names or hp.get("band_names")
    else:
        mean, std = band_statistics(mosaic)
        band_names = mosaic.known_band_names
    classes = read_classes(config.classes) if config.classes else None
    source = f"of {config.classes}"
    if classes is None and init_model is not None:
        # Further fine-tuning keeps the model's classes unless a classes file gives others.
        info = init_model.info
        classes = Classes(list(info.class_names), info.map_values, info.class_colors)
        source = f"of {config.init}"
    extent, limit = label_extent(mosaic, config.label_area)
    labels, label_ids = open_labels(config.labels, config.class_column, classes.names if classes else None,
                                    nodata=config.label_nodata, background=config.background_class, extent=extent,
                                    values=classes.values if classes else None,
                                    # The model's classes are kept, and with them its background.
                                    default_background=init_model.info.background_class
                                    if init_model is not None and not config.classes else None,
                                    default_column=init_model.info.class_column if init_model is not None else None)
    if isinstance(labels, VectorLabels) and not labels.numeric:
        if classes is None:
            classes = Classes(labels.classes, list(range(len(labels.classes))))
        # The layer's names are mapped to class ids, not values: no values to code.
        outside = sorted(i for i in label_ids if i >= len(classes.values))
        label_ids = {classes.values[i] for i in label_ids if i < len(classes.values)}
    else:
        if classes is None:
            classes = held_classes(labels, label_ids, config.labels[0])
        elif isinstance(labels, RasterLabels):
            labels.check_names(dict(zip(classes.values, classes.names)), config.classes or config.init)
        outside = sorted(set(label_ids) - set(classes.values))
    if outside:
        # A lone stray value of a class raster: likely an undeclared nodata.
        lone = len(outside) == 1 and isinstance(labels, RasterLabels)
        hint = f"; {nodata_hint(outside[0])}" if lone else ""
        raise GeossclError(f"{config.labels[0]}: class id(s) {outside} are outside the {len(classes.names)} classes "
                           f"{source}{hint}")
    too_large = [v for v in classes.values if v >= NODATA_CLASS]
    if too_large:
        hint = (f"; {nodata_hint(too_large[0])}" if isinstance(labels, RasterLabels) and too_large[0] in label_ids
                else "")
        raise GeossclError(f"{config.labels[0]}: class value {too_large[0]} does not fit the class maps geosscl writes "
                           f"(uint8, {NODATA_CLASS} = no data: values 0-{NODATA_CLASS - 1}){hint}")
    labels.use_values(classes.values if isinstance(labels, RasterLabels) or labels.numeric else None)
    names, num_classes = classes.names, len(classes.names)
    colors = classes.colors
    if colors is None:
        colors = default_colors(num_classes)
        if isinstance(labels, RasterLabels):
            table = labels.colors()
            colors = [table.get(v, color) for v, color in zip(classes.values, colors)]

    try:
        train_data = IntersectionDataset(mosaic, labels)
    except RuntimeError:
        raise GeossclError(f"{config.labels[0]}: labels do not overlap the imagery") from None
    if num_classes < 2:
        # One output's softmax is 1 whatever the input: the loss is 0 from the start and nothing is learnt.
        hint = ("give --background-class for the pixels outside the polygons" if isinstance(labels, VectorLabels)
                else "label the other pixels too (a footprint layer of polygons takes --background-class)")
        raise GeossclError(f"{config.labels[0]}: the labels hold one class ({names[0]!r}, value {classes.values[0]}); "
                           f"a segmenter needs two or more: {hint}")
    area = overlap = shapely.union_all(train_data.index.geometry.values)
    if limit is not None:
        area = overlap = polygonal(area.intersection(limit))
        if area.is_empty:
            raise GeossclError(f"{config.label_area}: label area does not overlap the labels")
    if config.holdout_region:
        # A test region: neither trained nor validated on.
        overlap = polygonal(overlap.difference(read_region(config.holdout_region, mosaic.crs)))
        if overlap.is_empty:
            raise GeossclError(f"{config.holdout_region}: holdout region covers all the labelled imagery")
    res = mosaic.res[0]
    block = (config.block_size or config.crop_size) * res
    if config.val_region:
        val_region = polygonal(read_region(config.val_region, mosaic.crs).intersection(overlap))
        if val_region.is_empty:
            raise GeossclError(f"{config.val_region}: validation region does not overlap the labelled imagery")
        train_region = polygonal(overlap.difference(val_region))
        if train_region.is_empty:
            raise GeossclError(f"{config.val_region}: validation region covers all the labelled imagery")
    else:
        held = block_classes(labels, overlap, block, mosaic) if config.val_fraction > 0 else None
        split = block_split(overlap, block, {"train": 1 - config.val_fraction, "val": config.val_fraction},
                            seed=config.seed, classes=held)
        train_region, val_region = split["train"], split["val"]
    labelled = train_region
    if config.label_fraction != 1:
        labelled = label_fraction(train_region, config.label_fraction, block_size=config.crop_size * res, seed=config.seed)
    if config.label_fraction != 1 and isinstance(labels, VectorLabels) and not labels.covers_any(labelled):
        raise GeossclError(f"label_fraction: the {config.label_fraction} of the training region drawn holds no labelled polygon; raise it or change --seed")
    # A class none of the training labels holds is one the model cannot learn and will never predict: a few
    # drawn blocks can miss one, and sparse labels can leave one to the validation region alone.
    drawn = class_pixels(labels, labelled, mosaic)
    fraction = f"the {config.label_fraction} of the training region drawn"
    if not drawn:
        if config.label_fraction != 1:
            raise GeossclError(f"label_fraction: {fraction} holds no labelled pixel; raise it or change --seed")
        raise GeossclError(f"{config.labels[0]}: the training region holds no labelled pixel; {_split_hint(config, 'the')}")
    missing = sorted({classes.values.index(v) for v in label_ids} - set(drawn))
    if missing:
        listed, it = ", ".join(names[i] for i in missing), "it" if len(missing) == 1 else "them"
        if config.label_fraction != 1 and set(missing) & set(class_pixels(labels, train_region, mosaic)):
            log.warning(f"label_fraction: {fraction} (seed {config.seed}) holds no pixel of {listed}: the model cannot "
                        f"learn {it}; raise --label-fraction or change --seed")
        else:
            log.warning(f"{config.labels[0]}: the training region holds no pixel of {listed}: the model cannot learn "
                        f"{it}; {_split_hint(config, 'its' if len(missing) == 1 else 'their')}")
    if config.val_label_fraction != 1 and not val_region.is_empty:
        val_region = label_fraction(val_region, config.val_label_fraction, block_size=config.crop_size * res,
                                    seed=config.seed, option="val_label_fraction", region_name="validation region")
        if isinstance(labels, VectorLabels) and not labels.covers_any(val_region):
            raise GeossclError(f"val_label_fraction: the {config.val_label_fraction} of the validation region drawn holds no labelled polygon; raise it or change --seed")

    weights = None
    if config.class_weights == "auto":
        # Counted on the labels training will see.
        weights = balanced_weights(drawn, num_classes)
    elif config.class_weights is not None:
        weights = [float(w) for w in config.class_weights]
        if len(weights) != num_classes or min(weights) < 0 or max(weights) <= 0:
            raise GeossclError(f"class_weights: give {num_classes} non-negative weights (one per class, not all 0) or 'auto', "
                               f"got {','.join(f'{w:g}' for w in weights)}")

    background = _background_name(labels, classes)
    if init_model is not None:
        init_model.keep_head = (names, classes.values) == (list(init_model.info.class_names), init_model.info.map_values)
        if background is None and isinstance(labels, RasterLabels) and not config.classes:
            background = init_model.info.background_class  # a class raster holds it as one of the model's values
    return Setup(mosaic, labels, checkpoint, arch, encoder, decoder, list(mean), list(std), names, colors, num_classes,
                 area, labelled, val_region, class_values(classes.values), weights, init_model, band_names, background)


def _background_name(labels: RasterLabels | VectorLabels, classes: Classes) -> str | None:
    """The name of a vector layer's background class (its id is a value where the class column holds values)."""
    if not isinstance(labels, VectorLabels) or labels.background is None:
        return None
    ids = list(classes.values) if labels.numeric else list(range(len(classes.names)))
    return classes.names[ids.index(labels.background)] if labels.background in ids else None


def fine_tuning_ground(setup: Setup) -> dict[str, str]:
    """The :mod:`~geosscl.ground` record of the model ``setup``'s run makes: its training and validation
    regions, with the ground of the model file it starts from (whose labels it carries)."""
    return record(setup.labelled, setup.val_region, setup.init_model.ground if setup.init_model is not None else None)


def _split_hint(config: FinetuneConfig, its: str) -> str:
    """Where labels missing from the training region went (``its``: whose labels), and what brings them back."""
    held_out = " or --holdout-region" if config.holdout_region else ""
    if config.val_region:
        return f"{its} labels lie in --val-region {config.val_region}{held_out}; label more outside them"
    if config.val_fraction > 0:
        block = config.block_size or config.crop_size
        elsewhere = " (or they lie in --holdout-region)" if config.holdout_region else ""
        return (f"no draw of the validation blocks ({block} px) leaves {its} labels to training{elsewhere}; "
                "give a smaller --block-size or a --val-region")
    return f"{its} labels lie in --holdout-region"


def held_classes(labels: RasterLabels | VectorLabels, held: set[int], path: str) -> Classes:
    """The classes of labels given no classes: the values they hold, named as the rasters name them
    (:meth:`RasterLabels.class_names`; a value named but not held is a class too, as a tile's
    table names what the other tiles hold)."""
    named = labels.class_names() if isinstance(labels, RasterLabels) else {}
    values = sorted(set(held) | set(named))
    if named:
        log.info(f"{path}: class names from the raster itself: {', '.join(named.values())}")
        unnamed = sorted(set(held) - set(named))
        if unnamed:
            log.warning(f"{path}: the raster names no class for value(s) {', '.join(map(str, unnamed))} it holds; "
                        "they are classes of their own, named by value")
    return Classes([named.get(v, f"class {v}") for v in values], values)


def load_init(task: Any, setup: Setup) -> None:
    """Put ``setup``'s initial weights in ``task`` (a :class:`SegmentationTask`): a pretraining
    run's encoder and decoder, or a model file's network (its head too where the classes are its own)."""
    if setup.checkpoint is not None:
        task.load_pretrained(setup.checkpoint["state_dict"], setup.checkpoint["hyper_parameters"])
    elif setup.init_model is not None:
        task.load_model_weights(setup.init_model.state, keep_head=setup.init_model.keep_head)


def parse_class_weights(text: str) -> str | list[float]:
    """``'auto'`` or comma-separated weights (``"1,10"``), as ``--class-weights`` takes them.

    Raises:
        ValueError: naming the text, for anything else.
    """
    if text == "auto":
        return text
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise ValueError(f"expected 'auto' or comma-separated numbers, got {text!r}") from None


def balanced_weights(pixels: dict[int, int], num_classes: int) -> list[float]:
    """Median-frequency balancing (Eigen & Fergus, ICCV 2015): ``median(f) / f_c`` for each class's pixel share ``f_c``.

    A class with a tenth of the median share weighs 10, one with ten times it 0.1; classes
    without a pixel (they add nothing to the loss) get 1.
    """
    present = {c: n for c, n in pixels.items() if n > 0}
    total = sum(present.values())
    median = float(np.median([n / total for n in present.values()]))
    return [round(median * total / present[c], 6) if c in present else 1.0 for c in range(num_classes)]


def finetune(config: FinetuneConfig, progress: Callable[[int, int], None] | None = None) -> str:
    """Fine-tune a segmenter and write its model file; return the model file's path.

    ``progress(done, total)`` is called after every training step: steps of
    ``max_steps``, or whole seconds of ``max_time`` when only a time is given.

    Raises:
        GeossclError: for bad input, before anything is written.
    """
    from .tasks import SegmentationTask
    from .precision import LIGHTNING_PRECISION, check_precision
    from .training import ReportProgress, check_accelerator, progress_bar, quiet_lightning

    # -- check everything before writing anything ------------------------------------
    if not config.out:
        raise GeossclError("out: give the model file to write")
    check_suffix(config.out, (".safetensors",), "a model file is safetensors")
    out = check_output(config.out, config.overwrite, config.inputs())
    if config.max_steps is None and config.max_time is None:
        raise GeossclError("max_steps: give --max-steps or --max-time")
    check_accelerator(config.accelerator)
    config.precision = check_precision(config.precision, config.accelerator)
    if config.crop_size % 32:
        raise GeossclError(f"crop_size: {config.crop_size} is not a multiple of 32 (the encoder's total stride)")
    if config.pretrained_lr_factor < 0 or config.warmup_steps < 0:
        raise GeossclError(f"pretrained_lr_factor / warmup_steps: must not be negative, got {config.pretrained_lr_factor} / {config.warmup_steps}")
    setup = prepare(config)
    mosaic = setup.mosaic
    if setup.val_region.is_empty:
        raise GeossclError("val_fraction: finetune keeps the weights of the best validation mIoU and needs a validation "
                           "region; give --val-fraction above 0 or --val-region")

    # -- run ------------------------------------------------------------------------
    pl.seed_everything(config.seed, workers=True, verbose=False)
    task = SegmentationTask(mosaic.num_bands, setup.num_classes, setup.band_mean, setup.band_std, arch=setup.arch, encoder=setup.encoder,
                            decoder_channels=setup.decoder_channels, freeze_encoder=config.freeze_encoder, linear_probe=config.linear_probe, lr=config.lr, weight_decay=config.weight_decay,
                            pretrained_lr_factor=config.pretrained_lr_factor, warmup_steps=config.warmup_steps,
                            class_weights=setup.class_weights)
    load_init(task, setup)
    if setup.init_model is not None and not setup.init_model.keep_head:
        log.warning(f"{config.init}: the classes ({', '.join(setup.class_names)}) are not the model's "
                    f"({', '.join(setup.init_model.info.class_names)}): its segmentation head starts anew")
    steps = config.max_steps or 10**7
    train_loader, val_loader = loaders(config, setup, steps)
    best = _KeepBest()
    callbacks: list[pl.Callback] = [best] + ([] if config.quiet or progress else [progress_bar("finetune")])
    if progress is not None:
        callbacks.append(ReportProgress(progress, config.max_steps, config.max_time))
    with quiet_lightning(config.quiet or progress is not None):
        trainer = pl.Trainer(
            max_steps=steps if config.max_steps else -1, max_epochs=-1,
            max_time={"minutes": config.max_time} if config.max_time else None,
            val_check_interval=max(1, min(100, steps // 5)), check_val_every_n_epoch=None,
            accelerator=config.accelerator, devices=config.devices, logger=False, callbacks=callbacks,
            precision=LIGHTNING_PRECISION[config.precision],
            # _KeepBest holds the weights; Lightning's default checkpointing would write the whole
            # training state into ./checkpoints of wherever the user runs the command.
            enable_checkpointing=False,
            enable_progress_bar=not (config.quiet or progress), enable_model_summary=not (config.quiet or progress),
            num_sanity_val_steps=0,
        )
        try:
            trainer.fit(task, train_dataloaders=train_loader, val_dataloaders=val_loader)
        except SIGTERMException:
            # Lightning ends fit() at a step boundary with this SystemExit, of status 0: a killed
            # run would look like a finished one that wrote no model.
            raise RunStopped(f"{out}: stopped by SIGTERM at step {trainer.global_step}; no model written") from None
        if best.state is not None:
            task.load_state_dict(best.state)
        validation = trainer.validate(task, dataloaders=val_loader, verbose=False)[0]
    if rank_zero_only.rank == 0:
        info = ModelInfo(
            arch=setup.arch, encoder=setup.encoder, decoder_channels=setup.decoder_channels, bands=mosaic.band_indexes,
            band_names=setup.band_names, band_mean=setup.band_mean, band_std=setup.band_std,
            class_names=setup.class_names, class_colors=setup.class_colors, class_values=setup.class_values,
            background_class=setup.background_class,
            res=list(mosaic.res), crs=mosaic.crs.to_wkt(),
            gsd=mosaic.gsd, nodata=mosaic.nodata,
            # Predict on tiles of the size it was trained and validated on: a network
            # fine-tuned on small crops can fail on larger tiles (measured on the NC
            # scene: 64 px crops, 256 px tiles, test mIoU 1.8 where 64 px tiles give 14.9).
            tile_size=config.crop_size, tile_overlap=config.crop_size // 4,
            provenance={
                "init": config.init, "imagery": mosaic.files, "labels": list(config.labels),
                "label_fraction": config.label_fraction, "val_label_fraction": config.val_label_fraction,
                "every_date": config.every_date, "freeze_encoder": config.freeze_encoder, "class_weights": setup.class_weights,
                "linear_probe": config.linear_probe, "class_column": class_column(setup),
                "steps": trainer.global_step, "seed": config.seed, GROUND: fine_tuning_ground(setup),
                "validation": {"miou": validation.get("val_miou"), "overall_accuracy": validation.get("val_oa"),
                               "history": best.history},
                "settings": json.loads(json.dumps(asdict(config), default=str)),
                "software": software(),
                **config.provenance,
            },
        )
        save_model(out, task.network, info, overwrite=config.overwrite)
    return out


def class_column(setup: Setup) -> str | None:
    """The vector layer column the labels were read from (given, or the init model's); None for class rasters."""
    return setup.labels.class_column if isinstance(setup.labels, VectorLabels) else None


def loaders(config: FinetuneConfig, setup: Setup, steps: int) -> tuple[DataLoader, DataLoader]:
    """The training loader (``steps`` batches of random crops of the labelled blocks, near their labels) and
    the validation loader (a grid of crops over the labels of the validation region), of ``config``'s dates."""
    from samplers import DateSampler, RegionGridSampler, RegionSampler

    mosaic, labels = setup.mosaic, setup.labels
    train_set = DatedIntersection(mosaic, labels, transforms=KeepRegion(setup.labelled))
    val_set = DatedIntersection(mosaic, labels, transforms=KeepRegion(setup.val_region))
    # Sparse labels: crops near them. A training crop centred within a quarter crop of a labelled
    # cell of a quarter crop holds that cell; validation boxes cover the labelled cells, not the empty ground.
    quarter = max(1, config.crop_size // 4)
    train_where = near_labels(labels, setup.labelled, mosaic, cell=quarter, reach=quarter)
    val_where = near_labels(labels, setup.val_region, mosaic, cell=quarter, reach=0.5)
    # On the imagery's pixel grid: an imagery & labels extent need not be (vector labels end where
    # their polygons do), and a box off the grid reads resampled imagery.
    train_boxes = RegionSampler(train_set, config.crop_size, train_where, length=steps * config.batch_size,
                                generator=torch.Generator().manual_seed(config.seed), origin=mosaic.grid_origin)
    val_boxes = RegionGridSampler(val_set, config.crop_size, val_where, origin=mosaic.grid_origin)
    if config.every_date:
        train_boxes = DateSampler(train_boxes, mosaic, generator=torch.Generator().manual_seed(config.seed))
        val_boxes = DateSampler(val_boxes, mosaic, each=True)
    train_loader = DataLoader(
        train_set, sampler=train_boxes,
        batch_size=config.batch_size, num_workers=config.num_workers, collate_fn=stack_samples,
        generator=torch.Generator().manual_seed(config.seed), persistent_workers=config.num_workers > 0,
    )
    val_loader = DataLoader(
        val_set, sampler=val_boxes,
        batch_size=config.batch_size, num_workers=config.num_workers, collate_fn=stack_samples,
        # Kept between validations: else each one starts its workers again (and re-opens the rasters).
        persistent_workers=config.num_workers > 0,
    )
    return train_loader, val_loader


class _KeepBest(pl.Callback):
    """Keeps, in memory, the weights of the best validation mIoU so far (and every validation's mIoU).

    Not Lightning's ModelCheckpoint: it writes the whole training state (weights and
    AdamW moments, about 170 MB for a ResNet-18 U-Net) to disk at every improvement,
    only for the weights to be read back once at the end.
    """

    def __init__(self) -> None:
        self.score = float("-inf")
        self.state: dict[str, torch.Tensor] | None = None
        self.history: list[float] = []

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return  # the final trainer.validate() of the chosen weights is not a candidate
        score = float(trainer.callback_metrics["val_miou"])
        self.history.append(score)
        if score > self.score:  # ties keep the earlier weights, as ModelCheckpoint does
            self.score = score
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
