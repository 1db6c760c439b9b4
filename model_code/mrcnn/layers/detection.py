"""DetectionLayer ("mrcnn_detection"): refined, per-class non-max-suppressed detections, matterport semantics.

Shape shorthand:
    B  batch     R  ROIs per image     M  ROIs in a flat list (any images)     C  NUM_CLASSES
    Dmax  DETECTION_MAX_INSTANCES
    rois [B, R, 4] normalised     mrcnn_class [B, R, C]     mrcnn_bbox [B, R, C, 4]     image_meta [B, META]
    detections [B, Dmax, 6] rows (y1, x1, y2, x2, class_id, score), normalised, zero-padded

Per ROI: class = argmax of the probabilities, score = that probability, the class's deltas x BBOX_STD_DEV
refine the ROI, the result is clipped to the image window. Kept: class > 0 and, when min_confidence is
truthy, score >= min_confidence. Then greedy NMS per (image, class), at most Dmax per image by score
(ties: lower ROI index first). All images and classes go through ONE NMS call: the pairwise IoU matrix
is computed exactly as TF's NMS kernel computes it and zeroed between different (image, class) groups,
so groups never suppress each other (same survivors as one NMS per class; see tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from mrcnn.boxes import apply_box_deltas_graph, clip_boxes_graph, norm_boxes_graph
from mrcnn.image_meta import parse_image_meta_graph

DETECTION_LAYER_NAME = "mrcnn_detection"
#: Columns of a detection row.
DETECTION_COLUMNS = ("y1", "x1", "y2", "x2", "class_id", "score")


def nms_iou_matrix(boxes: tf.Tensor) -> tf.Tensor:
    """IoU [n, n] of boxes [n, 4], written op for op like TF's NMS kernel (min/max corners, 0 for empty boxes)."""
    y1, x1, y2, x2 = tf.unstack(boxes, num=4, axis=-1)
    ymin, ymax = tf.minimum(y1, y2), tf.maximum(y1, y2)
    xmin, xmax = tf.minimum(x1, x2), tf.maximum(x1, x2)
    area = (ymax - ymin) * (xmax - xmin)
    inter_h = tf.maximum(tf.minimum(ymax[:, None], ymax[None, :]) - tf.maximum(ymin[:, None], ymin[None, :]), 0.0)
    inter_w = tf.maximum(tf.minimum(xmax[:, None], xmax[None, :]) - tf.maximum(xmin[:, None], xmin[None, :]), 0.0)
    inter = inter_h * inter_w
    union = (area[:, None] + area[None, :]) - inter
    valid = tf.logical_and(area[:, None] > 0, area[None, :] > 0)
    return tf.where(valid, inter / tf.where(valid, union, tf.ones_like(union)), tf.zeros_like(inter))


def grouped_nms(boxes: tf.Tensor, scores: tf.Tensor, groups: tf.Tensor, iou_threshold: float) -> tf.Tensor:
    """Greedy NMS where only boxes of the same group suppress each other; indices in (score desc, index asc)."""
    same_group = tf.equal(groups[:, None], groups[None, :])
    overlaps = tf.where(same_group, nms_iou_matrix(boxes), 0.0)
    return tf.image.non_max_suppression_overlaps(overlaps, scores, tf.shape(scores)[0],
                                                 overlap_threshold=iou_threshold, name="detection_nms")


