"""``geosscl.probing``: a linear classifier on frozen encoder features, a direct measure of a representation.

Fine-tuning scores mix what pretraining learnt with the fine-tuning recipe, and on few
labels they swing by several mIoU with the random crops and the optimiser's path. The
probe removes both: every labelled pixel of the training blocks is described by the
frozen encoder's features at that pixel (a hypercolumn: the bands and encoder stages,
bilinearly sampled at the pixel centre), a multinomial logistic regression is fitted
to them by full-batch L-BFGS from zero weights (deterministic), its L2 weight (and how
much faster it grows with depth, and with ``stages="auto"`` which stages are read) is chosen on
the validation blocks, and it is scored on the held-out region (if one is given). The splits and label
blocks are those :func:`geosscl.finetuning.finetune` draws from the same settings, so a
probe and a fine-tuning run of one seed see the same labels.

``features="bands"`` fits the same classifier to the normalised bands alone: the score a
per-pixel spectral classifier reaches, the floor a representation must clear.

With ``config.out`` the fitted classifier is also written as a model file (architecture
``hypercolumn``: the frozen encoder's stages up to the deepest one read, and the
classifier as a 1×1 convolution with the feature standardisation folded in), which
``geosscl predict``, ``evaluate``, ``export`` and the QGIS plugin use like any other.
With a few labels it can be the better model: on the bundled NC scene a stride-2-stage
classifier scored 2–10 mIoU above U-Nets fine-tuned on the same label blocks (README).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from shapely.geometry.base import BaseGeometry
from torch import Tensor

from .augment import BandStats
from .data import IGNORE_INDEX, Mosaic, RasterLabels, VectorLabels
from .errors import GeossclError
from .finetuning import FinetuneConfig, Setup, class_column, fine_tuning_ground, load_init, prepare
from .ground import KEY as GROUND
from .inference import resolve_device
from .metrics import ConfusionMatrix, Scores
from .modelfile import ModelInfo, save_model
from .models import HYPERCOLUMN, SegmentationNetwork
from .output import check_output, check_suffix
from .splits import KeepRegion, polygonal, read_region
from .versions import software

FEATURES = ("encoder", "bands")
#: L2 weights tried; the one with the best validation mIoU is kept.
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1)
#: Growth of the L2 weight with depth, tried with each of WEIGHT_DECAYS: stage s's weights are
#: penalised ``g ** (s - 1)`` times as much as the bands' and stage 1's. Deep features vary
#: slowly across a label block, so a few blocks hold few independent samples of them: under
#: one weight for all features they memorise the blocks (README: all five stages scored 10
#: mIoU below stage 1 alone) or stage 1 is starved.
DEPTH_PENALTIES = (1.0, 4.0, 10.0)
#: The readouts ``stages="auto"`` tries: stage 1 alone, or all five stages. Not the default: on
#: the NC scene the validation blocks did not tell which of the two scores better on the test
#: blocks (8 encoders x 10 label draws: correlation 0.12 between the two gains, mean 0.1 mIoU
#: below stage 1 alone, one draw 9.8 below; README "Why stage 1 is the default again"), at 8x the fitting time.
AUTO_STAGES = ([1], [1, 2, 3, 4, 5])
#: The stages read unless asked otherwise: the stride-2 stage (with the bands).
DEFAULT_STAGES = (1,)
#: Encoder context read around each block, pixels (a multiple of 32).
MARGIN = 64


@dataclass
class ProbeResult:
    """Scores of a probe (in the held-out region, or without one the validation region) and how it was fitted."""

    scores: Scores  #: in ``region``
    weight_decay: float
    val_miou: float | None  #: ``None`` without a validation region (``val_fraction=0``, fixed weights)
    pixels: dict[str, int]  #: labelled pixels used per split (train, val, and test with a holdout region)
    class_names: list[str]
    stages: list[int]  #: the encoder stages the kept classifier reads (``[]``: the bands alone)
    depth_penalty: float  #: its L2 growth per stage (see :data:`DEPTH_PENALTIES`)
    #: where ``scores`` were counted: ``"holdout"``; without one ``"validation"``, or with no validation
    #: region either ``"training"`` (the pixels the classifier was fitted to: no test at all)
    region: str = "holdout"
    model: str | None = None  #: the model file written (``config.out``), if any
    class_weights: list[float] | None = None  #: of the cross-entropy, by class id (``config.class_weights``)
    class_values: list[int] | None = None  #: each class's value in the labels (None: the ids themselves)


def hypercolumns(network: SegmentationNetwork | None, image: Tensor, rows: Tensor, cols: Tensor,
                 stages: Sequence[int] | None = None) -> Tensor:
    """Features at pixels: the image's bands and encoder stages, sampled at pixel centres.

    Args:
        network: the encoder's network (``None``: the bands only).
        image: ``1×C×H×W`` normalised image, ``H`` and ``W`` multiples of 32.
        rows: pixel rows, ``N`` (int64).
        cols: pixel columns, ``N``.
        stages: encoder stages to include, 1 (stride 2) to 5 (stride 32) for a
            ResNet; default all.

    Returns:
        ``N×F`` float32, ``F = C`` plus the channels of the stages (1024 more for all
        five of a ResNet-18). Stage maps are sampled bilinearly at ``(row + 0.5) ·
        H_stage / H - 0.5`` (clamped to the map), as upsampling them to the image with
        ``align_corners=False`` would, without building the upsampled maps.
    """
    height, width = image.shape[-2:]
    maps = [image]
    if network is not None:
        with torch.no_grad():
            encoded = network.encode(image)  # stage 0 is the image itself
        maps += [encoded[i] for i in (stages if stages is not None else range(1, len(encoded)))]
    grid = torch.stack([(cols.to(image.dtype) + 0.5) / width * 2 - 1, (rows.to(image.dtype) + 0.5) / height * 2 - 1], dim=-1)
    grid = grid.to(image.device).view(1, 1, -1, 2)
    columns = [F.grid_sample(m, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T for m in maps]
    return torch.cat(columns, dim=1)


def frozen_encoder(setup: Setup, seed: int = 0) -> SegmentationNetwork:
    """The network whose encoder a probe reads, in eval mode: the checkpoint's, or one drawn from ``seed``."""
    from .tasks import SegmentationTask

    torch.manual_seed(seed)  # a random encoder is drawn from the seed, as fine-tuning draws its own
    task = SegmentationTask(setup.mosaic.num_bands, setup.num_classes, setup.band_mean, setup.band_std, arch=setup.arch,
                            encoder=setup.encoder, decoder_channels=setup.decoder_channels)
    load_init(task, setup)
    return task.network.eval().requires_grad_(False)


