"""An encoder + decoder from segmentation-models-pytorch, with dense features at any decoder stride."""

from __future__ import annotations

from collections.abc import Sequence

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import GeossclError

#: Architectures pretraining and fine-tuning train.
ARCHITECTURES = ("unet", "deeplabv3plus")
#: A linear classifier of frozen encoder features (``geosscl probe --output``): not trained by gradient steps.
HYPERCOLUMN = "hypercolumn"
ENCODERS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2")
#: Decoder stride of pretraining's dense features when none is asked: U-Net's first
#: decoder stage (its cost fits the consistency branch's budget; the finer stages cost
#: about three times more with no measured gain after fine-tuning, see the README),
#: DeepLabV3+'s only one.
DEFAULT_DENSE_STRIDE = {"unet": 16, "deeplabv3plus": 4}


class SegmentationNetwork(nn.Module):
    """A U-Net or DeepLabV3+ segmenter whose decoder can stop at a coarser stride.

    Pretraining needs dense features, not class maps, and running a U-Net decoder to
    full resolution for every view dominates the cost of a dense contrastive step;
    :meth:`features` stops the decoder at ``dense_stride`` (U-Net: 1, 2, 4, 8 or 16;
    DeepLabV3+: its decoder's native 4). No weights are downloaded.

    Args:
        in_channels: number of input bands.
        num_classes: output classes of the segmentation head.
        arch: ``"unet"``, ``"deeplabv3plus"``, or ``"hypercolumn"`` (a
            :class:`HypercolumnClassifier`, with ``stages``).
        encoder: ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` or ``"mobilenet_v2"``.
        decoder_channels: U-Net decoder widths, deepest first (five; default smp's
            256, 128, 64, 32, 16). Narrower decoders make small models.
        stages: the encoder stages a hypercolumn classifier reads.
    """

    def __init__(
        self, in_channels: int, num_classes: int = 1, arch: str = "unet", encoder: str = "resnet18",
        decoder_channels: list[int] | None = None, stages: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if arch not in (*ARCHITECTURES, HYPERCOLUMN):
            raise GeossclError(f"arch: {arch!r} is not one of {', '.join(ARCHITECTURES)}")
        if encoder not in ENCODERS:
            raise GeossclError(f"encoder: {encoder!r} is not one of {', '.join(ENCODERS)}")
        self.arch, self.encoder_name = arch, encoder
        if arch == HYPERCOLUMN:
            self.net = HypercolumnClassifier(in_channels, num_classes, encoder, stages or [])
            return
        extra = {}
        if decoder_channels is not None:
            if arch != "unet" or len(decoder_channels) != 5:
                raise GeossclError(f"decoder_channels: five U-Net decoder widths expected, got {list(decoder_channels)} for {arch}")
            extra["decoder_channels"] = tuple(int(c) for c in decoder_channels)
        self.net = smp.create_model(
            arch, encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=num_classes, **extra
        )

    @property
    def encoder_channels(self) -> int:
        """Channels of the deepest encoder feature map."""
        return self.net.encoder.out_channels[-1]

    def dense_channels(self, stride: int) -> int:
        """Channels of the decoder features at ``stride``."""
        self._check_stride(stride)
        if self.arch == "deeplabv3plus":
            return self.net.segmentation_head[0].in_channels
        blocks = self._unet_blocks(stride)
        return self.net.decoder.blocks[blocks - 1].conv2[0].out_channels

    def _check_stride(self, stride: int) -> None:
        allowed = (4,) if self.arch == "deeplabv3plus" else (1, 2, 4, 8, 16)
        if stride not in allowed:
            raise GeossclError(f"dense_stride: {stride} is not one of {allowed} for {self.arch}")

    def _unet_blocks(self, stride: int) -> int:
        """How many U-Net decoder blocks reach ``stride`` (each halves it, from 32)."""
        return len(self.net.decoder.blocks) - (stride.bit_length() - 1)

    def modules_beyond(self, stride: int | None) -> list[nn.Module]:
        """Modules a forward pass that stops at ``stride`` never runs (None: encoder only).

        Pretraining freezes them, so that distributed training sees no unused
        parameters.
        """
        unused: list[nn.Module] = [self.net.segmentation_head]
        if stride is None:
            return unused + [self.net.decoder]
        self._check_stride(stride)
        if self.arch == "unet":
            unused += list(self.net.decoder.blocks[self._unet_blocks(stride) :])
        return unused

    def forward(self, x: Tensor) -> Tensor:
        """``B×C×H×W`` → ``B×num_classes×H×W`` logits (H, W multiples of 32)."""
        return self.net(x)

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder feature maps, finest first (strides 1, 2, 4, …, 32)."""
        return self.net.encoder(x)

    def decode(self, features: list[Tensor], stride: int) -> Tensor:
        """Decoder features at ``stride``: ``B×D×H/stride×W/stride``."""
        self._check_stride(stride)
        if self.arch == "deeplabv3plus":
            return self.net.decoder(features)
        # Written out because smp's UnetDecoder.forward always runs to full resolution.
        decoder = self.net.decoder
        shapes = [f.shape[2:] for f in features][::-1]
        skips = features[1:][::-1]
        x = decoder.center(skips[0])
        for i in range(self._unet_blocks(stride)):
            skip = skips[i + 1] if i + 1 < len(skips) else None
            x = decoder.blocks[i](x, *shapes[i + 1], skip_connection=skip)
        return x

    def features(self, x: Tensor, stride: int) -> tuple[Tensor, Tensor]:
        """``(deepest encoder map B×E×h×w, decoder features at stride)``."""
        encoded = self.encode(x)
        return encoded[-1], self.decode(encoded, stride)


class HypercolumnClassifier(nn.Module):
    """A linear classifier of each pixel's hypercolumn: its bands and chosen encoder stages.

    What ``geosscl probe`` fits (by L-BFGS, on frozen features) and ``--output`` keeps
    as a model. Each stage's map is upsampled to the pixel grid bilinearly
    (``align_corners=False``), as :func:`geosscl.probing.hypercolumns` samples it.
    The 1×1 classifier is applied to each map at its own resolution and the logits
    are upsampled instead: both steps are linear per pixel, so the order does not
    change the result, and a tile never holds the full-resolution feature stack
    (1,030 channels for all five ResNet-18 stages).

    Args:
        in_channels: number of input bands.
        num_classes: number of classes.
        encoder: encoder name (smp's, no weights downloaded).
        stages: encoder stages read, 1 (stride 2) to 5 (stride 32); empty: the bands alone.
    """

    def __init__(self, in_channels: int, num_classes: int, encoder: str, stages: Sequence[int]) -> None:
        super().__init__()
        self.stages = sorted(int(s) for s in stages)
        if any(not 1 <= s <= 5 for s in self.stages):
            raise GeossclError(f"stages: {self.stages} must be encoder stages 1 to 5")
        self.encoder = _pruned(smp.encoders.get_encoder(encoder, in_channels=in_channels, depth=max(self.stages), weights=None),
                               in_channels) if self.stages else None
        self.widths = [in_channels] + [self.encoder.out_channels[s] for s in self.stages] if self.encoder else [in_channels]
        self.segmentation_head = nn.Conv2d(sum(self.widths), num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """``B×C×H×W`` → ``B×num_classes×H×W`` logits (H, W multiples of 2 ** max(stages))."""
        maps = [x]
        if self.encoder is not None:
            encoded = self.encoder(x)
            maps += [encoded[s] for s in self.stages]
        weights = torch.split(self.segmentation_head.weight, self.widths, dim=1)
        logits = self.segmentation_head.bias.view(1, -1, 1, 1)
        for i, (features, weight) in enumerate(zip(maps, weights)):
            part = F.conv2d(features, weight)
            if i:  # an encoder stage, coarser than the pixels
                part = F.interpolate(part, size=x.shape[-2:], mode="bilinear", align_corners=False)
            logits = logits + part
        return logits


def _pruned(encoder: nn.Module, in_channels: int) -> nn.Module:
    """``encoder`` with the layers its forward pass never runs replaced by empty ones.

    smp builds every layer of an encoder whatever its ``depth`` and only skips the
    deeper ones when run: a stage-1 classifier would carry all 11 M weights of a
    ResNet-18 in its model file. Which layers run is read off one forward pass.
    """
    called: set[nn.Module] = set()
    hooks = [m.register_forward_hook(lambda module, args, out: called.add(module)) for m in encoder.modules()]
    was_training = encoder.training
    with torch.no_grad():
        encoder.eval()(torch.zeros(1, in_channels, 64, 64))
    encoder.train(was_training)
    for hook in hooks:
        hook.remove()

    def prune(module: nn.Module) -> None:
        for name, child in list(module.named_children()):
            if any(m in called for m in child.modules()):  # a container may be iterated, never called
                prune(child)
            else:
                setattr(module, name, nn.Identity())

    prune(encoder)
    return encoder
