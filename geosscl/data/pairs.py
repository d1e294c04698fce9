"""Turning :class:`samplers.ViewPair`\\ s into two image tensors of a fixed size.

The work is split where each part is cheapest. A loader worker only reads: the union
of the two boxes, once, as stored, with the file's nodata value or mask
(:class:`PairDataset`), and pads the unions of a batch to one size
(:func:`collate_pairs`). Every per-pixel step (conversion to float, the nodata test,
bilinear resampling of both views) runs batched on the training device
(:func:`cut_views`), where on a GPU it is almost free. A worker then delivers pairs
at close to the rate of the bare reads (``benchmarks/pair_loading.py``), and uint8
imagery travels to the device at a quarter of the bytes of float32 views.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from ..errors import GeossclError
from .mosaic import Mosaic, RawWindow

if TYPE_CHECKING:
    # samplers imports geosscl.errors, which runs this package's __init__: importing
    # samplers here at run time would make `import samplers` first a circular import.
    from samplers import ViewPair


class PairDataset(Dataset[dict[str, Any]]):
    """Reads the union of both views of a :class:`~samplers.ViewPair` from a mosaic.

    The union of the two boxes, grown to whole pixels of the mosaic's grid, is read
    once, as stored (:meth:`Mosaic.read_raw`). Batch items with
    :func:`collate_pairs`, then cut the two views out with :func:`cut_views` on the
    device that trains (Lightning: ``on_after_batch_transfer``;
    :class:`~geosscl.tasks.SSCCLTask` does it)::

        loader = DataLoader(PairDataset(mosaic), sampler=OverlappingPairSampler(mosaic, 128),
                            batch_size=32, collate_fn=collate_pairs, num_workers=2)
        for batch in loader:  # after moving the batch to the device:
            views = cut_views(batch, 128)  # image_a, image_b: B×C×128×128

    :meth:`views` does all three for a list of pairs.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       Items hold the union as stored; the views are cut by :func:`cut_views`.
    """

    def __init__(self, mosaic: Mosaic, view_size: int = 128) -> None:
        """Initialise a new pair dataset.

        Args:
            mosaic: the imagery.
            view_size: side of each view, in pixels, once cut.
        """
        if int(view_size) != view_size or view_size < 1:
            raise GeossclError(f"view_size: must be a positive whole number of pixels, got {view_size}")
        self.mosaic = mosaic
        self.view_size = int(view_size)

    def __getitem__(self, pair: ViewPair) -> dict[str, Any]:
        """Read one pair's union.

        Returns:
            ``union``: ``C×H×W`` array of the mosaic's data type; ``union_valid``:
            ``H×W`` bool array (True = data) or None when the file has no mask;
            ``nodata``: the value marking nodata in ``union``, or None when the file
            declares none or this union holds none; ``union_box``,
            ``box_a``, ``box_b``, ``overlap``: ``(minx, miny, maxx, maxy)`` tuples in
            the mosaic CRS; ``crs``; ``stacked``: whether ``union`` holds ``2·C``
            bands, the union as ``file_a`` shows it, then as ``file_b`` does (a
            pair with ``file_b`` set: views of two dates). A pixel of a stacked union
            is valid where both hold data. Arrays and tuples become tensors in
            :func:`collate_pairs`: a tensor per item costs a tenth of the read.
        """
        union = self.mosaic.snap(pair.union)
        raw = self.mosaic.read_raw(union, first=pair.file_a)
        image, valid, nodata = raw.image, raw.valid, raw.nodata
        if pair.file_b is not None:
            other = self.mosaic.read_raw(union, first=pair.file_b) if pair.file_b != pair.file_a else raw
            valid = _valid_pixels(raw) & _valid_pixels(other)
            image, valid, nodata = np.concatenate([raw.image, other.image]), None if valid.all() else valid, None
        return {
            "union": image,
            "union_valid": valid,
            "nodata": nodata,
            "union_box": union,
            "box_a": pair.box_a,
            "box_b": pair.box_b,
            "overlap": pair.overlap,
            "crs": self.mosaic.crs,
            "stacked": pair.file_b is not None,
        }

    def views(self, pairs: Iterable[ViewPair], device: torch.device | str | None = None) -> dict[str, Any]:
        """Both views of each pair, batched: :func:`cut_views` of :func:`collate_pairs` of the items."""
        batch = collate_pairs([self[pair] for pair in pairs])
        if device is not None:
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        return cut_views(batch, self.view_size)


def _valid_pixels(raw: RawWindow) -> np.ndarray:
    """``H×W`` bool: where a raw window holds data."""
    valid = np.ones(raw.image.shape[1:], dtype=bool) if raw.valid is None else raw.valid
    if raw.nodata is not None:
        valid = valid & (raw.image != raw.image.dtype.type(raw.nodata)).all(axis=0)
    return valid


def collate_pairs(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`PairDataset` items: unions padded to the largest, the rest stacked.

    Each union is padded on the right and bottom: one pixel repeating its edge (and
    the edge's validity), which is all a bilinear sample inside the union can touch,
    so sampling near an edge behaves as ``grid_sample``'s border padding would on the
    union alone; zeros beyond. ``union_box`` grows by the padding, so every union
    keeps its map coordinates. In a DataLoader worker the batch is built in shared
    memory, as :func:`torch.utils.data.default_collate` does, so it is not copied
    again to reach the main process.

    Returns:
        ``union`` ``B×C×H×W``; ``union_size`` ``B×2`` (each union's height and width
        before padding); ``union_valid`` ``B×H×W`` bool, or None when no item has a
        mask; ``nodata`` ``B`` in the union's type and ``has_nodata`` ``B`` bool;
        ``union_box``, ``box_a``, ``box_b``, ``overlap`` float64 ``B×4``; ``crs`` a list;
        ``stacked`` a bool (see :meth:`PairDataset.__getitem__`).
    """
    if not samples:
        raise ValueError("collate_pairs: no samples")
    stacked = {bool(s.get("stacked", False)) for s in samples}
    if len(stacked) > 1:
        raise ValueError("collate_pairs: pairs of one date and of two dates in one batch")
    first = samples[0]["union"]
    height = max(s["union"].shape[1] for s in samples)
    width = max(s["union"].shape[2] for s in samples)
    masked = any(s["union_valid"] is not None for s in samples)
    union_t = _zeros((len(samples), first.shape[0], height, width), first.dtype)
    valid_t = _zeros((len(samples), height, width), np.dtype(bool)) if masked else None
    # Filled through numpy: this runs in the worker for every pair, and torch's
    # per-call cost of a slice assignment is several times numpy's.
    union = union_t.numpy()
    valid = valid_t.numpy() if valid_t is not None else None
    boxes = []
    for i, s in enumerate(samples):
        h, w = s["union"].shape[1:]
        _place(union[i], s["union"])
        if valid is not None:
            if s["union_valid"] is None:
                valid[i, : h + 1, : w + 1] = True
            else:
                _place(valid[i], s["union_valid"])
        minx, miny, maxx, maxy = s["union_box"]
        boxes.append((minx, maxy - (maxy - miny) / h * height, minx + (maxx - minx) / w * width, maxy))
    values = [s["nodata"] for s in samples]
    batch = {
        "union": union_t,
        "union_valid": valid_t,
        "nodata": torch.from_numpy(np.array([0 if v is None else v for v in values], dtype=first.dtype)),
        "has_nodata": torch.tensor([v is not None for v in values]),
        "union_size": torch.tensor([s["union"].shape[1:] for s in samples]),
        "union_box": torch.tensor(boxes, dtype=torch.float64),
    }
    for key in ("box_a", "box_b", "overlap"):
        batch[key] = torch.tensor([s[key] for s in samples], dtype=torch.float64)
    batch["crs"] = [s["crs"] for s in samples]
    batch["stacked"] = stacked.pop()
    return batch


