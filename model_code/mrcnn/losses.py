"""Mask R-CNN's five training losses (matterport's definitions), vectorised over the batch.

Shape shorthand:
    B  images in the batch        A  anchors per image          R  RPN box targets per image (256)
    T  TRAIN_ROIS_PER_IMAGE       C  NUM_CLASSES                h, w  MASK_SHAPE

Every loss is a scalar float32 averaged over the elements that take part in it (over the global batch in a
multi-device step); when none take part (no positive anchors, no positive ROIs) the loss is exactly 0, never
NaN. The Keras layer/metric names are the
keys of ``mrcnn.config.LOSS_NAMES``.
"""

from __future__ import annotations

import tensorflow as tf

from mrcnn.config import LOSS_NAMES
from mrcnn.distribute import global_count

__all__ = [
    "LOSS_NAMES",
    "smooth_l1",
    "rpn_class_loss",
    "rpn_bbox_loss",
    "mrcnn_class_loss",
    "mrcnn_bbox_loss",
    "mrcnn_mask_loss",
]


def smooth_l1(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Element-wise smooth-L1 (Huber with delta 1): 0.5 d^2 where |d| < 1, else |d| - 0.5."""
    diff = tf.abs(tf.cast(y_true, tf.float32) - tf.cast(y_pred, tf.float32))
    return tf.where(diff < 1.0, 0.5 * tf.square(diff), diff - 0.5)


def _masked_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """sum(values * weights) / sum(weights), 0 when the weights are all 0 (no NaN, gradient stays finite).

    In a multi-device step the denominator is the count over the whole global batch, so the replicas' partial
    losses add up to the single-device mean (see ``mrcnn.distribute``).
    """
    weights = tf.cast(weights, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), global_count(tf.reduce_sum(weights)))


def rpn_class_loss(rpn_match: tf.Tensor, rpn_class_logits: tf.Tensor) -> tf.Tensor:
    """Anchor objectness cross-entropy over the non-neutral anchors.

    rpn_match: [B, A, 1] int32, 1 positive, -1 negative, 0 neutral.
    rpn_class_logits: [B, A, 2] (background, foreground) logits.
    """
    rpn_match = tf.squeeze(tf.cast(rpn_match, tf.int32), -1)
    anchor_class = tf.cast(tf.equal(rpn_match, 1), tf.int32)
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=anchor_class, logits=tf.cast(rpn_class_logits, tf.float32)
    )
    return _masked_mean(cross_entropy, tf.not_equal(rpn_match, 0))


def rpn_bbox_loss(target_bbox: tf.Tensor, rpn_match: tf.Tensor, rpn_bbox: tf.Tensor) -> tf.Tensor:
    """Smooth-L1 between the predicted deltas of positive anchors and the packed targets.

    target_bbox: [B, R, 4] deltas of the positive anchors of each image in anchor order, zero padded.
    rpn_match: [B, A, 1] int32.  rpn_bbox: [B, A, 4] predicted deltas.
    The k-th positive anchor of an image (in anchor order) pairs with target row k of that image.
    """
    rpn_match = tf.squeeze(tf.cast(rpn_match, tf.int32), -1)
    positive = tf.equal(rpn_match, 1)
    # Row of target_bbox for each anchor: the running count of positives before it.
    target_rows = tf.cumsum(tf.cast(positive, tf.int32), axis=1, exclusive=True)
    target_rows = tf.minimum(target_rows, tf.shape(target_bbox)[1] - 1)
    target_per_anchor = tf.gather(tf.cast(target_bbox, tf.float32), target_rows, batch_dims=1)
    loss = smooth_l1(target_per_anchor, rpn_bbox)  # [B, A, 4]
    weights = tf.broadcast_to(tf.cast(positive, tf.float32)[..., None], tf.shape(loss))
    return _masked_mean(loss, weights)


def mrcnn_class_loss(
    target_class_ids: tf.Tensor, pred_class_logits: tf.Tensor, active_class_ids: tf.Tensor
) -> tf.Tensor:
    """Classifier cross-entropy over all ROIs, ignoring predictions of classes the image's source lacks.

    target_class_ids: [B, T] int (0 = background or padding).  pred_class_logits: [B, T, C].
    active_class_ids: [B, C], 1 where the class belongs to the image's dataset source.
    """
    target_class_ids = tf.cast(target_class_ids, tf.int32)
    pred_class_logits = tf.cast(pred_class_logits, tf.float32)
    pred_class_ids = tf.argmax(pred_class_logits, axis=2, output_type=tf.int32)
    # matterport uses the first image's active classes for the whole batch; per image is the same for one
    # source and right for several.
    pred_active = tf.gather(tf.cast(active_class_ids, tf.float32), pred_class_ids, batch_dims=1)
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=target_class_ids, logits=pred_class_logits
    )
    return _masked_mean(cross_entropy, pred_active)


def mrcnn_bbox_loss(target_bbox: tf.Tensor, target_class_ids: tf.Tensor, pred_bbox: tf.Tensor) -> tf.Tensor:
    """Smooth-L1 on the positive ROIs, using the deltas predicted for each ROI's target class.

    target_bbox: [B, T, 4].  target_class_ids: [B, T] int.  pred_bbox: [B, T, C, 4].
    """
    target_class_ids = tf.cast(target_class_ids, tf.int32)
    pred_for_target = tf.gather(tf.cast(pred_bbox, tf.float32), target_class_ids, batch_dims=2)  # [B, T, 4]
    loss = smooth_l1(target_bbox, pred_for_target)
    positive = tf.cast(target_class_ids > 0, tf.float32)[..., None]
    return _masked_mean(loss, tf.broadcast_to(positive, tf.shape(loss)))


def mrcnn_mask_loss(target_masks: tf.Tensor, target_class_ids: tf.Tensor, pred_masks: tf.Tensor) -> tf.Tensor:
    """Per-pixel binary cross-entropy on the positive ROIs, on the mask channel of each ROI's target class.

    target_masks: [B, T, h, w] 0/1.  target_class_ids: [B, T] int.  pred_masks: [B, T, h, w, C] sigmoid output.
    """
    target_class_ids = tf.cast(target_class_ids, tf.int32)
    pred_by_class = tf.transpose(tf.cast(pred_masks, tf.float32), [0, 1, 4, 2, 3])  # [B, T, C, h, w]
    pred_for_target = tf.gather(pred_by_class, target_class_ids, batch_dims=2)  # [B, T, h, w]
    epsilon = 1e-7  # Keras's clipping, so log(0) never occurs
    pred_for_target = tf.clip_by_value(pred_for_target, epsilon, 1.0 - epsilon)
    target_masks = tf.cast(target_masks, tf.float32)
    cross_entropy = -(
        target_masks * tf.math.log(pred_for_target) + (1.0 - target_masks) * tf.math.log(1.0 - pred_for_target)
    )
    positive = tf.cast(target_class_ids > 0, tf.float32)[..., None, None]
    return _masked_mean(cross_entropy, tf.broadcast_to(positive, tf.shape(cross_entropy)))
