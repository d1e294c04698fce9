"""SSCCL pretraining of an encoder + decoder as a Lightning task."""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim import AdamW
from torchgeo.trainers import BaseTask

from .. import __version__
from ..augment import JITTERS, BandStats, PairAugmentation
from ..correspondence import map_to_view, overlap_grid, sample_at, usable
from ..data.pairs import cut_views
from ..errors import GeossclError
from ..losses import MaskedInfoNCE, boxes_intersect, grid_points_near
from ..models import DEFAULT_DENSE_STRIDE, DenseHead, InstanceHead, SegmentationNetwork
from ..versions import software

#: Marks checkpoints written by this task (checked before resuming).
CHECKPOINT_KIND = "geosscl-pretrain"


class SSCCLTask(BaseTask):
    """Spatial and semantic consistency contrastive learning (reconstructed; see docs/method.md).

    ``L = w_instance · L_instance + w_spatial · L_spatial + w_semantic · L_semantic``:

    * instance: MoCo v2 InfoNCE between the pooled encoder features of the two views
      (online network on view A, momentum network on view B), with a queue of past
      keys and the batch's other keys as negatives;
    * spatial: dense InfoNCE at a k×k grid of map points in the overlap (decoder
      features sampled there, then projected by a 1×1-conv head); the positive of a
      point is the same point in the other view, negatives are the other points of
      every view in the batch;
    * semantic: InfoNCE between the overlap region's pooled dense features in the two
      views, other pairs' regions as negatives.

    The decoder is trained up to ``dense_stride``; its finer stages and the
    segmentation head are left for fine-tuning (frozen here).

    Negatives that are the same ground location (another pair overlapping this one,
    a queued key from an overlapping place, a point within half a grid cell) are
    excluded. A weight of 0 switches its term off, so instance-only and
    consistency-only runs are this same code.

    Args:
        in_channels: number of bands.
        band_mean: per-band mean of the mosaic (normalisation).
        band_std: per-band standard deviation.
        band_names: what each band is, where the imagery names it (kept so that fine-tuning can
            check it is given the same bands in the same order; see :attr:`ModelInfo.band_names`).
        nodata: the imagery's nodata value given over its files' own (kept so that fine-tuning
            from the run reads the imagery alike; see :attr:`ModelInfo.nodata`).
        rgb: whether bands 1–3 are red, green, blue (enables grayscale augmentation).
        jitter: brightness/contrast jitter per ``"band"``, per ``"image"`` or ``"none"``
            (see :class:`~geosscl.augment.PairAugmentation`).
        arch: ``"unet"`` or ``"deeplabv3plus"``.
        encoder: ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` or ``"mobilenet_v2"``.
        decoder_channels: U-Net decoder widths (default smp's).
        view_size: side of each view, pixels (a multiple of 32).
        dense_stride: decoder stride the dense features are taken at (None: U-Net 16,
            DeepLabV3+ 4; see ``DEFAULT_DENSE_STRIDE``).
        grid_size: k, points per side of the overlap grid.
        instance_weight: weight of the instance term.
        spatial_weight: weight of the spatial consistency term.
        semantic_weight: weight of the semantic consistency term.
        temperature: InfoNCE temperature of all three terms.
        queue_size: number of past keys kept as instance negatives.
        momentum: EMA factor of the momentum network.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        projection_dim: output size of both heads.
    """

    ignore = ()
    monitor = "loss"

    def __init__(
        self,
        in_channels: int,
        band_mean: list[float],
        band_std: list[float],
        band_names: list[str | None] | None = None,
        nodata: float | None = None,
        rgb: bool = False,
        jitter: str = "band",
        arch: str = "unet",
        encoder: str = "resnet18",
        decoder_channels: list[int] | None = None,
        view_size: int = 128,
        dense_stride: int | None = None,
        grid_size: int = 8,
        instance_weight: float = 1.0,
        spatial_weight: float = 1.0,
        semantic_weight: float = 0.5,
        temperature: float = 0.2,
        queue_size: int = 4096,
        momentum: float = 0.99,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        projection_dim: int = 128,
    ) -> None:
        if dense_stride is None:
            dense_stride = DEFAULT_DENSE_STRIDE.get(arch, 4)  # saved as the number (hyperparameters are read from here)
        weights = (instance_weight, spatial_weight, semantic_weight)
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise GeossclError(f"weights: need at least one positive weight and none negative, got instance={instance_weight}, spatial={spatial_weight}, semantic={semantic_weight}")
        if view_size % 32:
            raise GeossclError(f"crop_size: {view_size} is not a multiple of 32 (the encoder's total stride)")
        if len(band_mean) != in_channels or len(band_std) != in_channels:
            raise GeossclError(f"band statistics: {len(band_mean)} means for {in_channels} bands")
        if jitter not in JITTERS:
            raise GeossclError(f"jitter: {jitter!r} is not one of {', '.join(JITTERS)}")
        super().__init__()

    # -- BaseTask hooks ---------------------------------------------------------

    def configure_models(self) -> None:
        """Online network and heads, their momentum copies, the queue."""
        h = self.hparams
        self.network = SegmentationNetwork(h["in_channels"], arch=h["arch"], encoder=h["encoder"],
                                           decoder_channels=h.get("decoder_channels"))
        dense = h["spatial_weight"] > 0 or h["semantic_weight"] > 0
        for module in self.network.modules_beyond(h["dense_stride"] if dense else None):
            module.requires_grad_(False)  # never reached by these losses
        self.instance_head = InstanceHead(self.network.encoder_channels, out=h["projection_dim"])
        self.dense_head = DenseHead(self.network.dense_channels(h["dense_stride"]), out=h["projection_dim"])
        self.instance_head.requires_grad_(h["instance_weight"] > 0)
        self.dense_head.requires_grad_(dense)
        self.momentum_network = copy.deepcopy(self.network).requires_grad_(False)
        self.momentum_instance_head = copy.deepcopy(self.instance_head).requires_grad_(False)
        self.momentum_dense_head = copy.deepcopy(self.dense_head).requires_grad_(False)
        self.normalise = BandStats(torch.tensor(h["band_mean"]), torch.tensor(h["band_std"]))
        self.augment = PairAugmentation(rgb=h["rgb"], jitter=h.get("jitter", "band"))
        queue = torch.nn.functional.normalize(torch.randn(h["queue_size"], h["projection_dim"]), dim=1)
        self.register_buffer("queue", queue)
        # Union box of the pair each queued key came from; NaN boxes intersect nothing.
        self.register_buffer("queue_boxes", torch.full((h["queue_size"], 4), float("nan"), dtype=torch.float64))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))

    def configure_losses(self) -> None:
        """One masked InfoNCE per term."""
        t = self.hparams["temperature"]
        self.instance_loss = MaskedInfoNCE(t)
        self.spatial_loss = MaskedInfoNCE(t)
        self.semantic_loss = MaskedInfoNCE(t)

    def configure_optimizers(self) -> Any:
        """AdamW over the online network and heads."""
        params = [p for p in self.parameters() if p.requires_grad]
        return AdamW(params, lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"])

    # -- data on the device -----------------------------------------------------

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Cut both views from the pairs' unions, normalise and augment them on the training device, batched."""
        batch = cut_views(batch, self.hparams["view_size"])
        for view in ("a", "b"):
            images, valid = self.normalise(batch[f"image_{view}"])
            images, valid, matrix = self.augment(images, valid)
            batch[f"view_{view}"], batch[f"valid_{view}"], batch[f"matrix_{view}"] = images, valid, matrix
        return batch

    # -- training ---------------------------------------------------------------

    @property
    def _dense(self) -> bool:
        return self.hparams["spatial_weight"] > 0 or self.hparams["semantic_weight"] > 0

    def _embed(self, images: Tensor, momentum: bool) -> tuple[Tensor, Tensor | None]:
        """Instance embedding ``B×P`` and decoder features ``B×D×h×w`` (None if unused)."""
        network = self.momentum_network if momentum else self.network
        instance_head = self.momentum_instance_head if momentum else self.instance_head
        encoded = network.encode(images)
        dense = network.decode(encoded, self.hparams["dense_stride"]) if self._dense else None
        embedding = instance_head(encoded[-1])
        # Under bf16 autocast the losses (similarities over a temperature, the float32 queue) stay float32.
        return embedding.float(), None if dense is None else dense.float()

    @torch.no_grad()
    def _momentum_update(self) -> None:
        m = self.hparams["momentum"]
        pairs = [
            (self.network, self.momentum_network),
            (self.instance_head, self.momentum_instance_head),
            (self.dense_head, self.momentum_dense_head),
        ]
        for online, target in pairs:
            for p, q in zip(online.parameters(), target.parameters()):
                q.mul_(m).add_(p.detach(), alpha=1 - m)
            for b, c in zip(online.buffers(), target.buffers()):
                c.copy_(b)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One SSCCL step on a batch of pairs."""
        self._momentum_update()
        losses, keys, union = self._losses(batch, use_queue=True)
        self._enqueue(keys, union)
        return self._log_losses(losses, "", len(batch["box_a"]))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """The same losses without the queue and without updating anything."""
        losses, _, _ = self._losses(batch, use_queue=False)
        return self._log_losses(losses, "val_", len(batch["box_a"]))

    def _log_losses(self, losses: dict[str, Tensor], prefix: str, batch_size: int) -> Tensor:
        total = sum(self.hparams.get(f"{name}_weight", 1.0) * value for name, value in losses.items())
        for name, value in losses.items():
            self.log(f"{prefix}loss_{name}", value.detach(), prog_bar=not prefix, batch_size=batch_size)
        self.log(f"{prefix}loss", total.detach(), prog_bar=True, batch_size=batch_size)
        return total

    def _losses(self, batch: dict[str, Any], use_queue: bool) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Loss terms, the momentum keys of view B and the pairs' union boxes."""
        h = self.hparams
        size = h["view_size"]
        union = torch.cat([torch.minimum(batch["box_a"][:, :2], batch["box_b"][:, :2]),
                           torch.maximum(batch["box_a"][:, 2:], batch["box_b"][:, 2:])], dim=1)  # B×4
        same_place = boxes_intersect(union, union)  # B×B

        # One direction, as MoCo: the online network sees view A, the momentum network
        # view B. Views are drawn symmetrically, so A→B covers B→A in expectation, at
        # half the cost of symmetrising every term.
        query, dense_query = self._embed(batch["view_a"], momentum=False)
        with torch.no_grad():
            key, dense_key = self._embed(batch["view_b"], momentum=True)

        losses: dict[str, Tensor] = {}
        if h["instance_weight"] > 0:
            if use_queue:
                queue, exclude = self.queue.clone(), torch.cat([same_place, boxes_intersect(union, self.queue_boxes)], 1)
            else:
                queue, exclude = None, same_place
            losses["instance"] = self.instance_loss(query, key, queue, exclude)
        if self._dense:
            points = overlap_grid(batch["overlap"], h["grid_size"])  # B×k×k×2, map units
            coords_a = map_to_view(points, batch["box_a"], size, batch["matrix_a"])
            coords_b = map_to_view(points, batch["box_b"], size, batch["matrix_b"])
            valid = usable(coords_a, batch["valid_a"]) & usable(coords_b, batch["valid_b"])  # B×k×k
            # The dense head is pointwise: project the k×k sampled features only, not the
            # whole map (a fraction of the cost, same role).
            fa = self.dense_head(sample_at(dense_query, coords_a)).permute(0, 2, 3, 1)  # B×k×k×P
            with torch.no_grad():
                kb = self.momentum_dense_head(sample_at(dense_key, coords_b)).permute(0, 2, 3, 1)
            if h["spatial_weight"] > 0 and valid.any():
                # Only the same ground point (within half a grid cell, in any pair) is kept out.
                # Neighbours closer than one feature cell stay negatives although the coarse map
                # can barely tell them apart: keeping them out was measured worse (README, "The
                # spatial term's near negatives").
                cell = (batch["overlap"][:, 2:] - batch["overlap"][:, :2]).amin(dim=1) / h["grid_size"]
                exclude = grid_points_near(points, valid, batch["overlap"], cell / 2)
                losses["spatial"] = self.spatial_loss(fa[valid], kb[valid], exclude=exclude)
            if h["semantic_weight"] > 0:
                counted = valid.flatten(1).any(dim=1)
                if counted.sum() > 1:
                    region = _region_means(valid)
                    exclude = same_place[counted][:, counted]
                    losses["semantic"] = self.semantic_loss(region(fa)[counted], region(kb)[counted], exclude=exclude)
        if not losses:
            # Nothing to contrast in this batch (no valid overlap point): a zero that keeps the graph.
            losses["none"] = query.sum() * 0.0
        return losses, key.detach(), union

    @torch.no_grad()
    def _enqueue(self, keys: Tensor, boxes: Tensor) -> None:
        if self.trainer is not None and self.trainer.world_size > 1:
            keys = self.all_gather(keys).flatten(0, 1)
            boxes = self.all_gather(boxes).flatten(0, 1)
        size = self.queue.shape[0]
        start = int(self.queue_pointer)
        index = (torch.arange(keys.shape[0], device=keys.device) + start) % size
        self.queue[index] = torch.nn.functional.normalize(keys, dim=1)
        self.queue_boxes[index] = boxes.to(self.queue_boxes.dtype)
        self.queue_pointer.fill_((start + keys.shape[0]) % size)

    # -- checkpoints --------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Mark the checkpoint and keep the random states, so a resumed run continues exactly."""
        checkpoint["geosscl"] = {"kind": CHECKPOINT_KIND, "version": __version__, "software": software()}
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [int(v) for v in np.random.get_state()[1]],
            "numpy_pos": int(np.random.get_state()[2]),
            "python": list(random.getstate()[1]),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the random states saved by :meth:`on_save_checkpoint`."""
        rng = checkpoint.get("rng")
        if not rng:
            return
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(("MT19937", np.array(rng["numpy"], dtype=np.uint32), rng["numpy_pos"], 0, 0.0))
        random.setstate((3, tuple(rng["python"]), None))


def _region_means(valid: Tensor):
    """A function giving each pair's mean feature over its valid overlap points."""
    weight = valid.to(torch.float32)[..., None]  # B×k×k×1
    count = weight.sum(dim=(1, 2)).clamp_min(1.0)

    def mean(features: Tensor) -> Tensor:
        return (features * weight.to(features.dtype)).sum(dim=(1, 2)) / count.to(features.dtype)

    return mean