def _place(out: np.ndarray, item: np.ndarray) -> None:
    """Copy ``item`` (``...×h×w``) to the top-left of ``out``, its last column and row repeated once beyond."""
    h, w = item.shape[-2:]
    out[..., :h, :w] = item
    if w < out.shape[-1]:
        out[..., :h, w] = item[..., :, w - 1]
    if h < out.shape[-2]:
        out[..., h, : w + 1] = out[..., h - 1, : w + 1]


def _zeros(shape: tuple[int, ...], dtype: np.dtype) -> Tensor:
    """A zero CPU tensor, in shared memory inside a DataLoader worker (pages zeroed lazily either way)."""
    array = np.zeros(0, dtype=dtype)
    if get_worker_info() is not None:
        like = torch.from_numpy(array)
        return like.new(like._typed_storage()._new_shared(int(np.prod(shape)), device="cpu")).resize_(shape)
    return torch.from_numpy(np.zeros(shape, dtype=dtype))


def cut_views(batch: dict[str, Any], size: int) -> dict[str, Any]:
    """Resample both views of every pair from its union, batched, on the batch's device.

    Bilinear interpolation at pixel centres (``align_corners=False``), so a view's box
    edges and the union's coincide in map units, and pixel (0, 0) of a view is the
    top-left pixel of its box. A box on whole pixels at scale 1 is an exact crop up to
    the float32 rounding of the sampling grid (about 1e-5 px). Views are not low-pass
    filtered before downsampling.

    A union pixel holds data where its mask (if any) says so, no band equals the
    nodata value (if any) and, for float data, every band is finite. Nodata does not
    spread: each output pixel is the average of the valid union pixels under its
    bilinear weights, and NaN if they carry less than half of the weight. Near a box
    edge that is the edge pixel's value (the union is snapped outwards to whole
    pixels and padded with its edges).

    Args:
        batch: from :func:`collate_pairs`, on any device.
        size: side of each view in pixels.

    A ``stacked`` batch (views of two dates) holds ``2·C`` bands: view A is cut from
    the first ``C``, view B from the others.

    Returns:
        ``image_a``, ``image_b``: float32 ``B×C×size×size`` (NaN = nodata), with the
        batch's ``box_a``, ``box_b``, ``overlap`` and ``crs``.
    """
    # Not Kornia's crop_and_resize: it takes box corners as pixel centres (map boxes
    # give pixel edges), solves a homography per box for what is an axis-aligned
    # scale and shift, and knows no nodata. The sampling grid is a few lines.
    union = batch["union"]
    batch_size, channels = union.shape[:2]
    grid = _view_grid(batch["union_box"], batch["box_a"], batch["box_b"], size)
    images = torch.empty((batch_size, channels, size, 2 * size), dtype=torch.float32, device=union.device)
    # On the CPU, a whole batch of float unions is tens of MB, freshly mapped for
    # every batch (page faults cost more than the conversion): a few pairs at a
    # time. On a GPU, one call for the batch.
    step = batch_size if union.device.type != "cpu" else _CPU_CHUNK
    for start in range(0, batch_size, step):
        part = slice(start, start + step)
        source = union[part].to(torch.float32)
        valid = _validity(batch, part)
        if valid is None:
            images[part] = F.grid_sample(source, grid[part], mode="bilinear", padding_mode="border", align_corners=False)
            continue
        # The valid-pixel weight rides along as an extra channel, so one pass gives
        # the weighted sums of valid pixels and their weights.
        weight = valid[:, None].to(torch.float32)
        source = torch.cat([source.masked_fill(~valid[:, None], 0.0), weight], dim=1)
        out = F.grid_sample(source, grid[part], mode="bilinear", padding_mode="border", align_corners=False)
        weight = out[:, channels:]
        images[part] = (out[:, :channels] / weight.clamp_min(1e-6)).masked_fill(weight < 0.5, float("nan"))
    if batch.get("stacked", False):  # view A from the first half of the bands, view B from the second
        half = channels // 2
        result = {"image_a": images[:, :half, :, :size].contiguous(), "image_b": images[:, half:, :, size:].contiguous()}
    else:
        result = {"image_a": images[..., :size].contiguous(), "image_b": images[..., size:].contiguous()}
    for key in ("box_a", "box_b", "overlap", "crs"):
        result[key] = batch[key]
    return result


