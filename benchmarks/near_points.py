"""Cost of the spatial term's exclusion mask: which grid points are the same ground point.

The spatial InfoNCE keeps out, as negatives, grid points within half a grid cell of the
anchor (the same place seen by another pair of the batch). Peers, on the 8×8 overlap grids
of real pairs of the bundled NC Landsat scene (every point valid), round by round (the best
round of each counts):

* geosscl: :func:`geosscl.losses.grid_points_near` (only grids whose boxes meet compared);
* every point against every other (the ``N×N×2`` difference it replaced).

Both must give the same mask (checked). The scene is small (489 × 443 px), so large
batches hold pairs over the same ground (more of them at 64 px than at 32) and the mask
has entries off its diagonal blocks; over a large mosaic fewer grids meet.

Usage: ``python benchmarks/near_points.py [--batches 16,64,256] [--crops 64,32] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from geosscl.correspondence import overlap_grid
from geosscl.data import Mosaic
from geosscl.losses import grid_points_near
from report import print_values
from samplers import OverlappingPairSampler

DATA = Path(__file__).resolve().parent.parent / "sample_data" / "nc_landsat"
BANDS = [str(DATA / f"lsat7_2000_{b}.tif") for b in (10, 20, 30, 40, 50, 70)]
GRID = 8  # the pretraining task's default grid_size


def every_pair(points: torch.Tensor, valid: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """Every valid point against every other, each row with its own grid's distance."""
    where = points[valid]
    near = distance[:, None, None].expand(valid.shape)[valid]
    return (where[:, None] - where[None]).abs().amax(dim=-1) < near[:, None]


def best_ms(run, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="16,64,256")
    parser.add_argument("--crops", default="64,32")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    mosaic = Mosaic(BANDS)
    values: dict[str, float] = {}
    for crop in map(int, args.crops.split(",")):
        for batch in map(int, args.batches.split(",")):
            sampler = OverlappingPairSampler(mosaic, crop, length=batch, generator=torch.Generator().manual_seed(0))
            overlap = torch.tensor([pair.overlap for pair in sampler], dtype=torch.float64)
            points = overlap_grid(overlap, GRID)
            valid = torch.ones(points.shape[:3], dtype=torch.bool)
            half_cell = (overlap[:, 2:] - overlap[:, :2]).amin(dim=1) / GRID / 2
            mask = grid_points_near(points, valid, overlap, half_cell)
            if not torch.equal(mask, every_pair(points, valid, half_cell)):
                raise SystemExit(f"crop {crop}, batch {batch}: the two masks differ")
            blocks = torch.block_diag(*[torch.ones(GRID * GRID, GRID * GRID, dtype=torch.bool)] * batch)
            across = int((mask & ~blocks).sum())
            ours = best_ms(lambda: grid_points_near(points, valid, overlap, half_cell), args.rounds)
            theirs = best_ms(lambda: every_pair(points, valid, half_cell), args.rounds)
            key = f"crop{crop}_batch{batch}"
            print(f"crop {crop}, batch {batch} ({mask.shape[0]} points, {across} same-ground entries across pairs): "
                  f"grid_points_near {ours:.2f} ms, every pair {theirs:.2f} ms")
            values[f"{key}_grid_points_near_ms"] = ours
            values[f"{key}_every_pair_ms"] = theirs
            values[f"{key}_ratio_vs_every_pair"] = theirs / ours
    print_values(values)


if __name__ == "__main__":
    main()
