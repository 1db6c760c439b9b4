"""Anchor boxes for the FPN levels, in matterport's order and values.

Shape shorthand:
    A    number of anchors over all levels (261,888 for a 1024x1024 image with the default config)
    (y1, x1, y2, x2)  pixel corners from ``generate_*``; normalised (see mrcnn.boxes) from ``get_anchors``.

Per level: heights = scale / sqrt(ratio), widths = scale * sqrt(ratio); centres at (y * stride, x * stride) for
cells y, x = 0, anchor_stride, 2 * anchor_stride, ... (top-left aligned, not offset by stride / 2). Order within a
level is row-major over cells (y outer, x inner), then the ratios; this matches how the RPN head reshapes its
channels. Levels are concatenated in scale order (P2 first).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mrcnn.boxes import norm_boxes


def generate_anchors(
    scales: float | Sequence[float],
    ratios: Sequence[float],
    shape: Sequence[int],
    feature_stride: float,
    anchor_stride: int,
) -> np.ndarray:
    """Pixel anchors [cells * len(scales) * len(ratios), 4] for one feature map of ``shape`` (rows, cols)."""
    if anchor_stride < 1:
        raise ValueError(f"anchor_stride must be >= 1, got {anchor_stride}")
    if len(shape) < 2 or shape[0] < 0 or shape[1] < 0:
        raise ValueError(f"feature shape must be (rows, cols) with non-negative sizes, got {shape}")
    ratios_arr = np.asarray(ratios, dtype=np.float64).reshape(-1)
    scales_arr = np.asarray(scales, dtype=np.float64).reshape(-1)
    if np.any(ratios_arr <= 0) or np.any(scales_arr <= 0):
        raise ValueError(f"anchor scales and ratios must be positive, got {scales} and {ratios}")
    # Scale-major, ratio-minor (matterport's meshgrid(scales, ratios) flattened).
    scale_grid, ratio_grid = np.meshgrid(scales_arr, ratios_arr)
    scale_flat = scale_grid.reshape(-1)
    ratio_flat = ratio_grid.reshape(-1)
    heights = scale_flat / np.sqrt(ratio_flat)
    widths = scale_flat * np.sqrt(ratio_flat)

    shifts_y = np.arange(0, shape[0], anchor_stride) * feature_stride
    shifts_x = np.arange(0, shape[1], anchor_stride) * feature_stride
    centre_y = np.repeat(shifts_y, len(shifts_x))  # row-major cells: y outer
    centre_x = np.tile(shifts_x, len(shifts_y))  # x inner
    cy = centre_y[:, None]
    cx = centre_x[:, None]
    boxes = np.stack(
        np.broadcast_arrays(cy - 0.5 * heights, cx - 0.5 * widths, cy + 0.5 * heights, cx + 0.5 * widths), axis=-1
    )
    return boxes.reshape(-1, 4)


def generate_pyramid_anchors(
    scales: Sequence[float],
    ratios: Sequence[float],
    feature_shapes: Sequence[Sequence[int]] | np.ndarray,
    feature_strides: Sequence[float],
    anchor_stride: int,
) -> np.ndarray:
    """Pixel anchors [A, 4] for all levels: scales[i] on feature_shapes[i] with feature_strides[i]."""
    if not (len(scales) == len(feature_shapes) == len(feature_strides)):
        raise ValueError(
            f"need one scale, feature shape and stride per level, got {len(scales)}, {len(feature_shapes)}, "
            f"{len(feature_strides)}"
        )
    levels = [
        generate_anchors(scales[i], ratios, feature_shapes[i], feature_strides[i], anchor_stride)
        for i in range(len(scales))
    ]
    return np.concatenate(levels, axis=0)


def compute_backbone_shapes(config: Any, image_shape: Sequence[int]) -> np.ndarray:
    """Feature-map sizes [levels, 2] = ceil(image / stride) per BACKBONE_STRIDES entry (or the config's callable)."""
    if callable(config.BACKBONE):
        return np.asarray(config.COMPUTE_BACKBONE_SHAPE(image_shape))
    height, width = int(image_shape[0]), int(image_shape[1])
    return np.array([[int(math.ceil(height / s)), int(math.ceil(width / s))] for s in config.BACKBONE_STRIDES])


@functools.lru_cache(maxsize=16)
def _normalized_pyramid_anchors(
    scales: tuple[float, ...],
    ratios: tuple[float, ...],
    feature_shapes: tuple[tuple[int, int], ...],
    strides: tuple[float, ...],
    anchor_stride: int,
    image_hw: tuple[int, int],
) -> np.ndarray:
    pixel = generate_pyramid_anchors(scales, ratios, feature_shapes, strides, anchor_stride)
    anchors = norm_boxes(pixel, image_hw)
    anchors.setflags(write=False)  # shared by every caller through the cache
    return anchors


def get_anchors(config: Any, image_shape: Sequence[int]) -> np.ndarray:
    """Normalised float32 anchors [A, 4] for a molded image of ``image_shape``; cached per shape and config values.

    The returned array is read-only because it is shared; copy it before modifying.
    """
    feature_shapes = compute_backbone_shapes(config, image_shape)
    key_shapes = tuple((int(h), int(w)) for h, w in np.asarray(feature_shapes).reshape(-1, 2))
    return _normalized_pyramid_anchors(
        tuple(float(s) for s in config.RPN_ANCHOR_SCALES),
        tuple(float(r) for r in config.RPN_ANCHOR_RATIOS),
        key_shapes,
        tuple(float(s) for s in config.BACKBONE_STRIDES),
        int(config.RPN_ANCHOR_STRIDE),
        (int(image_shape[0]), int(image_shape[1])),
    )
