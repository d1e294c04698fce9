"""Training throughput of SSCCL against TorchGeo's MoCoTask, and the cost of the consistency branch.

All run in this process on the same real batches (pairs of 4-band NAIP views),
same encoder (ResNet-18), crop and batch size, through a Lightning Trainer on the
CPU (or the GPU when present):

* ``MoCoTask`` (TorchGeo 0.8.1, MoCo v2, its own augmentations on the batch);
* SSCCL instance-only (weights instance=1, spatial=0, semantic=0): encoder only;
* SSCCL full (instance + spatial + semantic): encoder and decoder to ``--dense-stride`` (16);
* SSCCL full with ``--precision bf16`` (forward passes under bfloat16 autocast; skipped on a
  GPU without bfloat16). ``bf16_vs_32`` is its images per second over float32's: measure it
  before choosing bf16 on a CPU without AVX512-BF16 or AMX, which has no bfloat16 arithmetic.

It also counts the floating-point operations of the decoder stages the consistency
branch runs against the encoder's (``decoder_flops_vs_encoder``): where a step's time
follows its convolutions, that ratio is what the branch costs, whatever the losses do.

Images per second count the samples of a batch (a pair, or an image MoCo turns
into two views). Usage: ``python benchmarks/pretrain_step.py [--batch 16] [--crop 128] [--steps 12] [--dense-stride 16]``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchgeo.trainers import MoCoTask

from geosscl import Mosaic, PairDataset
from geosscl.data import collate_pairs, cut_views
from geosscl.data.stats import band_statistics
from geosscl.models import SegmentationNetwork
from geosscl.precision import LIGHTNING_PRECISION, bf16_runs_faster
from geosscl.tasks import SSCCLTask
from samplers import OverlappingPairSampler

NAIP = Path(__file__).resolve().parent.parent / "sample_data" / "naip" / "m_4709963_se_14_1_20200831.tif"


class StepTimer(pl.Callback):
    """Wall time of the steps after ``warmup``, end of one step to end of the next.

    Measured end to end, not from ``on_train_batch_start``: Lightning calls the
    task's ``on_after_batch_transfer`` (where SSCCL cuts and augments its views)
    before that hook, while MoCoTask augments inside ``training_step``; timing from
    the start hook would leave SSCCL's augmentation out and MoCo's in.
    """

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self.last = warmup, [], 0.0

    def on_train_batch_end(self, trainer, *args) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # kernels run asynchronously: count a step when its work is done
        now = time.perf_counter()
        if trainer.global_step > self.warmup:
            self.times.append(now - self.last)
        self.last = now


def images_per_s(task: pl.LightningModule, batches: list, warmup: int, precision: str = "32-true") -> float:
    timer = StepTimer(warmup)
    trainer = pl.Trainer(max_steps=len(batches), accelerator="auto", devices=1, logger=False, callbacks=[timer],
                         precision=precision,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, train_dataloaders=DataLoader(batches, batch_size=None))
    batch = len(batches[0]["image"]) if "image" in batches[0] else len(batches[0]["box_a"])
    return batch * len(timer.times) / sum(timer.times)


def decoder_flops_vs_encoder(crop: int, stride: int) -> float:
    """FLOPs of the decoder up to ``stride`` over the encoder's, one forward pass."""
    # Evaluation mode: one image of 32 px reaches the deepest stage as 1×1, which training-mode batch norm refuses;
    # the FLOPs are the same.
    network = SegmentationNetwork(4).eval()
    x = torch.zeros(1, 4, crop, crop)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            features = network.encode(x)
        encoder = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            network.decode(features, stride)
    return counter.get_total_flops() / encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dense-stride", type=int, default=16, help="decoder stride of the dense features (geosscl's default: 16)")
    args = parser.parse_args()

    torch.manual_seed(0)
    mosaic = Mosaic(NAIP)
    mean, std = band_statistics(mosaic)
    sampler = OverlappingPairSampler(mosaic, args.crop, scale=(0.75, 1.5), length=args.batch * args.steps,
                                     generator=torch.Generator().manual_seed(0))
    dataset = PairDataset(mosaic, args.crop)
    pairs = list(sampler)
    # SSCCL gets what its data module gives (unions; it cuts the views itself, as in training).
    ssccl_batches = [collate_pairs([dataset[p] for p in pairs[i : i + args.batch]])
                     for i in range(0, len(pairs), args.batch)]
    # MoCo gets the same imagery, normalised the same way, NaN-free, one image a sample.
    norm = lambda x: ((x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)).nan_to_num(0)
    moco_batches = [{"image": norm(cut_views(b, args.crop)["image_a"])} for b in ssccl_batches]

    common = dict(in_channels=4, band_mean=mean, band_std=std, rgb=True, view_size=args.crop, queue_size=1024,
                  dense_stride=args.dense_stride)
    rates = {}
    rates["moco"] = images_per_s(
        MoCoTask(model="resnet18", in_channels=4, version=2, size=args.crop, memory_bank_size=1024, lr=0.01),
        moco_batches, args.warmup)
    rates["instance"] = images_per_s(
        SSCCLTask(**common, instance_weight=1, spatial_weight=0, semantic_weight=0), ssccl_batches, args.warmup)
    rates["ssccl"] = images_per_s(SSCCLTask(**common), ssccl_batches, args.warmup)
    bf16 = bf16_runs_faster("auto")  # where geosscl refuses bf16 (slower than float32), it is not timed
    if bf16:
        rates["ssccl_bf16"] = images_per_s(SSCCLTask(**common), ssccl_batches, args.warmup, LIGHTNING_PRECISION["bf16"])

    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"# ResNet-18 U-Net, dense stride {args.dense_stride}, {args.crop} px, batch {args.batch}, "
          f"{args.steps - args.warmup} timed steps on {device}")
    print("# targets: ratio_vs_moco >= 0.8, consistency_overhead <= 0.25")
    print(f"moco_images_per_s={rates['moco']:.2f}")
    print(f"instance_only_images_per_s={rates['instance']:.2f}")
    print(f"images_per_s={rates['ssccl']:.2f}")
    print(f"decoder_flops_vs_encoder={decoder_flops_vs_encoder(args.crop, args.dense_stride):.3f}")
    print(f"ratio_vs_moco={rates['ssccl'] / rates['moco']:.3f}")
    print(f"consistency_overhead={rates['instance'] / rates['ssccl'] - 1:.3f}")
    if bf16:
        print(f"bf16_images_per_s={rates['ssccl_bf16']:.2f}")
        print(f"bf16_vs_32={rates['ssccl_bf16'] / rates['ssccl']:.3f}")


if __name__ == "__main__":
    main()
