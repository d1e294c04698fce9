"""Segmentation metrics from one confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from .data.labels import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates ``num_classes × num_classes`` counts (rows: truth, columns: prediction).

    Pixels whose truth is :data:`~geosscl.data.IGNORE_INDEX` are not counted.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: Tensor, truth: Tensor) -> None:
        """Add integer maps of the same shape."""
        keep = truth != IGNORE_INDEX
        t, p = truth[keep].to(torch.int64).cpu(), prediction[keep].to(torch.int64).cpu()
        if t.numel() and (t.min() < 0 or t.max() >= self.num_classes):
            raise ValueError(f"label {int(t.max())} outside 0..{self.num_classes - 1}")
        self.counts += torch.bincount(t * self.num_classes + p, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )

    def all_reduce(self) -> None:
        """Sum the counts of all processes of the default process group (no-op without one)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            counts = self.counts.to("cuda" if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(counts)
            self.counts = counts.cpu()

    def scores(self) -> Scores:
        """Metrics of what was accumulated; classes absent from the truth are left out of the means."""
        c = self.counts.to(torch.float64)
        tp = c.diag()
        truth, predicted, total = c.sum(1), c.sum(0), c.sum()
        union = truth + predicted - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.nan)
        f1 = torch.where(truth + predicted > 0, 2 * tp / (truth + predicted).clamp_min(1), torch.nan)
        present = truth > 0
        oa = float(tp.sum() / total) if total > 0 else float("nan")
        expected = float((truth * predicted).sum() / total**2) if total > 0 else float("nan")
        kappa = (oa - expected) / (1 - expected) if total > 0 and expected < 1 else float("nan")
        return Scores(
            miou=float(iou[present].mean()) if present.any() else float("nan"),
            iou=iou.tolist(),
            f1=f1.tolist(),
            mean_f1=float(f1[present].mean()) if present.any() else float("nan"),
            overall_accuracy=oa,
            kappa=kappa,
            confusion=self.counts.tolist(),
        )


@dataclass
class Scores:
    """Metrics of a segmentation: per-class lists are indexed by class id (NaN: class never seen)."""

    miou: float
    iou: list[float]
    f1: list[float]
    mean_f1: float
    overall_accuracy: float
    kappa: float
    confusion: list[list[int]]
    #: the labelled pixels scored where the model was ``trained``, ``validated`` and neither
    #: (``held_out``), where its model file records that ground (``geosscl evaluate``); else None
    ground: dict[str, int] | None = None