def fit_probe(train: tuple[Tensor, Tensor], num_classes: int, weight_decay: float, iterations: int = 200,
              penalty: Tensor | None = None, class_weights: Sequence[float] | None = None) -> torch.nn.Linear:
    """Multinomial logistic regression by full-batch L-BFGS from zero weights (deterministic).

    Args:
        train: standardised features ``N×F`` and class ids ``N``.
        weight_decay: weight of the L2 penalty on the weights (not the biases).
        penalty: ``F`` factors of ``weight_decay`` per feature (default 1 each).
        class_weights: weight of each class in the cross-entropy (default 1 each).
    """
    x, y = train
    linear = torch.nn.Linear(x.shape[1], num_classes).to(x.device)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimiser = torch.optim.LBFGS(linear.parameters(), lr=1, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe")
    decay = weight_decay * (penalty.to(x.device) if penalty is not None else torch.ones(x.shape[1], device=x.device))
    weight = torch.tensor(class_weights, dtype=x.dtype, device=x.device) if class_weights is not None else None

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(linear(x), y, weight=weight) + (decay * linear.weight.pow(2)).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return linear


def _score(linear: torch.nn.Linear, data: tuple[Tensor, Tensor], num_classes: int) -> Scores:
    matrix = ConfusionMatrix(num_classes)
    with torch.no_grad():
        matrix.update(linear(data[0]).argmax(dim=1), data[1])
    return matrix.scores()


def linear_probe(config: FinetuneConfig, features: str = "encoder", stages: Sequence[int] | str = DEFAULT_STAGES,
                 max_pixels: int = 100_000, block_size: int = 1024, device: str = "auto",
                 progress: Callable[[str, int, int], None] | None = None, weight_decay: float | None = None) -> ProbeResult:
    """Probe the encoder of ``config.init`` (a pretraining checkpoint, or ``"random"``) on few labels.

    Args:
        config: fine-tuning settings: imagery, labels, classes, ``init``,
            ``label_fraction``, ``crop_size`` (the label-block size), ``seed``,
            ``val_fraction`` / ``val_region``, ``holdout_region`` (where the probe
            is scored; without one it is scored in the validation region, where its
            L2 weight was chosen, so optimistically; with ``val_fraction=0`` either, on
            its own training pixels), ``class_weights`` (of the classifier's
            cross-entropy, as in fine-tuning), and ``out`` / ``overwrite``: a model file
            to write the fitted classifier to (optional).
        features: ``"encoder"`` (hypercolumns) or ``"bands"``.
        stages: the encoder stages of the hypercolumns (see :func:`hypercolumns`),
            default stage 1 alone; or ``"auto"``: chosen on the validation blocks
            among :data:`AUTO_STAGES` (stage 1 alone, or all five), as the L2 weight is.
        max_pixels: at most about this many pixels per split (a random subset, drawn
            with the seed, where a split holds more).
        block_size: the imagery is read and encoded in blocks of this many pixels a
            side (plus :data:`MARGIN` of context), a multiple of 32.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: called with ``(step, done, total)``, step ``"encoding blocks"`` then
            ``"fitting"``.
        weight_decay: the L2 weight, fixed; default ``None``: chosen on the validation
            blocks among :data:`WEIGHT_DECAYS`. Choosing needs validation labels: with a
            few thousand validation pixels it chose worse than a fixed 1e-3 (README
            "Validation with as few labels"). The depth growth is still chosen.

    Raises:
        GeossclError: for bad input, or a split without labelled pixels.
    """
    if features not in FEATURES:
        raise GeossclError(f"features: {features!r} is not one of {', '.join(FEATURES)}")
    if block_size % 32 or block_size <= 0:
        raise GeossclError(f"block_size: {block_size} is not a positive multiple of 32")
    if weight_decay is not None and not weight_decay >= 0:
        raise GeossclError(f"weight_decay: must be a non-negative number, got {weight_decay}")
    if isinstance(stages, str) and stages != "auto":
        raise GeossclError(f"stages: {stages!r} is neither 'auto' nor a list of encoder stages")
    if not isinstance(stages, str) and (not stages or any(not 1 <= s <= 5 for s in stages)):
        raise GeossclError(f"stages: {list(stages)} must be encoder stages 1 to 5")
    if config.out:
        check_suffix(config.out, (".safetensors",), "a model file is safetensors")
        check_output(config.out, config.overwrite, config.inputs())
    setup = prepare(config)
    # One resolution of the stages for the features and the model file: the model's head
    # takes its inputs in stage order, so the features are gathered in that order too.
    # DeepLabV3+ dilates the last stage (stride 16); the model file's encoder has the plain one:
    # "auto" leaves it out of what it may write, an explicit request for it is refused.
    stage_5_writable = setup.arch == "unet" or not config.out
    if features == "bands":
        readouts = [[]]
    elif stages == "auto":
        readouts = [[s for s in r if s < 5 or stage_5_writable] for r in AUTO_STAGES]
    else:
        readouts = [sorted(set(stages))]
    chosen = sorted(set().union(*readouts))
    if 5 in chosen and not stage_5_writable:
        raise GeossclError(f"{config.init}: a {setup.arch} encoder's stage 5 cannot be written as a hypercolumn model; leave stage 5 out")
    regions = {"train": setup.labelled, "val": setup.val_region}
    # (the candidates are known before anything is read; checked here, not after minutes of encoding)
    candidates = [(readout, growth, decay) for readout in readouts
                  for growth in (DEPTH_PENALTIES if max(readout, default=0) > 1 else DEPTH_PENALTIES[:1])
                  for decay in (WEIGHT_DECAYS if weight_decay is None else (weight_decay,))]
    if setup.val_region.is_empty:
        # With nothing to choose, validation labels are better spent on training.
        if len(candidates) > 1:
            raise GeossclError("val_fraction: 0 leaves no validation blocks to choose the classifier on; fix the L2 weight "
                               "(--weight-decay) and read no stage deeper than 1, or keep a validation fraction")
        del regions["val"]
    if config.holdout_region:
        test = polygonal(read_region(config.holdout_region, setup.mosaic.crs).intersection(setup.area))
        if test.is_empty:
            raise GeossclError(f"{config.holdout_region}: holdout region does not overlap the labelled imagery")
        regions["test"] = test
    where = resolve_device(device)
    network = frozen_encoder(setup, config.seed).to(where) if features == "encoder" else None
    data = _gather(setup.mosaic, setup.labels, network, BandStats(torch.tensor(setup.band_mean), torch.tensor(setup.band_std)),
                   regions, max_pixels, block_size, config.seed, where, chosen, progress, config.every_date)
    for name, (x, _) in data.items():
        if not len(x):
            raise GeossclError(f"{config.labels[0]}: no labelled pixel in the {name} region")
    mean, std = data["train"][0].mean(0), data["train"][0].std(0).clamp_min(1e-6)
    data = {name: ((x - mean) / std, y) for name, (x, y) in data.items()}
    # Which stage each feature comes from: 0 for the bands, then each chosen stage's channels.
    widths = network.net.encoder.out_channels if network is not None else []
    stage_of = torch.tensor([0] * setup.mosaic.num_bands + [s for s in chosen for _ in range(widths[s])])
    fits = []
    for done, (readout, growth, decay) in enumerate(candidates):
        if progress:
            progress("fitting", done, len(candidates))
        columns = (stage_of == 0) | torch.isin(stage_of, torch.tensor(readout, dtype=stage_of.dtype))
        penalty = growth ** (stage_of[columns] - 1).clamp_min(0).to(torch.float32)
        linear = fit_probe((data["train"][0][:, columns], data["train"][1]), setup.num_classes, decay, penalty=penalty,
                           class_weights=setup.class_weights)
        miou = _score(linear, (data["val"][0][:, columns], data["val"][1]), setup.num_classes).miou if "val" in data else 0.0
        # Ties: fewer stages, then the stronger penalty.
        fits.append((miou if miou == miou else -1.0, -len(readout), growth, decay, readout, columns, linear))
    if progress:
        progress("fitting", len(candidates), len(candidates))
    val_miou, _, growth, decay, chosen, columns, linear = max(fits, key=lambda f: f[:4])
    val_miou = val_miou if "val" in data else None
    data = {name: (x[:, columns], y) for name, (x, y) in data.items()}
    mean, std = mean[columns], std[columns]
    region, split = ("holdout", "test") if "test" in data else ("validation", "val") if "val" in data else ("training", "train")
    scores = _score(linear, data[split], setup.num_classes)
    pixels = {name: len(y) for name, (_, y) in data.items()}
    if config.out:
        classifier = _classifier(setup, network, chosen, linear, mean, std)
        info = ModelInfo(
            arch=HYPERCOLUMN, encoder=setup.encoder, stages=chosen, bands=setup.mosaic.band_indexes,
            band_names=setup.band_names, band_mean=setup.band_mean, band_std=setup.band_std, class_names=setup.class_names,
            class_colors=setup.class_colors, class_values=setup.class_values, background_class=setup.background_class,
            res=list(setup.mosaic.res),
            crs=setup.mosaic.crs.to_wkt(),
            gsd=setup.mosaic.gsd, nodata=setup.mosaic.nodata,
            tile_size=512, tile_overlap=MARGIN,
            provenance={
                "made_by": "geosscl probe (multinomial logistic regression by L-BFGS on frozen features)",
                "init": config.init, "imagery": setup.mosaic.files, "labels": list(config.labels),
                "label_fraction": config.label_fraction, "val_label_fraction": config.val_label_fraction,
                "every_date": config.every_date, "class_column": class_column(setup), "seed": config.seed,
                GROUND: fine_tuning_ground(setup),
                "weight_decay": decay, "depth_penalty": growth, "class_weights": setup.class_weights,
                "pixels": pixels,
                "validation": {"miou": val_miou},
                **({"holdout": {"miou": scores.miou, "overall_accuracy": scores.overall_accuracy}} if region == "holdout" else {}),
                "settings": json.loads(json.dumps(asdict(config), default=str)),
                "software": software(),
            },
        )
        save_model(config.out, classifier, info, overwrite=config.overwrite)
    return ProbeResult(scores, decay, val_miou, pixels, setup.class_names, chosen, growth, region, config.out or None,
                       setup.class_weights, setup.class_values)


def _classifier(setup: Setup, network: SegmentationNetwork | None, stages: list[int], linear: torch.nn.Linear,
                mean: Tensor, std: Tensor) -> SegmentationNetwork:
    """The fitted probe as a network: the encoder's stages it read, the linear map on raw hypercolumns."""
    model = SegmentationNetwork(setup.mosaic.num_bands, setup.num_classes, arch=HYPERCOLUMN, encoder=setup.encoder, stages=stages)
    net = model.net
    with torch.no_grad():
        if net.encoder is not None and network is not None:
            own = net.encoder.state_dict()
            net.encoder.load_state_dict({k: v for k, v in network.net.encoder.state_dict().items() if k in own}, strict=True)
        # The probe standardised each feature: w·(x − m)/s + b = (w/s)·x + (b − w·m/s).
        weight = (linear.weight / std.to(linear.weight.device)).cpu()
        bias = (linear.bias - (linear.weight * (mean / std).to(linear.weight.device)).sum(dim=1)).cpu()
        net.segmentation_head.weight.copy_(weight[:, :, None, None])
        net.segmentation_head.bias.copy_(bias)
    return model.eval()


def _gather(mosaic: Mosaic, labels: RasterLabels | VectorLabels, network: SegmentationNetwork | None, normalise: BandStats,
            regions: dict[str, BaseGeometry], max_pixels: int, block_size: int, seed: int,
            device: torch.device, stages: Sequence[int] | None,
            progress: Callable[[str, int, int], None] | None,
            every_date: bool = False) -> dict[str, tuple[Tensor, Tensor]]:
    """Features and class ids of the labelled pixels of each region, block by block; with
    ``every_date``, a labelled pixel gives one sample per date of the imagery holding it."""
    rx, ry = mosaic.res
    keep = {name: KeepRegion(region) for name, region in regions.items()}
    # Keep each pixel with the probability that leaves about max_pixels of a split
    # (its area, times the dates over it, bounds its samples), so that no split is held in full first.
    depth = {name: len(mosaic.places_at(region.bounds)) if every_date else 1 for name, region in regions.items()}
    chance = {name: min(1.0, max_pixels / max(1.0, depth[name] * region.area / (rx * ry))) for name, region in regions.items()}
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in regions}
    minx, miny, maxx, maxy = mosaic.snap(_union_bounds(regions.values()))
    step_x, step_y = block_size * rx, block_size * ry
    normalise = normalise.to(device)
    grid = [(r, c) for r in range(math.ceil((maxy - miny) / step_y - 1e-9)) for c in range(math.ceil((maxx - minx) / step_x - 1e-9))]
    for done, (row, col) in enumerate(grid):
        if progress:
            progress("encoding blocks", done, len(grid))
        x0, y1 = minx + col * step_x, maxy - row * step_y
        x1, y0 = min(maxx, x0 + step_x), max(miny, y1 - step_y)
        found = {}
        sample = labels[x0:x1:rx, y0:y1:ry]
        for name in regions:
            mask = keep[name](dict(sample))["mask"].squeeze()  # KeepRegion replaces the copy's mask, not the sample's
            pick = (mask != IGNORE_INDEX).numpy() & (rng.random(tuple(mask.shape)) < chance[name])
            if pick.any():
                ys, xs = np.nonzero(pick)
                found[name] = (torch.from_numpy(ys), torch.from_numpy(xs), mask)
        if not found:
            continue
        # Read the block with context on every side, padded up to a multiple of 32.
        height, width = round((y1 - y0) / ry), round((x1 - x0) / rx)
        pad_y, pad_x = MARGIN + (-height) % 32, MARGIN + (-width) % 32
        bounds = (x0 - MARGIN * rx, y0 - pad_y * ry, x1 + pad_x * rx, y1 + MARGIN * ry)
        for date in mosaic.places_at((x0, y0, x1, y1)) if every_date else [None]:
            image, _, _ = mosaic.read(bounds, first=date)
            image, valid = normalise(torch.from_numpy(image)[None].to(device))
            for name, (ys, xs, mask) in found.items():
                ok = valid[0, 0, ys + MARGIN, xs + MARGIN].cpu() > 0  # no input, no verdict
                columns = hypercolumns(network, image, ys[ok] + MARGIN, xs[ok] + MARGIN, stages)
                parts[name].append((columns.cpu(), mask[ys[ok], xs[ok]].to(torch.int64)))
    if progress:
        progress("encoding blocks", len(grid), len(grid))
    out = {}
    for name in regions:
        xs = [x for x, _ in parts[name]]
        ys = [y for _, y in parts[name]]
        out[name] = (torch.cat(xs) if xs else torch.zeros(0, 0), torch.cat(ys) if ys else torch.zeros(0, dtype=torch.int64))
    return out


def _union_bounds(regions: Iterable[BaseGeometry]) -> tuple[float, float, float, float]:
    bounds = np.array([r.bounds for r in regions if not r.is_empty])
    return float(bounds[:, 0].min()), float(bounds[:, 1].min()), float(bounds[:, 2].max()), float(bounds[:, 3].max())