_CPU_CHUNK = 8


def _validity(batch: dict[str, Any], part: slice) -> Tensor | None:
    """``b×H×W`` bool validity of the unions ``part``, or None if every pixel that can be sampled is valid."""
    valid = batch["union_valid"][part] if batch.get("union_valid") is not None else None
    has = batch["has_nodata"][part] if batch.get("has_nodata") is not None else None
    if has is not None and bool(has.any()):
        # Only unions known to hold their nodata value are tested (the worker's
        # min/max says which), in the stored type: exact, and cheap for uint8.
        union, nodata = batch["union"][part], batch["nodata"][part].view(-1, 1, 1, 1)
        data = (union != nodata).all(dim=1) | ~has.view(-1, 1, 1)
        valid = data if valid is None else valid & data
    if valid is None:
        return None
    # Beyond the one-pixel ring of padding, nothing is ever sampled: count it valid.
    size = batch["union_size"][part].to(valid.device)
    rows = torch.arange(valid.shape[1], device=valid.device).view(1, -1, 1)
    cols = torch.arange(valid.shape[2], device=valid.device).view(1, 1, -1)
    valid = valid | (rows > size[:, 0].view(-1, 1, 1)) | (cols > size[:, 1].view(-1, 1, 1))
    return None if bool(valid.all()) else valid


def _view_grid(bounds: Tensor, box_a: Tensor, box_b: Tensor, size: int) -> Tensor:
    """``B×size×2·size×2`` float32 ``grid_sample`` coordinates: both views side by side.

    Each is the pixel centres of a view box in normalised coordinates of the union
    (``align_corners=False``: -1 and +1 are its outer pixel edges). The per-axis
    coordinates are computed in float64, as map coordinates lose sub-pixel
    precision in float32, and only then broadcast to the float32 grid.
    """
    bounds = bounds.to(torch.float64)
    centres = (torch.arange(size, device=bounds.device, dtype=torch.float64) + 0.5) / size
    grid = torch.empty((len(bounds), size, 2 * size, 2), dtype=torch.float32, device=bounds.device)
    for half, boxes in enumerate((box_a.to(torch.float64), box_b.to(torch.float64))):
        x = boxes[:, 0:1] + centres * (boxes[:, 2:3] - boxes[:, 0:1])  # B×S, map units
        y = boxes[:, 3:4] - centres * (boxes[:, 3:4] - boxes[:, 1:2])
        u = 2 * (x - bounds[:, 0:1]) / (bounds[:, 2:3] - bounds[:, 0:1]) - 1
        v = 2 * (bounds[:, 3:4] - y) / (bounds[:, 3:4] - bounds[:, 1:2]) - 1
        columns = slice(half * size, (half + 1) * size)
        grid[:, :, columns, 0] = u[:, None, :].to(torch.float32)
        grid[:, :, columns, 1] = v[:, :, None].to(torch.float32)
    return grid
