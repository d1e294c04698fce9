"""A Lightning data module of view pairs drawn from a mosaic."""

from __future__ import annotations

import signal
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.accelerators import CUDAAccelerator
import torch
from torch.utils.data import DataLoader, Sampler

from .mosaic import Mosaic
from .pairs import PairDataset, collate_pairs


class PairDataModule(pl.LightningDataModule):
    """Batches of overlapping view pairs from a mosaic, for pretraining.

    Workers read each pair's union as stored and batch them with
    :func:`~geosscl.data.collate_pairs`; the task cuts the views on its device.
    Each pair is drawn independently by :class:`samplers.OverlappingPairSampler` (a
    file weighted by area, a location uniform in it), so a batch spreads over the
    whole mosaic rather than one neighbourhood. The sampler splits its stream by
    distributed rank itself: use ``Trainer(use_distributed_sampler=False)``. The run
    is one stream of pairs indexed by optimiser step, so a resumed run reads the
    same pairs the uninterrupted run would have.

    Args:
        mosaic: the imagery.
        view_size: side of each view, pixels.
        overlap: range of the overlap fraction.
        scale: range of each view's scale factor.
        batch_size: pairs per batch (per device).
        steps: batches in the whole run (one epoch), to size the stream.
        num_workers: DataLoader worker processes.
        seed: seed of the pair stream.
        across_files: view B from another file that holds the pair, where there is
            one (another date of the place; see :class:`samplers.OverlappingPairSampler`).
        max_nodata: reject views whose nodata fraction exceeds it (see the sampler).
    """

    def __init__(
        self,
        mosaic: Mosaic,
        view_size: int = 128,
        overlap: tuple[float, float] = (0.3, 0.8),
        scale: tuple[float, float] = (0.75, 1.5),
        batch_size: int = 32,
        steps: int = 1000,
        num_workers: int = 0,
        seed: int = 0,
        across_files: bool = False,
        max_nodata: float | None = None,
    ) -> None:
        super().__init__()
        self.across_files, self.max_nodata = across_files, max_nodata
        self.mosaic = mosaic
        self.view_size, self.overlap, self.scale = view_size, overlap, scale
        self.batch_size, self.steps, self.num_workers, self.seed = batch_size, steps, num_workers, seed
        self.sampler: Any = None

    def setup(self, stage: str | None = None) -> None:
        from samplers import OverlappingPairSampler

        world = self.trainer.world_size if self.trainer is not None else 1
        # Built here, after the distributed group exists, so that it splits by rank.
        self.sampler = OverlappingPairSampler(
            self.mosaic, self.view_size, overlap=self.overlap, scale=self.scale,
            length=self.steps * self.batch_size * world, generator=torch.Generator().manual_seed(self.seed),
            across_files=self.across_files, max_nodata=self.max_nodata,
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            PairDataset(self.mosaic, self.view_size),
            sampler=_ContinuedStream(self, self.sampler),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_pairs,
            drop_last=True,
            persistent_workers=self.num_workers > 0,
            # Page-locked batches reach a GPU without a staging copy.
            pin_memory=self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator),
            # Worker seeds from their own generator, not from the global RNG that
            # drives augmentation: a resumed run then augments as the whole run did.
            generator=torch.Generator().manual_seed(self.seed),
            worker_init_fn=_ignore_sigint,
        )


def _ignore_sigint(worker_id: int) -> None:
    """Leave Ctrl-C to the main process, which ends the run after the current step.

    A terminal sends SIGINT to the whole process group: workers that died of it
    would break the step the main process is finishing. They end when it closes the
    loader.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _ContinuedStream(Sampler):
    """The run's one pair stream, continued from the trainer's global step.

    A pretraining run is one stream of ``steps × batch_size`` pairs: every time the
    loader starts (a new epoch, or a resumed run) it skips the pairs of the steps
    already taken. It has no ``set_epoch``, so Lightning's epoch count does not
    reseed the stream.
    """

    def __init__(self, module: PairDataModule, sampler: Any) -> None:
        self.module, self.sampler = module, sampler

    def __iter__(self):
        trainer = self.module.trainer
        self.sampler.start = trainer.global_step * self.module.batch_size if trainer is not None else 0
        self.sampler.set_epoch(0)
        return iter(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
