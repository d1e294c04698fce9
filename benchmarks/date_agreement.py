"""Do pretrained features see one place alike on two dates? Cross-date retrieval of locations.

For each encoder, both dates of one place are run through the frozen network (each
normalised with the encoder's band statistics); at ``--points`` random locations the
features of date 1 are matched, by cosine similarity, against the features of date 2
at the same locations. Top-1 is the fraction of locations whose best match on the
other date is the location itself (both directions averaged; chance is
1/``--points``). The gap is the mean cosine of a location with itself across dates,
less its mean cosine with the other locations. Read at the encoder's stage 1 (stride
2: what the stage-1 classifier of ``geosscl probe`` reads) and at the decoder stride
the consistency losses train (``dense_stride``).

    python benchmarks/date_agreement.py random "same-date=RUN_A/last.ckpt" "across-dates=RUN_B/last.ckpt"

Defaults to the bundled Landsat 7 tile on 1999-11-18 and 2002-04-16
(``sample_data/landsat_tutorial``). Ends with ``name=value`` lines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geosscl.data import Mosaic  # noqa: E402
from geosscl.data.stats import band_statistics  # noqa: E402
from geosscl.models import DEFAULT_DENSE_STRIDE, SegmentationNetwork  # noqa: E402
from geosscl.training import load_checkpoint  # noqa: E402

TUTORIAL = ROOT / "sample_data" / "landsat_tutorial"
DATES = [TUTORIAL / "LE70220491999322EDC01_stack.gtif", TUTORIAL / "LE70220492002106EDC00_stack.gtif"]


def network_of(spec: str, bands: int, dates: list[Path]) -> tuple[str, SegmentationNetwork, list[float], list[float], int]:
    """``(name, network in eval mode, band mean, band std, dense stride)`` of ``NAME=CHECKPOINT`` or ``random``."""
    if spec == "random":
        torch.manual_seed(0)
        mean, std = band_statistics(Mosaic([str(d) for d in dates]))
        return "random", SegmentationNetwork(bands).eval(), mean, std, DEFAULT_DENSE_STRIDE["unet"]
    name, path = spec.split("=", 1)
    checkpoint = load_checkpoint(path)
    hp = checkpoint["hyper_parameters"]
    network = SegmentationNetwork(hp["in_channels"], arch=hp["arch"], encoder=hp["encoder"],
                                  decoder_channels=hp.get("decoder_channels"))
    state = {k[len("network."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("network.")}
    network.load_state_dict(state)
    return name, network.eval(), hp["band_mean"], hp["band_std"], hp["dense_stride"]


def image_of(path: Path, mean: list[float], std: list[float]) -> tuple[torch.Tensor, tuple[int, int]]:
    """The whole file, normalised, nodata as 0 (the band mean), padded to multiples of 32 (``1×C×H×W``), and its
    size before padding."""
    mosaic = Mosaic(str(path))
    image = torch.from_numpy(mosaic.read(tuple(mosaic.index.total_bounds))[0])
    image = (image - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).clamp_min(1e-6).view(-1, 1, 1)
    image = torch.nan_to_num(image, nan=0.0)
    height, width = image.shape[-2:]
    return F.pad(image[None], (0, -width % 32, 0, -height % 32), mode="replicate"), (height, width)


def sample(feature_map: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``N×D`` unit vectors of ``1×D×h×w`` at image pixels (bilinear, pixel centres)."""
    height, width = size
    grid = torch.stack([(cols + 0.5) / width * 2 - 1, (rows + 0.5) / height * 2 - 1], dim=-1).view(1, 1, -1, 2)
    return F.normalize(F.grid_sample(feature_map, grid, mode="bilinear", align_corners=False)[0, :, 0].T, dim=1)


def agreement(first: torch.Tensor, second: torch.Tensor) -> tuple[float, float]:
    """``(top-1 %, cosine gap)`` of two ``N×D`` sets of unit vectors, row ``i`` the same place."""
    cosine = first @ second.T
    target = torch.arange(len(first))
    top1 = ((cosine.argmax(1) == target).float().mean() + (cosine.argmax(0) == target).float().mean()) / 2
    same = cosine.diagonal().mean()
    other = (cosine.sum() - cosine.diagonal().sum()) / (cosine.numel() - len(first))
    return 100 * float(top1), float(same - other)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoders", nargs="+", metavar="random|NAME=CHECKPOINT")
    parser.add_argument("--dates", nargs=2, type=Path, default=DATES, metavar=("DATE1.tif", "DATE2.tif"),
                        help="two rasters of one place on one grid")
    parser.add_argument("--points", type=int, default=500, help="locations matched across the dates")
    parser.add_argument("--draws", type=int, default=5, help="draws of the locations, averaged")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bands = Mosaic(str(args.dates[0])).num_bands
    rows_out = []
    for spec in args.encoders:
        name, network, mean, std, stride = network_of(spec, bands, args.dates)
        maps, size = [], None
        with torch.no_grad():
            for path in args.dates:
                image, size = image_of(path, mean, std)
                encoded = network.encode(image)
                maps.append({"stage 1": encoded[1], f"decoder /{stride}": network.decode(encoded, stride)})
        for key in maps[0]:
            # Distinct cells of the feature map, read at their centres: two locations in
            # one cell would have one feature and could not be told apart.
            cell = (size[0] + -size[0] % 32) / maps[0][key].shape[-2]  # the map's stride, in pixels
            grid_h, grid_w = int(size[0] // cell), int(size[1] // cell)
            count = min(args.points, grid_h * grid_w)
            values = []
            for draw in range(args.draws):
                picked = np.random.default_rng(draw).choice(grid_h * grid_w, count, replace=False)
                rows = torch.from_numpy((picked // grid_w + 0.5) * cell - 0.5).float()
                cols = torch.from_numpy((picked % grid_w + 0.5) * cell - 0.5).float()
                values.append(agreement(sample(maps[0][key], rows, cols, size), sample(maps[1][key], rows, cols, size)))
            top1, gap = np.mean(values, axis=0)
            rows_out.append((name, key, count, top1, gap))
    print("| encoder | features | locations | top-1 % | chance % | cosine gap |")
    print("|---|---|---|---|---|---|")
    for name, key, count, top1, gap in rows_out:
        print(f"| {name} | {key} | {count} | {top1:.1f} | {100 / count:.1f} | {gap:.3f} |")
    for name, key, _, top1, gap in rows_out:
        tag = key.replace(" ", "_").replace("/", "")
        print(f"{name}_{tag}_top1={top1:.2f}")
        print(f"{name}_{tag}_gap={gap:.4f}")


if __name__ == "__main__":
    main()
