"""matterport's ``mrcnn.utils`` public surface, gathered from the modules that own each piece.

Shape shorthand:
    masks  [H, W, N] bool, instances on the last axis
    boxes  [N, (y1, x1, y2, x2)] pixels, y2/x2 exclusive

Code written against matterport (``from mrcnn import utils; utils.resize_image(...)``) runs unchanged. The
implementations live in mrcnn.boxes (coordinates), mrcnn.anchors, mrcnn.resize (images and masks),
mrcnn.dataset, mrcnn.metrics and mrcnn.download; only small helpers are defined here. Importing this module does
not import TensorFlow (``batch_slice`` does, on first use).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mrcnn.anchors import generate_anchors, generate_pyramid_anchors
from mrcnn.boxes import (
    apply_box_deltas,
    box_refinement,
    compute_iou,
    compute_overlaps,
    denorm_boxes,
    norm_boxes,
)
from mrcnn.dataset import Dataset
from mrcnn.download import (
    COCO_MODEL_BYTES,
    COCO_MODEL_URL,
    IMAGENET_WEIGHTS_MD5,
    IMAGENET_WEIGHTS_URL,
    WeightsDownloadError,
    download_imagenet_weights,
    download_trained_weights,
)
from mrcnn.metrics import (
    compute_ap,
    compute_ap_range,
    compute_matches,
    compute_overlaps_masks,
    compute_recall,
    trim_zeros,
)
from mrcnn.resize import (
    expand_mask,
    minimize_mask,
    resize,
    resize_image,
    resize_mask,
    unmold_mask,
)

__all__ = [
    "COCO_MODEL_BYTES", "COCO_MODEL_URL", "IMAGENET_WEIGHTS_MD5", "IMAGENET_WEIGHTS_URL", "Dataset",
    "WeightsDownloadError", "apply_box_deltas", "batch_slice", "box_refinement", "compute_ap", "compute_ap_range",
    "compute_iou", "compute_matches", "compute_overlaps", "compute_overlaps_masks", "compute_recall", "denorm_boxes",
    "download_imagenet_weights", "download_trained_weights", "expand_mask", "extract_bboxes", "generate_anchors",
    "generate_pyramid_anchors", "minimize_mask", "non_max_suppression", "norm_boxes", "resize", "resize_image",
    "resize_mask", "trim_zeros", "unmold_mask",
]


def extract_bboxes(mask: np.ndarray) -> np.ndarray:
    """Tight boxes int32 [N, (y1, x1, y2, x2)] of masks [H, W, N]; y2/x2 are last index + 1; empty -> zeros."""
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be [H, W, N], got shape {mask.shape}")
    count = mask.shape[-1]
    boxes = np.zeros([count, 4], dtype=np.int32)
    if count == 0 or mask.shape[0] == 0 or mask.shape[1] == 0:
        return boxes
    rows = np.any(mask, axis=1)  # [H, N]
    cols = np.any(mask, axis=0)  # [W, N]
    present = cols.any(axis=0)
    height, width = mask.shape[:2]
    y1 = rows.argmax(axis=0)
    y2 = height - rows[::-1].argmax(axis=0)
    x1 = cols.argmax(axis=0)
    x2 = width - cols[::-1].argmax(axis=0)
    boxes[present] = np.stack([y1, x1, y2, x2], axis=1)[present]
    return boxes


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS: indices int32 of kept boxes, highest score first; a box is dropped when IoU > threshold."""
    boxes = np.asarray(boxes)
    scores = np.asarray(scores)
    if boxes.shape[0] == 0:
        raise ValueError("non_max_suppression needs at least one box")
    if boxes.dtype.kind != "f":
        boxes = boxes.astype(np.float32)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = scores.argsort()[::-1]
    picked = []
    while order.size > 0:
        best = order[0]
        picked.append(best)
        rest = order[1:]
        iou = compute_iou(boxes[best], boxes[rest], areas[best], areas[rest])
        order = rest[iou <= threshold]
    return np.array(picked, dtype=np.int32)


def batch_slice(
    inputs: Any, graph_fn: Callable[..., Any], batch_size: int, names: Sequence[str] | None = None
) -> Any:
    """Run ``graph_fn`` on each batch item of the tensors in ``inputs`` and stack the results (matterport's helper).

    For ops that do not support a batch dimension; prefer batched TF ops in hot paths.
    """
    import tensorflow as tf

    if not isinstance(inputs, list):
        inputs = [inputs]
    outputs = []
    for i in range(batch_size):
        output_slice = graph_fn(*[x[i] for x in inputs])
        if not isinstance(output_slice, (tuple, list)):
            output_slice = [output_slice]
        outputs.append(output_slice)
    outputs = list(zip(*outputs, strict=True))
    if names is None:
        names = [None] * len(outputs)
    result = [tf.stack(o, axis=0, name=n) for o, n in zip(outputs, names, strict=True)]
    return result[0] if len(result) == 1 else result
