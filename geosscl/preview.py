"""PNG previews of view pairs, for people to check what the sampler draws."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def plot_pairs(views: dict[str, Any], path: str, title: str = "") -> None:
    """Write a PNG with one row per pair: view A | view B, the overlap outlined.

    Args:
        views: a batch of both views, from :func:`geosscl.data.cut_views`.
        path: PNG file to write.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = len(views["box_a"])
    fig, axes = plt.subplots(rows, 2, figsize=(6, 3 * rows + 0.6), squeeze=False)
    for row in range(rows):
        images = [views["image_a"][row].cpu().numpy(), views["image_b"][row].cpu().numpy()]
        overlap = views["overlap"][row].tolist()
        for col, (rgb, key) in enumerate(zip(display_rgb(images), ("box_a", "box_b"))):
            box = views[key][row].tolist()
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


def plot_class_map(
    scene: Any, class_map: str, path: str, names: Mapping[int, str], colors: Mapping[int, Sequence[int]],
    rgb: Sequence[int] = (1, 2, 3), max_side: int = 1024,
) -> None:
    """Write a PNG: the scene | its class map with a legend of the classes present.

    Both are read at a reduced resolution (at most ``max_side`` px a side), so the
    preview of a large scene costs little memory.

    Args:
        scene: the :class:`~geosscl.data.Mosaic` that was segmented.
        class_map: the class-map GeoTIFF written by :func:`geosscl.predict`.
        path: PNG file to write.
        names, colors: class names and RGB colours (0-255) by their value in the class map.
        rgb: 1-based positions of the red, green and blue bands among the scene's bands.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    with rasterio.open(class_map) as src:
        step = max(1, -(-max(src.width, src.height) // max_side))
        shape = (max(1, src.height // step), max(1, src.width // step))
        classes = src.read(1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest)
        b = src.bounds
        res = ((b.right - b.left) / shape[1], (b.top - b.bottom) / shape[0])
    image, _, _ = scene.read((b.left, b.bottom, b.right, b.top), res=res)
    picked = [i - 1 for i in rgb if 0 < i <= image.shape[0]]
    shown = display_rgb([image[picked] if len(picked) == 3 else image])[0]
    palette = np.zeros((256, 3))
    for value, color in colors.items():
        palette[value] = np.array(list(color)[:3], dtype=float) / 255
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2 * shape[0] / shape[1] + 0.8))
    axes[0].imshow(shown, interpolation="nearest")
    axes[0].set_title("scene", fontsize=9)
    masked = np.ma.masked_equal(classes, 255)
    axes[1].imshow(masked, cmap=ListedColormap(palette), vmin=0, vmax=255, interpolation="nearest")
    axes[1].set_title("classes", fontsize=9)
    present = [int(v) for v in np.unique(classes) if v != 255]
    axes[1].legend(handles=[Patch(color=palette[i], label=names.get(i, str(i))) for i in present],
                   loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
