"""A small, headless subset of matterport's ``mrcnn.visualize``: random_colors, apply_mask, display_instances.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no display needed), so this works
in servers and tests; ``display_instances`` returns the Figure for ``savefig``.
"""

from __future__ import annotations

import colorsys
import random
from collections.abc import Sequence

import numpy as np


def random_colors(count: int, bright: bool = True) -> list[tuple[float, float, float]]:
    """``count`` visually distinct RGB colours in [0, 1] (evenly spaced hues, shuffled with the random module)."""
    brightness = 1.0 if bright else 0.7
    colors = [colorsys.hsv_to_rgb(i / max(count, 1), 1.0, brightness) for i in range(count)]
    random.shuffle(colors)
    return colors


def apply_mask(image: np.ndarray, mask: np.ndarray, color: Sequence[float], alpha: float = 0.5) -> np.ndarray:
    """Blend ``color`` (RGB in [0, 1]) into ``image`` [H, W, 3] where ``mask`` is set; modifies and returns image."""
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image {image.shape} and mask {mask.shape} sizes differ")
    selected = mask.astype(bool)
    for channel in range(3):
        image[:, :, channel] = np.where(
            selected, image[:, :, channel] * (1 - alpha) + alpha * color[channel] * 255, image[:, :, channel]
        )
    return image


def display_instances(
    image: np.ndarray,
    boxes: np.ndarray,
    masks: np.ndarray,
    class_ids: np.ndarray,
    class_names: Sequence[str],
    scores: np.ndarray | None = None,
    title: str = "",
    figsize: tuple[float, float] = (16, 16),
    ax=None,
    show_mask: bool = True,
    show_bbox: bool = True,
    colors: Sequence[Sequence[float]] | None = None,
    captions: Sequence[str] | None = None,
):
    """Draw boxes, captions and mask outlines/fills of detections over ``image``; returns the matplotlib Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Polygon, Rectangle
    from skimage.measure import find_contours

    count = boxes.shape[0]
    if count != masks.shape[-1] or count != class_ids.shape[0]:
        raise ValueError(f"boxes ({count}), masks ({masks.shape[-1]}) and class_ids ({class_ids.shape[0]}) "
                         f"must have one entry per instance")
    if ax is None:
        figure = Figure(figsize=figsize)
        FigureCanvasAgg(figure)
        ax = figure.add_subplot(1, 1, 1)
    figure = ax.figure
    colors = colors or random_colors(count)
    height, width = image.shape[:2]
    ax.set_ylim(height + 10, -10)
    ax.set_xlim(-10, width + 10)
    ax.axis("off")
    ax.set_title(title)

    canvas = image.astype(np.uint32).copy()
    for i in range(count):
        color = colors[i]
        if not np.any(boxes[i]):
            continue  # padding row or a box that did not survive cropping
        y1, x1, y2, x2 = boxes[i]
        if show_bbox:
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, linewidth=2, alpha=0.7, linestyle="dashed",
                                   edgecolor=color, facecolor="none"))
        if captions is not None:
            caption = captions[i]
        else:
            label = class_names[class_ids[i]]
            caption = f"{label} {scores[i]:.3f}" if scores is not None else label
        ax.text(x1, y1 + 8, caption, color="w", size=11, backgroundcolor="none")
        mask = masks[:, :, i]
        if show_mask:
            canvas = apply_mask(canvas, mask, color)
        # Pad so that contours of masks touching the border are closed.
        padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=np.uint8)
        padded[1:-1, 1:-1] = mask
        for contour in find_contours(padded, 0.5):
            vertices = np.fliplr(contour) - 1  # (row, col) -> (x, y), undo the padding
            ax.add_patch(Polygon(vertices, facecolor="none", edgecolor=color))
    ax.imshow(canvas.astype(np.uint8))
    return figure
