"""Box conventions and every coordinate conversion of the engine, in NumPy and as TensorFlow twins.

Shape shorthand:
    N, M      number of boxes
    ...       any leading batch dimensions (TF twins broadcast over them)
    (y1, x1, y2, x2)  box corners. Pixel boxes: y2/x2 are exclusive (one past the last row/column).
                      Normalised boxes: coordinates in [0, 1] with y2/x2 inclusive, i.e.
                      norm = (pixel - [0, 0, 1, 1]) / [H - 1, W - 1, H - 1, W - 1]  (matterport's shift).

Deltas are (dy, dx, log(dh), log(dw)) in the centre/size parameterisation of Faster R-CNN; scaling by a
BBOX_STD_DEV is the caller's business. Boxes are normalised inside the graph and in pixels outside; the
functions here are the only crossings. NumPy functions keep matterport's names and semantics (``mrcnn.utils``
re-exports them); the ``*_graph`` functions are the TensorFlow equivalents (plain ``tensorflow``, no Keras),
which import TensorFlow on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # TensorFlow is imported lazily so that ``import mrcnn.utils`` stays light.
    import tensorflow as tf

#: Added to normalised (y1, x1, y2, x2) to get pixels after scaling; pixel y2/x2 are exclusive.
_PIXEL_SHIFT = np.array([0.0, 0.0, 1.0, 1.0])


def _check_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    boxes = np.asarray(boxes)
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have a last dimension of 4 (y1, x1, y2, x2), got shape {boxes.shape}")
    return boxes


def _shape_scale(shape: Sequence[int]) -> np.ndarray:
    """[H - 1, W - 1, H - 1, W - 1] for an image shape (H, W, ...)."""
    if len(shape) < 2:
        raise ValueError(f"shape must start with (height, width), got {tuple(shape)}")
    h, w = float(shape[0]), float(shape[1])
    if h < 2 or w < 2:
        raise ValueError(f"image height and width must be >= 2 to normalise boxes, got {h:g}x{w:g}")
    return np.array([h - 1.0, w - 1.0, h - 1.0, w - 1.0])


# ----------------------------------------------------------------------------------------------- NumPy


def norm_boxes(boxes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Pixel boxes [..., 4] -> normalised float32 boxes [..., 4] for an image of ``shape`` (H, W, ...)."""
    boxes = _check_boxes(boxes, "boxes")
    return ((boxes - _PIXEL_SHIFT) / _shape_scale(shape)).astype(np.float32)


def denorm_boxes(boxes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Normalised boxes [..., 4] -> int32 pixel boxes, rounding half to even (as np.around does)."""
    boxes = _check_boxes(boxes, "boxes")
    return np.around(boxes * _shape_scale(shape) + _PIXEL_SHIFT).astype(np.int32)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of boxes [..., 4] -> [...] (negative extents are not clamped; callers filter those)."""
    boxes = _check_boxes(boxes, "boxes")
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator with 0 where the denominator is 0 (two empty boxes have IoU 0, not NaN)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast_shapes(numerator.shape, denominator.shape))
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def compute_iou(
    box: np.ndarray,
    boxes: np.ndarray,
    box_area_value: float | None = None,
    boxes_area: np.ndarray | None = None,
) -> np.ndarray:
    """IoU of one box [4] with boxes [N, 4] -> [N] (matterport's signature; the areas are optional)."""
    box = _check_boxes(box, "box")
    boxes = _check_boxes(boxes, "boxes")
    if box_area_value is None:
        box_area_value = box_area(box)
    if boxes_area is None:
        boxes_area = box_area(boxes)
    y1 = np.maximum(box[0], boxes[:, 0])
    y2 = np.minimum(box[2], boxes[:, 2])
    x1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[3], boxes[:, 3])
    intersection = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = box_area_value + np.asarray(boxes_area) - intersection
    return _safe_divide(intersection, union)


