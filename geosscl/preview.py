"""PNG previews of view pairs, for people to check what the sampler draws."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def display_rgb(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Stretch images to [0, 1] RGB for display, with one stretch for all of them.

    Args:
        images: ``C×H×W`` float arrays (NaN = nodata); the first three bands are
            shown as RGB, a single band as grey.

    Returns:
        ``H×W×4`` RGBA arrays, transparent where nodata.
    """
    bands = [img[:3] if img.shape[0] >= 3 else np.repeat(img[:1], 3, axis=0) for img in images]
    values = np.concatenate([b.reshape(3, -1) for b in bands], axis=1)
    lo = np.nanpercentile(values, 2, axis=1)[:, None, None] if np.isfinite(values).any() else np.zeros((3, 1, 1))
    hi = np.nanpercentile(values, 98, axis=1)[:, None, None] if np.isfinite(values).any() else np.ones((3, 1, 1))
    out = []
    for b in bands:
        rgb = np.clip((b - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
        alpha = (~np.isnan(b).any(axis=0)).astype(np.float64)
        out.append(np.dstack([np.nan_to_num(rgb.transpose(1, 2, 0)), alpha]))
    return out


def plot_pairs(samples: Sequence[dict[str, Any]], path: str, title: str = "") -> None:
    """Write a PNG with one row per pair: view A | view B, the overlap outlined.

    Args:
        samples: items of :class:`geosscl.data.PairDataset`.
        path: PNG file to write.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = len(samples)
    fig, axes = plt.subplots(rows, 2, figsize=(6, 3 * rows + 0.6), squeeze=False)
    for row, sample in enumerate(samples):
        images = [sample["image_a"].numpy(), sample["image_b"].numpy()]
        overlap = sample["overlap"].tolist()
        for col, (rgb, key) in enumerate(zip(display_rgb(images), ("box_a", "box_b"))):
            box = sample[key].tolist()
            ax = axes[row, col]
            ax.imshow(rgb, interpolation="nearest")
            size = rgb.shape[1]
            # Overlap box in this view's pixels: x right from minx, y down from maxy.
            sx, sy = size / (box[2] - box[0]), rgb.shape[0] / (box[3] - box[1])
            x0, y0 = (overlap[0] - box[0]) * sx, (box[3] - overlap[3]) * sy
            w, h = (overlap[2] - overlap[0]) * sx, (overlap[3] - overlap[1]) * sy
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, edgecolor="yellow", linewidth=1.5))
            side = box[2] - box[0]
            ax.set_title(f"{'AB'[col]}: {side:.4g} map units wide", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (3 * rows + 0.6)))
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