def refine_detections_flat(
    rois: tf.Tensor,
    batch_indices: tf.Tensor,
    probs: tf.Tensor,
    deltas: tf.Tensor,
    windows: tf.Tensor,
    batch_size: tf.Tensor | int,
    bbox_std_dev: Sequence[float],
    min_confidence: float | None,
    max_instances: int,
    nms_threshold: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Detections from a flat ROI list.

    rois [M, 4], batch_indices [M] (image of each ROI), probs [M, C], deltas [M, C, 4], windows [B, 4]
    normalised. ROIs of one image must appear in their original order (it decides score ties).
    Returns (detections [B, Dmax, 6] zero-padded, counts [B] int32).
    """
    batch_indices = tf.cast(batch_indices, tf.int32)
    num_classes = tf.shape(probs)[1]
    class_ids = tf.argmax(probs, axis=1, output_type=tf.int32)
    pick = tf.stack([tf.range(tf.shape(probs)[0]), class_ids], axis=1)
    class_scores = tf.gather_nd(probs, pick)
    class_deltas = tf.gather_nd(deltas, pick) * tf.constant(np.reshape(bbox_std_dev, [1, 4]), tf.float32)
    refined = apply_box_deltas_graph(rois, class_deltas)
    refined = clip_boxes_graph(refined, tf.gather(windows, batch_indices))

    keep = class_ids > 0
    if min_confidence:  # matterport: a falsy value (0, 0.0, None) disables the filter
        keep = tf.logical_and(keep, class_scores >= min_confidence)
    candidates = tf.where(keep)[:, 0]
    cand_boxes = tf.gather(refined, candidates)
    cand_scores = tf.gather(class_scores, candidates)
    cand_groups = tf.gather(batch_indices * num_classes + class_ids, candidates)
    survivors = tf.gather(candidates, grouped_nms(cand_boxes, cand_scores, cand_groups, nms_threshold))

    # Survivors are in score order; each image keeps its first Dmax.
    image_of = tf.gather(batch_indices, survivors)
    one_hot = tf.one_hot(image_of, batch_size, dtype=tf.int32)
    rank = tf.reduce_sum(tf.cumsum(one_hot, axis=0) * one_hot, axis=1) - 1
    taken = rank < max_instances
    rows = tf.concat([
        tf.gather(refined, survivors),
        tf.cast(tf.gather(class_ids, survivors), tf.float32)[:, None],
        tf.gather(class_scores, survivors)[:, None],
    ], axis=1)
    detections = tf.scatter_nd(
        tf.boolean_mask(tf.stack([image_of, rank], axis=1), taken),
        tf.boolean_mask(rows, taken),
        tf.stack([tf.cast(batch_size, tf.int32), max_instances, 6]),
    )
    counts = tf.minimum(tf.reduce_sum(one_hot, axis=0), max_instances)
    return tf.reshape(detections, [-1, max_instances, 6]), counts


def normalized_windows(image_meta: tf.Tensor) -> tf.Tensor:
    """Windows [B, 4] of image_meta, normalised with the FIRST image's molded shape (as matterport)."""
    meta = parse_image_meta_graph(image_meta)
    return norm_boxes_graph(meta["window"], meta["image_shape"][0][:2])


class DetectionLayer(keras.layers.Layer):
    """Inputs [rois, mrcnn_class, mrcnn_bbox, image_meta]; output detections [B, Dmax, 6].

    Every ROI row takes part, padding rows included (matterport). ``DetectionLayer(config)`` or explicit values.
    """

    def __init__(self, config: Any = None, *, bbox_std_dev: Sequence[float] | None = None,
                 min_confidence: float | None = None, max_instances: int | None = None,
                 nms_threshold: float | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("name", DETECTION_LAYER_NAME)
        super().__init__(**kwargs)
        if config is not None:
            bbox_std_dev = config.BBOX_STD_DEV if bbox_std_dev is None else bbox_std_dev
            min_confidence = config.DETECTION_MIN_CONFIDENCE if min_confidence is None else min_confidence
            max_instances = config.DETECTION_MAX_INSTANCES if max_instances is None else max_instances
            nms_threshold = config.DETECTION_NMS_THRESHOLD if nms_threshold is None else nms_threshold
        if bbox_std_dev is None or max_instances is None or nms_threshold is None:
            raise ValueError("DetectionLayer needs a config or bbox_std_dev, max_instances and nms_threshold")
        if int(max_instances) < 1:
            raise ValueError(f"max_instances must be >= 1, got {max_instances}")
        self.bbox_std_dev = [float(v) for v in np.asarray(bbox_std_dev).reshape(4)]
        self.min_confidence = float(min_confidence) if min_confidence else 0.0
        self.max_instances = int(max_instances)
        self.nms_threshold = float(nms_threshold)

    def call(self, inputs: list) -> tf.Tensor:
        rois, mrcnn_class, mrcnn_bbox, image_meta = inputs
        shape = tf.shape(rois)
        batch, num_rois = shape[0], shape[1]
        num_classes = tf.shape(mrcnn_class)[2]
        detections, _ = refine_detections_flat(
            tf.reshape(rois, [-1, 4]),
            tf.repeat(tf.range(batch), num_rois),
            tf.reshape(mrcnn_class, [-1, num_classes]),
            tf.reshape(mrcnn_bbox, [-1, num_classes, 4]),
            normalized_windows(image_meta),
            batch,
            self.bbox_std_dev,
            self.min_confidence,
            self.max_instances,
            self.nms_threshold,
        )
        return detections

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return (None, self.max_instances, 6)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(bbox_std_dev=self.bbox_std_dev, min_confidence=self.min_confidence,
                      max_instances=self.max_instances, nms_threshold=self.nms_threshold)
        return config
