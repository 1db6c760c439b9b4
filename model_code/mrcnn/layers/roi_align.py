"""PyramidROIAlign: crop each box from the pyramid level its size selects, matterport semantics.

Shape shorthand:
    B  batch     N  boxes per image     M  boxes in a flat list     p  pool size     D  feature channels
    boxes [B, N, 4] normalised (y1, x1, y2, x2)     feature maps P2..P5 [B, h_l, w_l, D]
    pooled [B, N, p, p, D]     (flat variant: boxes [M, 4] + box_indices [M] -> [M, p, p, D])

Level rule (FPN paper eq. 1, matterport constants): level = clip(4 + round(log2(sqrt(h*w) / (224 / sqrt(area)))),
2, 5) with h, w the normalised box size, area = molded H*W of the FIRST image in the batch and round = tf.round
(half to even). Zero-size boxes go to level 2. Sampling is tf.image.crop_and_resize (bilinear, one sample per
bin at y1*(h_l-1) + i*(y2-y1)*(h_l-1)/(p-1)); boxes get stop_gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras as keras

from mrcnn.image_meta import parse_image_meta_graph

ROI_ALIGN_CLASSIFIER_NAME = "roi_align_classifier"
ROI_ALIGN_MASK_NAME = "roi_align_mask"
#: Pyramid levels the heads crop from (P2..P5) and the canonical ImageNet size of the level rule.
MIN_LEVEL, MAX_LEVEL, CANONICAL_LEVEL, CANONICAL_SIZE = 2, 5, 4, 224.0


def roi_levels(boxes: tf.Tensor, image_area: tf.Tensor) -> tf.Tensor:
    """Pyramid level (int32 in 2..5) of each normalised box [..., 4] for a molded image of ``image_area`` pixels."""
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    h = y2 - y1
    w = x2 - x1
    area = h * w
    safe_area = tf.where(area > 0, area, tf.ones_like(area))
    # log(x)/log(2), written as matterport's log2_graph, so rounding decisions are bit-identical.
    ratio = tf.sqrt(safe_area) / (CANONICAL_SIZE / tf.sqrt(tf.cast(image_area, tf.float32)))
    level = CANONICAL_LEVEL + tf.cast(tf.round(tf.math.log(ratio) / tf.math.log(2.0)), tf.int32)
    level = tf.minimum(MAX_LEVEL, tf.maximum(MIN_LEVEL, level))
    return tf.where(area > 0, level, MIN_LEVEL)


def roi_align_flat(boxes: tf.Tensor, box_indices: tf.Tensor, feature_maps: Sequence[tf.Tensor],
                   image_area: tf.Tensor, pool_size: int) -> tf.Tensor:
    """ROIAlign of a flat box list: boxes [M, 4], box_indices [M] (image of each box) -> [M, p, p, D]."""
    boxes = tf.stop_gradient(boxes)
    box_indices = tf.cast(box_indices, tf.int32)
    levels = roi_levels(boxes, image_area)
    pooled, order = [], []
    for offset, feature_map in enumerate(feature_maps):
        ix = tf.where(tf.equal(levels, MIN_LEVEL + offset))[:, 0]
        pooled.append(tf.image.crop_and_resize(feature_map, tf.gather(boxes, ix), tf.gather(box_indices, ix),
                                               (pool_size, pool_size), method="bilinear"))
        order.append(ix)
    pooled = tf.concat(pooled, axis=0)
    order = tf.cast(tf.concat(order, axis=0), tf.int32)
    # Every box is in exactly one level, so `order` is a permutation; invert it to restore the input order.
    return tf.gather(pooled, tf.math.invert_permutation(order))


def roi_align(boxes: tf.Tensor, feature_maps: Sequence[tf.Tensor], image_area: tf.Tensor,
              pool_size: int) -> tf.Tensor:
    """Batched ROIAlign: boxes [B, N, 4] -> [B, N, p, p, D]."""
    shape = tf.shape(boxes)
    batch, num_boxes = shape[0], shape[1]
    flat_boxes = tf.reshape(boxes, [-1, 4])
    box_indices = tf.repeat(tf.range(batch), num_boxes)
    pooled = roi_align_flat(flat_boxes, box_indices, feature_maps, image_area, pool_size)
    depth = feature_maps[0].shape[-1] if feature_maps[0].shape[-1] is not None else tf.shape(feature_maps[0])[-1]
    return tf.reshape(pooled, [batch, num_boxes, pool_size, pool_size, depth])


def first_image_area(image_meta: tf.Tensor) -> tf.Tensor:
    """Molded H*W of the first image of the batch, from image_meta (matterport uses the first image)."""
    image_shape = parse_image_meta_graph(image_meta)["image_shape"][0]
    return tf.cast(image_shape[0] * image_shape[1], tf.float32)


class PyramidROIAlign(keras.layers.Layer):
    """Inputs [boxes [B, N, 4], image_meta [B, META], P2, P3, P4, P5]; output [B, N, p, p, D]."""

    def __init__(self, pool_shape: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        pool_shape = tuple(int(v) for v in pool_shape)
        if len(pool_shape) != 2 or pool_shape[0] != pool_shape[1] or pool_shape[0] < 1:
            raise ValueError(f"pool_shape must be a square (p, p) with p >= 1, got {pool_shape}")
        self.pool_shape = pool_shape

    def call(self, inputs: list) -> tf.Tensor:
        boxes, image_meta = inputs[0], inputs[1]
        feature_maps = inputs[2:]
        return roi_align(boxes, feature_maps, first_image_area(image_meta), self.pool_shape[0])

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return tuple(input_shape[0][:2]) + self.pool_shape + (input_shape[2][-1],)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(pool_shape=list(self.pool_shape))
        return config
