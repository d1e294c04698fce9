"""Turning a :class:`samplers.ViewPair` into two image tensors of a fixed size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from samplers import ViewPair

from ..errors import GeossclError
from .mosaic import Bounds, Mosaic


class PairDataset(Dataset[dict[str, Any]]):
    """Reads both views of a :class:`~samplers.ViewPair` from a mosaic.

    The union of the two boxes is read once at the mosaic's native grid, then each
    view is resampled from it to ``view_size × view_size`` pixels with bilinear
    interpolation at exact pixel centres (:func:`resample_views`), so pixel (0, 0) of
    a view is the top-left pixel of its box and a map point has the same value in
    both views up to resampling. Nodata is carried as NaN.

    Index it with the sampler's pairs; batch with
    :func:`torchgeo.datasets.stack_samples`::

        loader = DataLoader(PairDataset(mosaic), sampler=OverlappingPairSampler(mosaic, 128),
                            batch_size=32, collate_fn=stack_samples, num_workers=2)

    .. versionadded:: 0.1
    """

    def __init__(self, mosaic: Mosaic, view_size: int = 128) -> None:
        """Initialise a new pair dataset.

        Args:
            mosaic: the imagery.
            view_size: side of each returned view, in pixels.
        """
        if int(view_size) != view_size or view_size < 1:
            raise GeossclError(f"view_size: must be a positive whole number of pixels, got {view_size}")
        self.mosaic = mosaic
        self.view_size = int(view_size)

    def __getitem__(self, pair: ViewPair) -> dict[str, Any]:
        """Read one pair.

        Returns:
            ``image_a``, ``image_b``: float32 ``C×S×S`` (``S = view_size``, NaN =
            nodata); ``box_a``, ``box_b``, ``overlap``: float64 ``(4,)``
            ``(minx, miny, maxx, maxy)`` in the mosaic CRS; ``crs``.
        """
        union = self.mosaic.snap(pair.union)
        image, _, complete = self.mosaic.read(union)
        views = resample_views(torch.from_numpy(image), union, (pair.box_a, pair.box_b), self.view_size, complete)
        boxes = torch.from_numpy(np.array([pair.box_a, pair.box_b, pair.overlap], dtype=np.float64))
        return {
            "image_a": views[0],
            "image_b": views[1],
            "box_a": boxes[0],
            "box_b": boxes[1],
            "overlap": boxes[2],
            "crs": self.mosaic.crs,
        }


def resample_views(
    image: torch.Tensor, bounds: Bounds, boxes: Sequence[Bounds], size: int, complete: bool | None = None
) -> torch.Tensor:
    """Resample boxes of a georeferenced image to ``size × size`` pixels each.

    Bilinear interpolation at pixel centres (``align_corners=False``), so the box
    edges of the output and of the input coincide in map units. A box on whole
    pixels of ``image`` is cropped and resized with :func:`torch.nn.functional.interpolate`;
    any other box is sampled with :func:`torch.nn.functional.grid_sample`. Output
    pixels within half an input pixel of a box edge repeat the edge pixel (border
    padding) when the box is upsampled. Views are not low-pass filtered before
    downsampling.

    Nodata (NaN) does not spread: each output pixel is the average of the valid
    input pixels under its bilinear weights, and NaN if they carry less than half
    of the weight.

    Args:
        image: ``C×H×W`` float32 tensor covering ``bounds``, NaN = nodata.
        bounds: ``(minx, miny, maxx, maxy)`` of ``image`` in map units.
        boxes: ``N`` boxes inside ``bounds``, same CRS.
        size: output side in pixels.
        complete: whether ``image`` is known to hold no NaN (default: check).

    Returns:
        ``N×C×size×size`` float32 tensor; pixel (0, 0) of view ``n`` is the
        top-left pixel of ``boxes[n]``.
    """
    channels, height, width = image.shape
    minx, miny, maxx, maxy = bounds
    xres, yres = (maxx - minx) / width, (maxy - miny) / height
    masked = not complete if complete is not None else bool(torch.isnan(image).any())
    if masked:
        # The valid-pixel weight rides along as an extra channel, the image zeroed under nodata.
        invalid = torch.isnan(image).any(dim=0)
        source = torch.cat([image.masked_fill(invalid, 0.0), (~invalid).to(image.dtype)[None]])
    else:
        source = image
    views = []
    for box in boxes:
        cols = ((box[0] - minx) / xres, (box[2] - minx) / xres)
        rows = ((maxy - box[3]) / yres, (maxy - box[1]) / yres)
        edges = [round(v) for v in cols + rows]
        if all(abs(v - e) < 1e-6 for v, e in zip(cols + rows, edges)):
            crop = source[None, :, edges[2] : edges[3], edges[0] : edges[1]]
            if crop.shape[-2:] == (size, size):
                views.append(crop)
            else:
                views.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False))
        else:
            views.append(_grid_sample_box(source, bounds, box, size))
    out = torch.cat(views)
    if not masked:
        return out
    weight = out[:, -1:]
    return (out[:, :-1] / weight.clamp_min(1e-6)).masked_fill(weight < 0.5, float("nan"))


def _grid_sample_box(source: torch.Tensor, bounds: Bounds, box: Bounds, size: int) -> torch.Tensor:
    """``1×C×size×size`` bilinear samples of ``box`` from ``source`` covering ``bounds``."""
    minx, miny, maxx, maxy = bounds
    width, height = maxx - minx, maxy - miny
    # Normalised coordinates (align_corners=False): -1 and +1 are the outer pixel edges,
    # so a box edge maps to the same place in map units in both grids. y runs downward.
    theta = torch.tensor(
        [[
            [(box[2] - box[0]) / width, 0.0, (box[0] + box[2] - minx - maxx) / width],
            [0.0, (box[3] - box[1]) / height, (maxy + miny - box[1] - box[3]) / height],
        ]],
        dtype=source.dtype,
    )
    grid = F.affine_grid(theta, [1, source.shape[0], size, size], align_corners=False)
    return F.grid_sample(source[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
