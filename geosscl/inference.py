"""Tiled inference: overlapping tiles, batched, blended with a smooth weight window.

One engine for everything that runs a model over imagery (``predict``, ``segment``,
``evaluate``, ``suggest``, the QGIS plugin). The area is processed block by block: a
block is read once with a margin of context, cut into overlapping tiles that run in
batches, and the tiles' class probabilities are blended with weights that fall off
towards tile edges, so there are no seams. Where the imagery ends, the tiles move onto
it rather than reach past it, and the nodata left in a tile is the ground beside it
mirrored (:func:`~geosscl.augment.fill_nodata`). Memory depends on the block size,
never on the scene size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .augment import BandStats, fill_nodata
from .data import Bounds, Mosaic
from .errors import GeossclError
from .modelfile import ModelInfo
from .models import SegmentationNetwork
from .onnx import OnnxNetwork
from .precision import autocast, check_precision


def weight_window(size: int, overlap: int) -> Tensor:
    """``size × size`` blending weights: 1 inside, ramping down over ``overlap`` px at each edge (never 0)."""
    ramp = torch.ones(size)
    if overlap > 0:
        edge = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
        ramp[:overlap] = edge
        ramp[-overlap:] = edge.flip(0)
    return ramp[:, None] * ramp[None, :]


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise GeossclError("device: cuda requested but no CUDA device is available")
    return torch.device(device)


@dataclass
class Block:
    """One output block: its bounds (map units), class ids (``H×W`` int64, -1 = no input) and probabilities."""

    bounds: Bounds
    classes: Tensor
    probabilities: Tensor


class TiledSegmenter:
    """Runs a segmentation network over any area of a mosaic, tile by tile.

    Args:
        network: the model (from :func:`geosscl.modelfile.load_model`); moved to
            ``device`` and put in eval mode, in place, as ``nn.Module.to`` does.
        info: its metadata (bands, normalisation, tile size, overlap).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        tile_size: tile side in pixels (default: the model's), a multiple of 32.
        overlap: overlap of neighbouring tiles in pixels (default: the model's).
        batch_size: tiles per forward pass.
        block_size: side of the output blocks in pixels.
        precision: ``"32"``, or ``"bf16"``: forward passes under bfloat16 autocast (faster where the hardware
            has bfloat16 arithmetic; class maps differ from float32's at a few pixels in a thousand, where two
            classes are nearly tied). Probabilities are float32 either way.
        skip_empty: plan only the blocks a file of the mosaic reaches, and run the network only on tiles
            holding a valid pixel: a scene's nodata collar, and the gaps between the files of a scattered
            mosaic, cost a read at most. A skipped tile would have weighed only on pixels without input, so
            every pixel with input gets the same probabilities either way; ``False`` runs every tile (the
            peer run of ``benchmarks/predict.py``).
    """

    def __init__(
        self,
        network: SegmentationNetwork,
        info: ModelInfo,
        device: str = "auto",
        tile_size: int | None = None,
        overlap: int | None = None,
        batch_size: int = 8,
        block_size: int = 1024,
        precision: str = "32",
        skip_empty: bool = True,
    ) -> None:
        self.tile = int(tile_size or info.tile_size)
        self.overlap = int(info.tile_overlap if overlap is None else overlap)
        if self.tile % 32 or self.tile <= 0:
            raise GeossclError(f"tile_size: {self.tile} is not a positive multiple of 32")
        if not 0 <= self.overlap < self.tile // 2:
            raise GeossclError(f"overlap: {self.overlap} must lie in 0..{self.tile // 2 - 1} for tiles of {self.tile}")
        self.device = resolve_device(device)
        if str(precision) == "bf16" and isinstance(network, OnnxNetwork):
            # onnxruntime runs the graph as exported; autocast does not reach it.
            raise GeossclError("precision: bf16 runs PyTorch models (.safetensors); an ONNX model runs in float32")
        self.precision = check_precision(precision, self.device)
        self.network = network.to(self.device).eval()
        self.normalise = BandStats(torch.tensor(info.band_mean), torch.tensor(info.band_std)).to(self.device)
        self.info = info
        self.batch_size = batch_size
        self.block = max(int(block_size), self.tile)
        self.weights = weight_window(self.tile, self.overlap).to(self.device)
        self.skip_empty = skip_empty

    def plan(self, mosaic: Mosaic, area: Bounds) -> list[Bounds]:
        """Bounds of the output blocks covering ``area`` (snapped to the mosaic grid), row by row; with
        ``skip_empty``, only those that some file's bounds reach."""
        minx, miny, maxx, maxy = mosaic.snap(area)
        rx, ry = mosaic.res
        width, height = round((maxx - minx) / rx), round((maxy - miny) / ry)
        rows, cols = math.ceil(height / self.block), math.ceil(width / self.block)
        side_x, side_y = self.block * rx, self.block * ry
        reached = None
        if self.skip_empty:
            # From each file's bounds straight to the blocks under it: a mosaic of files far apart spans
            # millions of blocks, and testing each one against every file would cost more than the files.
            reached = set()
            for x0, y0, x1, y1 in mosaic.index.geometry.bounds.to_numpy():
                c0, c1 = max(0, math.floor((x0 - minx) / side_x)), min(cols, math.ceil((x1 - minx) / side_x))
                r0, r1 = max(0, math.floor((maxy - y1) / side_y)), min(rows, math.ceil((maxy - y0) / side_y))
                reached.update((r, c) for r in range(r0, r1) for c in range(c0, c1))
        plan = []
        for r, c in sorted(reached) if reached is not None else ((r, c) for r in range(rows) for c in range(cols)):
            row, col = r * self.block, c * self.block
            w, h = min(self.block, width - col), min(self.block, height - row)
            plan.append((minx + col * rx, maxy - (row + h) * ry, minx + (col + w) * rx, maxy - row * ry))
        return plan

    def blocks(self, mosaic: Mosaic, area: Bounds, read_ahead: bool = True, plan: list[Bounds] | None = None) -> Iterator[Block]:
        """Class maps of ``area`` (snapped to the mosaic grid), one block at a time, row by row.

        With ``read_ahead`` the next block is read on a background thread while the
        model runs on the current one (GDAL releases the GIL while it reads). ``plan``:
        the blocks to run, some of :meth:`plan`'s (each block is read with its own
        context, so its classes do not depend on which others run); default all.
        """
        plan = self.plan(mosaic, area) if plan is None else plan
        if not read_ahead:
            for bounds in plan:
                yield self._block(bounds, self.read(mosaic, bounds))
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="geosscl-read") as pool:
            pending = pool.submit(self.read, mosaic, plan[0]) if plan else None
            for i, bounds in enumerate(plan):
                image = pending.result()
                pending = pool.submit(self.read, mosaic, plan[i + 1]) if i + 1 < len(plan) else None
                yield self._block(bounds, image)

    def _block(self, bounds: Bounds, image: tuple[np.ndarray, int, int, int]) -> Block:
        probabilities, valid = self.infer(*image)
        classes = probabilities.argmax(dim=0).masked_fill(~valid, -1)
        return Block(bounds, classes.cpu(), probabilities.cpu())

    def read(self, mosaic: Mosaic, bounds: Bounds) -> tuple[np.ndarray, int, int, int]:
        """What :meth:`infer` needs for the block ``bounds`` (on the mosaic grid).

        Returns ``(image, height, width, margin)``: the block's imagery with ``margin`` px
        of context on every side, and at least one whole tile (``C×H'×W'`` float32, NaN =
        no data), and the block's own size in pixels. The margin is the tiles' overlap, or
        a tile's side where the imagery ends so near the block that its last tiles could
        not lie on the imagery otherwise (see :meth:`infer`): a second read, at scene edges only.
        """
        rx, ry = mosaic.res
        width = round((bounds[2] - bounds[0]) / rx)
        height = round((bounds[3] - bounds[1]) / ry)
        for margin in (self.overlap, self.tile):
            span_w, span_h = max(width + 2 * margin, self.tile), max(height + 2 * margin, self.tile)
            x0, y1 = bounds[0] - margin * rx, bounds[3] + margin * ry
            image, _, _ = mosaic.read((x0, y1 - span_h * ry, x0 + span_w * rx, y1))
            has_input = ~np.isnan(image).any(axis=0)
            axes = ((has_input.any(axis=1), height), (has_input.any(axis=0), width))
            if all(self._origins(torch.from_numpy(has), margin, size)[1] for has, size in axes):
                break
        return image, height, width, margin

    def probabilities(self, mosaic: Mosaic, bounds: Bounds) -> tuple[Tensor, Tensor]:
        """Blended class probabilities ``C×H×W`` of ``bounds`` (on the mosaic grid) and its valid-input mask."""
        return self.infer(*self.read(mosaic, bounds))

    def _origins(self, has_input: Tensor, margin: int, size: int) -> tuple[list[int], bool]:
        """Tile origins along one axis of a block read with ``margin`` px of context (``has_input``: whether
        each row, or column, of the read holds input), and whether they all lie on the imagery, or it is
        narrower than a tile: ``False`` where the imagery runs on past the read and more context would fit
        a tile on it.

        The tiles keep the block's grid; only those reaching past the imagery move onto it, so a pixel's
        classes do not depend on how far the imagery reaches beyond its tiles.
        """
        length = len(has_input)
        first, last = _input_range(has_input)
        lo, hi = margin - self.overlap, min(margin + size + self.overlap, length)
        if min(hi, last) <= max(lo, first):  # no input along the block and its overlap: nothing to run
            return [], True
        if last - first >= self.tile:
            return _starts(length, self.tile, self.overlap, lo, hi, (first, last)), True
        return _starts(length, self.tile, self.overlap, max(lo, first), min(hi, last)), 0 < first and last < length

    @torch.no_grad()
    def infer(self, image: np.ndarray, height: int, width: int, margin: int) -> tuple[Tensor, Tensor]:
        """Blended probabilities ``C×height×width`` and valid mask of what :meth:`read` returns."""
        span_h, span_w = image.shape[1:]
        image = torch.from_numpy(image).to(self.device)[None]
        normalised, valid = self.normalise(image, fill=False)
        total = torch.zeros(self.info.num_classes, span_h, span_w, device=self.device)
        weight = torch.zeros(span_h, span_w, device=self.device)
        # Tiles lie on the imagery: at a scene's edge, the block's margin and the rest of its last tile are
        # beyond the data, and a tile reaching there would show the network fill where training showed it
        # ground (a model of the SpaceNet tile's footprints, 150 steps, took 84 % of the 8 px along the edges
        # of a cut of the tile for buildings, and 20 % of the same ground in the whole tile).
        rows, _ = self._origins(valid[0, 0].any(dim=1).cpu(), margin, height)
        cols, _ = self._origins(valid[0, 0].any(dim=0).cpu(), margin, width)
        origins = [(r, c) for r in rows for c in cols]
        if self.skip_empty:
            origins = [(r, c) for r, c in origins if bool(valid[0, 0, r : r + self.tile, c : c + self.tile].any())]
        for i in range(0, len(origins), self.batch_size):
            batch = origins[i : i + self.batch_size]
            tiles = torch.stack([normalised[0, :, r : r + self.tile, c : c + self.tile] for r, c in batch])
            # Filled tile by tile, as training crops are (and at a fraction of the cost of the whole block).
            tiles = fill_nodata(tiles, torch.stack([valid[0, :, r : r + self.tile, c : c + self.tile] for r, c in batch]))
            with autocast(self.device, self.precision):
                logits = self.network(tiles)
            probs = torch.softmax(logits.float(), dim=1)
            for (r, c), p in zip(batch, probs):
                total[:, r : r + self.tile, c : c + self.tile] += p * self.weights
                weight[r : r + self.tile, c : c + self.tile] += self.weights
        rows, cols = slice(margin, margin + height), slice(margin, margin + width)
        # Pixels no tile ran on (only where there is no input) get probabilities 0, not 0 / 0.
        return total[:, rows, cols] / weight[rows, cols].clamp_min(1e-12), valid[0, 0, rows, cols] > 0


def _input_range(any_valid: Tensor) -> tuple[int, int]:
    """First and one-past-last index where ``any_valid`` (a 1-D bool tensor) holds; ``(0, len)`` where it never does."""
    where = torch.nonzero(any_valid).flatten()
    if not len(where):
        return 0, len(any_valid)
    return int(where[0]), int(where[-1]) + 1


def _starts(length: int, tile: int, overlap: int, lo: int = 0, hi: int | None = None,
            within: tuple[int, int] | None = None) -> list[int]:
    """Tile origins covering ``lo .. hi`` (default: all of ``length``) with stride ``tile - overlap``, the
    first flush with ``lo`` and the last with ``hi``; a span shorter than a tile gets one tile, centred on it
    as far as ``0 .. length`` allows. ``within`` (at least a tile long): tiles reaching past it move onto it.
    """
    hi = length if hi is None else hi
    if hi - lo < tile:
        centred = lo - (tile - (hi - lo)) // 2
        starts = [min(max(centred, 0, hi - tile), lo, length - tile)]
    else:
        stride = tile - overlap
        starts = [lo + min(i * stride, hi - lo - tile) for i in range(math.ceil((hi - lo - tile) / stride) + 1)]
    if within is not None:
        starts = [min(max(start, within[0]), within[1] - tile) for start in starts]
    return sorted(set(starts))


def check_bands(mosaic_bands: int, info: ModelInfo, source: str) -> None:
    """Fail clearly when imagery lacks the bands a model was trained on."""
    if mosaic_bands < max(info.bands):
        raise GeossclError(
            f"{source}: has {mosaic_bands} band(s); the model reads bands {','.join(map(str, info.bands))}"
        )
