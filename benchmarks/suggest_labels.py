"""Where to label next: tiles ``geosscl suggest`` picks against tiles drawn at random, at equal label budgets.

On the bundled NC Landsat scene, whose land-use raster is complete, so it can answer
for any tile (an oracle). For each seed and each encoder (random, or pretraining
checkpoints given as NAME=PATH):

1. ``--start`` of the candidate tiles (``--tile`` px squares of the scene's grid with
   input everywhere, labelled, not touching the test region) are drawn at random and
   their labels kept: a user's first few annotated tiles;
2. the stage-1 classifier of the frozen encoder (``geosscl probe --weight-decay 1e-3
   --val-fraction 0 -o MODEL``, every label training it) is fitted on them and scored in
   the test region;
3. ``--add`` more tiles are labelled, chosen (a) at random among the tiles left, or
   (b) by :func:`geosscl.suggestions.suggest` with that model and the labels so far
   (``--exclude`` the test region, ``--spacing`` as given); a classifier is fitted on
   each enlarged set and scored the same way. ``--rounds`` repeats step 3, each round
   suggesting with the model of the round before.

Prints a Markdown table (mIoU mean ± std over seeds, per seed in brackets; labelled pixels)
and ``name=value`` lines.

Usage: ``python benchmarks/suggest_labels.py SSCCL=run/last.ckpt --seeds 0,1,2,3,4,5,6,7,8,9 --tile 32 --start 0.025 --add 0.025``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import shapely
import torch

from geosscl.evaluation import evaluate
from geosscl.finetuning import FinetuneConfig
from geosscl.probing import linear_probe
from geosscl.splits import read_region
from geosscl.suggestions import suggest
from report import print_values
from scenes import SCENES, TESTS, named_encoders, test_region

SCENE = SCENES["nc"]


class Oracle:
    """The complete class raster, cut into ``tile`` px squares of its grid; writes the labels of chosen tiles."""

    def __init__(self, tile: int, test: str) -> None:
        with rasterio.open(SCENE.labels[0]) as src:
            self.profile = src.profile
            self.truth = src.read(1)
            self.nodata = src.nodata
            self.transform = src.transform
            crs = src.crs
        with rasterio.open(SCENE.imagery[0]) as src:
            # The imagery's grid is the class raster's (another definition of the same CRS), so a
            # tile of suggest's grid is a block of this array.
            assert src.transform == self.transform and src.shape == self.truth.shape
            valid = np.ones(src.shape, bool)
            for path in SCENE.imagery:
                with rasterio.open(path) as band:
                    valid &= band.read_masks(1) > 0
        self.tile = tile
        self.rows, self.cols = self.truth.shape[0] // tile, self.truth.shape[1] // tile
        held_out = read_region(test, crs)
        candidates = []
        for r in range(self.rows):
            for c in range(self.cols):
                window = np.s_[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile]
                box = shapely.box(*rasterio.windows.bounds(rasterio.windows.Window(c * tile, r * tile, tile, tile), self.transform))
                if valid[window].all() and (self.truth[window] != self.nodata).any() and not box.intersects(held_out):
                    candidates.append((r, c))
        self.candidates = candidates

    def tile_at(self, x: float, y: float) -> tuple[int, int]:
        """The tile holding the map point ``(x, y)``."""
        col, row = ~self.transform * (x, y)
        return int(row // self.tile), int(col // self.tile)

    def write(self, tiles: set[tuple[int, int]], path: str) -> int:
        """Write the labels of ``tiles`` (nodata elsewhere) to ``path``; return the labelled pixels."""
        keep = np.zeros(self.truth.shape, bool)
        for r, c in tiles:
            keep[r * self.tile:(r + 1) * self.tile, c * self.tile:(c + 1) * self.tile] = True
        data = np.where(keep, self.truth, self.nodata).astype(self.truth.dtype)
        with rasterio.open(path, "w", **self.profile) as dst:
            dst.write(data, 1)
        return int((keep & (self.truth != self.nodata)).sum())


def fit(init: str, labels: str, model: str, test: str, seed: int) -> float:
    """mIoU (%) in ``test`` of the stage-1 classifier of ``init`` fitted on every label of ``labels``; writes ``model``."""
    config = FinetuneConfig(imagery=SCENE.imagery, labels=[labels], classes=SCENE.classes, init=init, out=model,
                            overwrite=True, label_fraction=1.0, val_fraction=0.0, crop_size=32, seed=seed)
    linear_probe(config, weight_decay=1e-3)
    # Scored against the whole class raster, by the tiled inference predict runs.
    scores, _ = evaluate(model, SCENE.imagery, SCENE.labels, region=test)
    return 100 * scores.miou


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoders", nargs="*", metavar="NAME=CHECKPOINT", help="pretraining checkpoints")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--tile", type=int, default=32, help="tile side, pixels")
    parser.add_argument("--start", type=float, default=0.025, help="share of the candidate tiles labelled at first")
    parser.add_argument("--add", type=float, default=0.025, help="share of the candidate tiles added each round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--spacing", type=int, default=1, help="suggest's --spacing")
    parser.add_argument("--test", default="blocks", choices=TESTS, help="test region")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoders = named_encoders(parser, args.encoders)
    seeds = [int(s) for s in args.seeds.split(",")]
    scratch = tempfile.TemporaryDirectory(prefix="geosscl-suggest-")
    folder = Path(scratch.name)
    test = test_region(args.test, folder)
    oracle = Oracle(args.tile, test)
    first = max(1, round(args.start * len(oracle.candidates)))
    more = max(1, round(args.add * len(oracle.candidates)))
    print(f"# {SCENE.name}, test region {args.test}; {len(oracle.candidates)} candidate tiles of {args.tile} px; "
          f"{first} drawn at first, {more} added per round ({args.rounds}); spacing {args.spacing}; seeds {seeds}; "
          f"{args.threads} torch thread(s); stage-1 classifier, L2 1e-3, every label training")
    columns = ["start"] + [f"{kind}, round {k}" for k in range(1, args.rounds + 1) for kind in ("random", "suggested")]
    print("\n| encoder | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns), flush=True)
    final = {}
    for name, init in encoders.items():
        begin = time.time()
        scores: dict[str, list[float]] = {c: [] for c in columns}
        pixels: dict[str, list[int]] = {c: [] for c in columns}
        for seed in seeds:
            rng = np.random.default_rng(seed)
            order = rng.permutation(len(oracle.candidates))
            start = {oracle.candidates[i] for i in order[:first]}
            labels, model = str(folder / "labels.tif"), str(folder / "model.safetensors")
            pixels["start"].append(oracle.write(start, labels))
            scores["start"].append(fit(init, labels, model, test, seed))
            drawn = rng.permutation(len(oracle.candidates))  # the random arm's draws, the same for every round
            at_random, suggested = set(start), set(start)
            suggest_model = model
            for k in range(1, args.rounds + 1):
                left = [oracle.candidates[i] for i in drawn if oracle.candidates[i] not in at_random]
                at_random |= set(left[:more])
                pixels[f"random, round {k}"].append(oracle.write(at_random, labels))
                scores[f"random, round {k}"].append(fit(init, labels, str(folder / "random.safetensors"), test, seed))
                oracle.write(suggested, labels)
                frame = suggest(suggest_model, SCENE.imagery, str(folder / "suggested.gpkg"), count=more,
                                tile_size=args.tile, spacing=args.spacing, min_valid=1.0, labels=[labels],
                                exclude=test, overwrite=True)
                for centre in frame.geometry.centroid:
                    suggested.add(oracle.tile_at(centre.x, centre.y))
                pixels[f"suggested, round {k}"].append(oracle.write(suggested, labels))
                suggest_model = str(folder / "suggest.safetensors")
                scores[f"suggested, round {k}"].append(fit(init, labels, suggest_model, test, seed))
        cells = [f"{statistics.mean(v):.1f} ± {statistics.pstdev(v):.1f} [{' '.join(f'{s:.1f}' for s in v)}] "
                 f"({statistics.mean(pixels[c]):,.0f} px)" for c, v in scores.items()]
        print(f"| {name} | " + " | ".join(cells) + f" |  <!-- {time.time() - begin:.0f} s -->", flush=True)
        for c, v in scores.items():
            final[f"suggest_miou_{name}_{c.replace(', round ', '_r').replace(' ', '_')}"] = statistics.mean(v)
        for k in range(1, args.rounds + 1):
            gain = [s - r for s, r in zip(scores[f"suggested, round {k}"], scores[f"random, round {k}"])]
            print(f"<!-- {name}, round {k}: suggested minus random per seed: {' '.join(f'{g:+.1f}' for g in gain)} -->")
    print_values(final)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