def compute_overlaps(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU matrix [N, M] between boxes1 [N, 4] and boxes2 [M, 4]."""
    boxes1 = _check_boxes(boxes1, "boxes1").reshape(-1, 4)
    boxes2 = _check_boxes(boxes2, "boxes2").reshape(-1, 4)
    b1 = boxes1[:, None, :]
    b2 = boxes2[None, :, :]
    inter_h = np.maximum(np.minimum(b1[..., 2], b2[..., 2]) - np.maximum(b1[..., 0], b2[..., 0]), 0)
    inter_w = np.maximum(np.minimum(b1[..., 3], b2[..., 3]) - np.maximum(b1[..., 1], b2[..., 1]), 0)
    intersection = inter_h * inter_w
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - intersection
    return _safe_divide(intersection, union)


def apply_box_deltas(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Refine boxes [..., 4] by deltas [..., 4] (dy, dx, log(dh), log(dw)) -> float boxes [..., 4]."""
    boxes = _check_boxes(boxes, "boxes").astype(np.float32)
    deltas = _check_boxes(deltas, "deltas")
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    center_y = boxes[..., 0] + 0.5 * height + deltas[..., 0] * height
    center_x = boxes[..., 1] + 0.5 * width + deltas[..., 1] * width
    height = height * np.exp(deltas[..., 2])
    width = width * np.exp(deltas[..., 3])
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return np.stack([y1, x1, y1 + height, x1 + width], axis=-1)


def box_refinement(box: np.ndarray, gt_box: np.ndarray) -> np.ndarray:
    """Deltas [..., 4] that turn ``box`` into ``gt_box`` (inverse of apply_box_deltas); float32 math."""
    box = _check_boxes(box, "box").astype(np.float32)
    gt_box = _check_boxes(gt_box, "gt_box").astype(np.float32)
    height = box[..., 2] - box[..., 0]
    width = box[..., 3] - box[..., 1]
    gt_height = gt_box[..., 2] - gt_box[..., 0]
    gt_width = gt_box[..., 3] - gt_box[..., 1]
    dy = (gt_box[..., 0] + 0.5 * gt_height - (box[..., 0] + 0.5 * height)) / height
    dx = (gt_box[..., 1] + 0.5 * gt_width - (box[..., 1] + 0.5 * width)) / width
    dh = np.log(gt_height / height)
    dw = np.log(gt_width / width)
    return np.stack([dy, dx, dh, dw], axis=-1)


def clip_boxes(boxes: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """Clip every coordinate of boxes [..., 4] into window (wy1, wx1, wy2, wx2)."""
    boxes = _check_boxes(boxes, "boxes")
    wy1, wx1, wy2, wx2 = (float(v) for v in np.asarray(window).reshape(4))
    low = np.array([wy1, wx1, wy1, wx1])
    high = np.array([wy2, wx2, wy2, wx2])
    return np.minimum(np.maximum(boxes, low), high)


def window_to_normalized(window: Sequence[int], image_shape: Sequence[int]) -> np.ndarray:
    """Pixel window (y1, x1, y2, x2) of a molded image -> normalised float32 window [4]."""
    return norm_boxes(np.asarray(window, dtype=np.float64).reshape(4), image_shape)


# ---------------------------------------------------------------------------------------- TensorFlow


def _tf():
    import tensorflow

    return tensorflow


def _split4(boxes: tf.Tensor) -> list[tf.Tensor]:
    return _tf().unstack(boxes, num=4, axis=-1)


def apply_box_deltas_graph(boxes: tf.Tensor, deltas: tf.Tensor) -> tf.Tensor:
    """TF twin of apply_box_deltas: boxes [..., 4], deltas [..., 4] -> refined boxes [..., 4]."""
    tf = _tf()
    boxes = tf.convert_to_tensor(boxes, dtype=tf.float32)
    deltas = tf.convert_to_tensor(deltas, dtype=tf.float32)
    y1, x1, y2, x2 = _split4(boxes)
    dy, dx, dh, dw = _split4(deltas)
    height = y2 - y1
    width = x2 - x1
    center_y = y1 + 0.5 * height + dy * height
    center_x = x1 + 0.5 * width + dx * width
    height = height * tf.exp(dh)
    width = width * tf.exp(dw)
    new_y1 = center_y - 0.5 * height
    new_x1 = center_x - 0.5 * width
    return tf.stack([new_y1, new_x1, new_y1 + height, new_x1 + width], axis=-1, name="apply_box_deltas_out")


def clip_boxes_graph(boxes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """Clip boxes [..., N, 4] into window [4] (or one window per batch item, [..., 4])."""
    tf = _tf()
    boxes = tf.convert_to_tensor(boxes, dtype=tf.float32)
    window = tf.convert_to_tensor(window, dtype=tf.float32)
    if window.shape.rank is not None and boxes.shape.rank is not None and 1 < window.shape.rank < boxes.shape.rank:
        # One window per batch item: broadcast it over the box axis.
        window = tf.expand_dims(window, axis=-2)
    wy1, wx1, wy2, wx2 = _split4(window)
    y1, x1, y2, x2 = _split4(boxes)
    y1 = tf.maximum(tf.minimum(y1, wy2), wy1)
    x1 = tf.maximum(tf.minimum(x1, wx2), wx1)
    y2 = tf.maximum(tf.minimum(y2, wy2), wy1)
    x2 = tf.maximum(tf.minimum(x2, wx2), wx1)
    return tf.stack([y1, x1, y2, x2], axis=-1, name="clipped_boxes")


def _graph_scale_shift(shape: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """[H-1, W-1, H-1, W-1] and the [0, 0, 1, 1] shift; a per-image shape [batch, 2] broadcasts over the boxes."""
    tf = _tf()
    shape = tf.cast(tf.convert_to_tensor(shape), tf.float32)
    h = shape[..., 0]
    w = shape[..., 1]
    scale = tf.stack([h, w, h, w], axis=-1) - 1.0
    if shape.shape.rank is not None and boxes.shape.rank is not None and 1 < shape.shape.rank < boxes.shape.rank:
        scale = tf.expand_dims(scale, axis=-2)
    shift = tf.constant([0.0, 0.0, 1.0, 1.0])
    return scale, shift


def norm_boxes_graph(boxes: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """TF twin of norm_boxes: pixel boxes [..., 4], shape (H, W) [2] (or [batch, 2]) -> normalised float32 boxes."""
    tf = _tf()
    boxes = tf.cast(boxes, tf.float32)
    scale, shift = _graph_scale_shift(shape, boxes)
    return tf.math.divide(boxes - shift, scale)


def denorm_boxes_graph(boxes: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """TF twin of denorm_boxes: normalised boxes [..., 4] -> int32 pixel boxes (tf.round is half-to-even)."""
    tf = _tf()
    boxes = tf.cast(boxes, tf.float32)
    scale, shift = _graph_scale_shift(shape, boxes)
    return tf.cast(tf.round(boxes * scale + shift), tf.int32)


def box_refinement_graph(box: tf.Tensor, gt_box: tf.Tensor) -> tf.Tensor:
    """TF twin of box_refinement: box [..., 4], gt_box [..., 4] -> deltas [..., 4]."""
    tf = _tf()
    box = tf.cast(box, tf.float32)
    gt_box = tf.cast(gt_box, tf.float32)
    y1, x1, y2, x2 = _split4(box)
    gy1, gx1, gy2, gx2 = _split4(gt_box)
    height = y2 - y1
    width = x2 - x1
    gt_height = gy2 - gy1
    gt_width = gx2 - gx1
    dy = (gy1 + 0.5 * gt_height - (y1 + 0.5 * height)) / height
    dx = (gx1 + 0.5 * gt_width - (x1 + 0.5 * width)) / width
    dh = tf.math.log(gt_height / height)
    dw = tf.math.log(gt_width / width)
    return tf.stack([dy, dx, dh, dw], axis=-1)


def overlaps_graph(boxes1: tf.Tensor, boxes2: tf.Tensor) -> tf.Tensor:
    """IoU matrix: boxes1 [..., N, 4], boxes2 [..., M, 4] -> [..., N, M]. Two empty boxes give 0, not NaN."""
    tf = _tf()
    boxes1 = tf.cast(boxes1, tf.float32)
    boxes2 = tf.cast(boxes2, tf.float32)
    b1y1, b1x1, b1y2, b1x2 = (tf.expand_dims(c, -1) for c in _split4(boxes1))  # [..., N, 1]
    b2y1, b2x1, b2y2, b2x2 = (tf.expand_dims(c, -2) for c in _split4(boxes2))  # [..., 1, M]
    inter_h = tf.maximum(tf.minimum(b1y2, b2y2) - tf.maximum(b1y1, b2y1), 0.0)
    inter_w = tf.maximum(tf.minimum(b1x2, b2x2) - tf.maximum(b1x1, b2x1), 0.0)
    intersection = inter_h * inter_w
    area1 = (b1y2 - b1y1) * (b1x2 - b1x1)
    area2 = (b2y2 - b2y1) * (b2x2 - b2x1)
    union = area1 + area2 - intersection
    return tf.math.divide_no_nan(intersection, union)
