"""Regenerate the bundled model, ``sample_data/models/nc_landuse.safetensors``.

A small U-Net (MobileNetV2 encoder, narrow decoder: 4.1 M weights, stored as float16: 8 MB)
SSCCL-pretrained on the bundled NC Landsat scene, then fine-tuned on its land-use
classes (``strata.tif``) outside the held-out eastern third, and evaluated there.
Everything runs on CPU; the budget is wall-clock minutes.

Usage: ``python scripts/bundled_model.py [--pretrain-minutes 15] [--finetune-steps 600] [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from geosscl.evaluation import evaluate
from geosscl.finetuning import FinetuneConfig, finetune
from geosscl.modelfile import load_model, save_model
from geosscl.training import PretrainConfig, pretrain

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "sample_data" / "nc_landsat"
BANDS = [str(DATA / f"lsat7_2000_{b}.tif") for b in (10, 20, 30, 40, 50, 70)]
OUT = ROOT / "sample_data" / "models" / "nc_landuse.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-minutes", type=float, default=15)
    parser.add_argument("--finetune-steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="geosscl-bundled-"))
    network = dict(encoder="mobilenet_v2", decoder_channels=[128, 64, 32, 16, 16])
    run = pretrain(PretrainConfig(imagery=BANDS, out=str(work / "pretrain"), max_steps=None,
                                  max_time=args.pretrain_minutes, crop_size=64, batch_size=16, num_workers=0, seed=0,
                                  dense_stride=4,  # the shipped file's recipe (made before the default became 16)
                                  quiet=True, **network))
    trained = finetune(FinetuneConfig(
        imagery=BANDS, labels=[str(DATA / "strata.tif")], classes=str(DATA / "classes.yaml"),
        out=str(work / "model.safetensors"), init=f"{run}/last.ckpt", holdout_region=str(DATA / "test_region.geojson"),
        crop_size=64, batch_size=16, max_steps=args.finetune_steps, num_workers=0, seed=0, quiet=True,
    ))
    scores, info = evaluate(trained, BANDS, [str(DATA / "strata.tif")], region=str(DATA / "test_region.geojson"))
    info.provenance["test"] = {"region": "sample_data/nc_landsat/test_region.geojson", "miou": scores.miou,
                               "overall_accuracy": scores.overall_accuracy, "kappa": scores.kappa}
    info.provenance["recipe"] = {"script": "scripts/bundled_model.py", "pretrain_minutes": args.pretrain_minutes,
                                 "finetune_steps": args.finetune_steps, "threads": args.threads}
    info.provenance["imagery"] = [Path(p).relative_to(ROOT).as_posix() for p in info.provenance["imagery"]]
    info.provenance["labels"] = ["sample_data/nc_landsat/strata.tif"]
    info.provenance["init"] = "SSCCL pretraining (scripts/bundled_model.py)"
    info.provenance.pop("settings", None)
    net, _ = load_model(trained)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_model(args.out, net, info, overwrite=True, half=True)
    print(json.dumps({"out": args.out, "bytes": Path(args.out).stat().st_size, **info.provenance["test"]}, indent=1))


if __name__ == "__main__":
    main()
