"""Fine-tuning throughput: geosscl's segmentation task in float32 and in bfloat16, beside TorchGeo's.

All run in this process on the same real batches: crops of the bundled NC Landsat scene
(6 bands) with its land-use labels (`strata.tif`), drawn by ``geosscl.finetuning``'s own
loaders as ``geosscl finetune`` draws them, through a Lightning Trainer on the CPU (or
the GPU when present):

* TorchGeo 0.8.1's ``SemanticSegmentationTask`` (U-Net, ResNet-18, cross-entropy), float32,
  on the same images normalised the same way: the peer;
* geosscl's ``SegmentationTask`` (the same network; augments image and mask on the batch), float32;
* the same with ``--precision bf16`` (bfloat16 autocast; skipped on a GPU without bfloat16).
  ``bf16_vs_32`` is its images per second over float32's: measure it before choosing bf16 on
  a CPU without AVX512-BF16 or AMX, which has no bfloat16 arithmetic.

Usage: ``python benchmarks/finetune_step.py [--batch 16] [--crop 64] [--steps 12]``.
"""

from __future__ import annotations

import argparse
import itertools

import torch
from torchgeo.trainers import SemanticSegmentationTask

from geosscl.data.labels import IGNORE_INDEX
from geosscl.finetuning import FinetuneConfig, loaders, prepare
from geosscl.tasks import SegmentationTask
from geosscl.precision import LIGHTNING_PRECISION, bf16_runs_faster
from pretrain_step import images_per_s
from scenes import SCENES


class TorchGeoTask(SemanticSegmentationTask):
    """TorchGeo's task without its ReduceLROnPlateau, which waits for a ``val_loss`` at each epoch's
    end: these timing runs have no validation. The optimiser (AdamW) and its rate are the task's."""

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=64, help="crop side, pixels (multiple of 32)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    scene = SCENES["nc"]
    config = FinetuneConfig(imagery=scene.imagery, labels=scene.labels, classes=scene.classes, **scene.label_settings,
                            crop_size=args.crop, batch_size=args.batch, num_workers=0, quiet=True)
    setup = prepare(config)
    train_loader, _ = loaders(config, setup, args.steps)
    batches = [{"image": b["image"].float(), "mask": b["mask"]} for b in itertools.islice(train_loader, args.steps)]
    mean = torch.tensor(setup.band_mean).view(1, -1, 1, 1)
    std = torch.tensor(setup.band_std).view(1, -1, 1, 1)
    # TorchGeo's task normalises nothing itself: it gets the images as geosscl's task makes them.
    peer_batches = [{"image": ((b["image"] - mean) / std).nan_to_num(0), "mask": b["mask"]} for b in batches]
    bands = len(setup.band_mean)

    def ours() -> SegmentationTask:
        torch.manual_seed(0)
        return SegmentationTask(bands, setup.num_classes, setup.band_mean, setup.band_std)

    torch.manual_seed(0)
    peer = TorchGeoTask(model="unet", backbone="resnet18", weights=None, in_channels=bands,
                        num_classes=setup.num_classes, loss="ce", ignore_index=IGNORE_INDEX)
    rates = {"torchgeo": images_per_s(peer, peer_batches, args.warmup),
             "geosscl": images_per_s(ours(), batches, args.warmup)}
    bf16 = bf16_runs_faster("auto")  # where geosscl refuses bf16 (slower than float32), it is not timed
    if bf16:
        rates["bf16"] = images_per_s(ours(), batches, args.warmup, LIGHTNING_PRECISION["bf16"])

    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"# ResNet-18 U-Net, {bands} bands, {setup.num_classes} classes, {args.crop} px, batch {args.batch}, "
          f"{args.steps - args.warmup} timed steps on {device}")
    print(f"torchgeo_images_per_s={rates['torchgeo']:.2f}")
    print(f"images_per_s={rates['geosscl']:.2f}")
    print(f"ratio_vs_torchgeo={rates['geosscl'] / rates['torchgeo']:.3f}")
    if bf16:
        print(f"bf16_images_per_s={rates['bf16']:.2f}")
        print(f"bf16_vs_32={rates['bf16'] / rates['geosscl']:.3f}")


if __name__ == "__main__":
    main()
