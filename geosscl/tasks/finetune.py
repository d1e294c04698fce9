"""Fine-tuning a (pretrained) segmentation network on few labels, as a Lightning task."""

from __future__ import annotations

from typing import Any

import kornia.augmentation as K
import torch
from torch import Tensor, nn
from torch.optim import AdamW
from torchgeo.trainers import BaseTask

from ..augment import BandStats
from ..data.labels import IGNORE_INDEX
from ..metrics import ConfusionMatrix
from ..models import SegmentationNetwork


class SegmentationTask(BaseTask):
    """Cross-entropy fine-tuning with ignored (unlabelled) pixels and validation mIoU.

    Args:
        in_channels: number of bands.
        num_classes: number of class ids (0 .. num_classes - 1).
        band_mean: per-band mean for normalisation (the pretraining run's, when fine-tuning one).
        band_std: per-band standard deviation.
        arch: ``"unet"`` or ``"deeplabv3plus"``.
        encoder: encoder name.
        decoder_channels: U-Net decoder widths (default smp's).
        freeze_encoder: train the decoder and head only (encoder weights and batch-norm
            statistics stay as loaded).
        linear_probe: train the segmentation head only (a linear map of the decoder's
            last features): a direct measure of what pretraining learnt.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        pretrained_lr_factor: learning rate of the layers the SSCCL run trained (see
            :meth:`load_pretrained`), as a multiple of ``lr``; the others train at ``lr``.
        warmup_steps: steps over which every learning rate rises linearly from
            ``1/warmup_steps`` of its value (0: none).
        class_weights: weight of each class in the cross-entropy (default: all 1).
    """

    ignore = ()
    monitor = "val_miou"
    mode = "max"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        band_mean: list[float],
        band_std: list[float],
        arch: str = "unet",
        encoder: str = "resnet18",
        decoder_channels: list[int] | None = None,
        freeze_encoder: bool = False,
        linear_probe: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        pretrained_lr_factor: float = 1.0,
        warmup_steps: int = 0,
        class_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        #: Names (in ``network.net``) of the parameters load_pretrained filled with trained weights.
        self.pretrained: set[str] = set()

    def configure_models(self) -> None:
        """The network, normalisation and joint image/mask augmentation."""
        h = self.hparams
        self.network = SegmentationNetwork(h["in_channels"], h["num_classes"], arch=h["arch"], encoder=h["encoder"],
                                           decoder_channels=h.get("decoder_channels"))
        for module in self.frozen():
            module.requires_grad_(False)
        self.normalise = BandStats(torch.tensor(h["band_mean"]), torch.tensor(h["band_std"]))
        self.augment = K.AugmentationSequential(
            K.RandomHorizontalFlip(), K.RandomVerticalFlip(), K.RandomRotation90(times=(-1, 2), p=1.0, align_corners=True),
            data_keys=["input", "mask"],
        )

    def configure_losses(self) -> None:
        """Cross-entropy that skips unlabelled pixels, with the classes weighted if asked."""
        weights = self.hparams.get("class_weights")
        self.loss = nn.CrossEntropyLoss(weight=None if weights is None else torch.tensor(weights, dtype=torch.float32),
                                        ignore_index=IGNORE_INDEX)

    def configure_metrics(self) -> None:
        """A confusion matrix over the validation pass."""
        self.confusion = ConfusionMatrix(self.hparams["num_classes"])

    def configure_optimizers(self) -> Any:
        """AdamW over the trainable parameters, pretrained ones at their own rate; optional linear warm-up."""
        h = self.hparams
        loaded, new = [], []
        for name, p in self.network.net.named_parameters():
            if p.requires_grad:
                (loaded if name in self.pretrained else new).append(p)
        groups = [{"params": new, "lr": h["lr"]}]
        if loaded:
            groups.append({"params": loaded, "lr": h["lr"] * h.get("pretrained_lr_factor", 1.0)})
        optimizer = AdamW(groups, lr=h["lr"], weight_decay=h["weight_decay"])
        warmup = h.get("warmup_steps", 0)
        if not warmup:
            return optimizer
        ramp = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": ramp, "interval": "step"}}

    def load_pretrained(self, state_dict: dict[str, Tensor], hyper_parameters: dict[str, Any] | None = None) -> int:
        """Copy encoder and decoder weights from an SSCCL checkpoint's ``state_dict``.

        The segmentation head is new (the classes differ). Given the run's
        ``hyper_parameters``, only the modules its losses reached count as pretrained
        (for ``pretrained_lr_factor``): not the decoder of an instance-only run, nor the
        stages finer than ``dense_stride``. Those are copied all the same (they hold the
        run's initialisation). Returns the number of tensors copied.
        """
        prefix = "network.net."
        net = self.network.net
        own = net.state_dict()
        taken = {
            key[len(prefix):]: value
            for key, value in state_dict.items()
            if key.startswith(prefix) and not key.startswith(prefix + "segmentation_head")
            and key[len(prefix):] in own and own[key[len(prefix):]].shape == value.shape
        }
        net.load_state_dict(taken, strict=False)
        untrained: tuple[str, ...] = ()
        if hyper_parameters is not None:
            hp = hyper_parameters
            dense = hp.get("spatial_weight", 0) > 0 or hp.get("semantic_weight", 0) > 0
            unused = self.network.modules_beyond(hp.get("dense_stride", 4) if dense else None)
            untrained = tuple(f"{name}." for name, module in net.named_modules() if any(module is u for u in unused))
        self.pretrained = {name for name, _ in net.named_parameters() if name in taken and not name.startswith(untrained)}
        return len(taken)

    def load_model_weights(self, state: dict[str, Tensor], keep_head: bool = True) -> int:
        """Copy a geosscl model file's weights (``SegmentationNetwork.state_dict()``): every layer,
        the segmentation head only with ``keep_head`` (the same classes). All of them count as
        pretrained (for ``pretrained_lr_factor``). Returns the number of tensors copied."""
        net = self.network.net
        head = "segmentation_head."
        taken = {key[len("net."):]: value for key, value in state.items()
                 if key.startswith("net.") and (keep_head or not key.startswith("net." + head))}
        net.load_state_dict(taken, strict=False)
        self.pretrained = {name for name, _ in net.named_parameters() if name in taken}
        return len(taken)

    def frozen(self) -> list[nn.Module]:
        """The modules that keep their loaded weights."""
        net = self.network.net
        if self.hparams.get("linear_probe"):
            return [net.encoder, net.decoder]
        return [net.encoder] if self.hparams["freeze_encoder"] else []

    def train(self, mode: bool = True) -> SegmentationTask:
        """Keep frozen modules' batch-norm statistics as loaded."""
        super().train(mode)
        for module in self.frozen():
            module.eval()
        return self

    def on_train_start(self) -> None:
        # Lightning never calls train() on the module (it starts in training mode and
        # restores per-module modes after validation), so set the frozen ones here.
        self.train()

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Normalise; unlabel pixels without valid input; augment image and mask together when training."""
        image, valid = self.normalise(batch["image"])
        mask = batch["mask"].masked_fill(valid[:, 0] < 1, IGNORE_INDEX)
        if self.trainer is not None and self.trainer.training:
            image, warped = self.augment(image, mask[:, None].to(image.dtype))
            mask = warped[:, 0].round().to(torch.int64)
        batch["image"], batch["mask"] = image, mask
        return batch

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Cross-entropy on the labelled pixels of the batch."""
        logits = self.network(batch["image"])
        if not (batch["mask"] != IGNORE_INDEX).any():
            loss = logits.sum() * 0.0  # no labelled pixel in this batch
        else:
            loss = self.loss(logits.float(), batch["mask"])  # float32 under bfloat16 autocast too
        self.log("loss", loss.detach(), prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.confusion = ConfusionMatrix(self.hparams["num_classes"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Accumulate the confusion matrix of the validation region."""
        self.confusion.update(self.network(batch["image"]).argmax(dim=1), batch["mask"])

    def on_validation_epoch_end(self) -> None:
        # mIoU is not a mean of per-rank mIoUs: sum the ranks' counts first.
        self.confusion.all_reduce()
        scores = self.confusion.scores()
        miou = torch.tensor(scores.miou if scores.miou == scores.miou else 0.0)
        self.log("val_miou", miou, prog_bar=True)
        self.log("val_oa", torch.tensor(scores.overall_accuracy if scores.overall_accuracy == scores.overall_accuracy else 0.0))
        self.last_scores = scores
