"""ProposalLayer ("ROI"): RPN scores and deltas -> non-max-suppressed proposals, matterport semantics.

Shape shorthand:
    B  batch     N  anchors per image     K  min(PRE_NMS_LIMIT, N)     P  proposal_count
    rpn_probs [B, N, 2]   rpn_bbox [B, N, 4] (dy, dx, log dh, log dw)   anchors [B, N, 4] normalised
    proposals [B, P, 4] normalised (y1, x1, y2, x2), zero rows pad images with fewer than P survivors

Per image: top-K anchors by foreground score (sorted), deltas x RPN_BBOX_STD_DEV applied to those
anchors, every coordinate clipped to [0, 1], greedy NMS (IoU > threshold suppresses) keeping at most P
boxes in score order, zero-padded. The batch is handled by vectorised ops; only the NMS kernel runs
per image (tf.map_fn inside the graph), because TF's exact NMS kernel is single-image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from mrcnn.boxes import apply_box_deltas_graph

PROPOSAL_LAYER_NAME = "ROI"


def clip_to_unit(boxes: tf.Tensor) -> tf.Tensor:
    """Clip normalised boxes [..., 4] to the image, [0, 1] for every coordinate."""
    return tf.clip_by_value(boxes, 0.0, 1.0)


def generate_proposals(
    rpn_probs: tf.Tensor,
    rpn_bbox: tf.Tensor,
    anchors: tf.Tensor,
    proposal_count: int,
    nms_threshold: float,
    rpn_bbox_std_dev: Sequence[float],
    pre_nms_limit: int,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Batched proposals: returns (proposals [B, P, 4] zero-padded, counts [B] int32 of real rows)."""
    scores = rpn_probs[:, :, 1]
    deltas = rpn_bbox * tf.constant(np.reshape(rpn_bbox_std_dev, [1, 1, 4]), tf.float32)
    num_anchors = tf.shape(anchors)[1]
    k = tf.minimum(pre_nms_limit, num_anchors)
    # top_k is sorted, ties go to the lower anchor index, as in matterport.
    top_scores, top_ix = tf.math.top_k(scores, k, sorted=True, name="top_anchors")
    top_deltas = tf.gather(deltas, top_ix, batch_dims=1)
    top_anchors = tf.gather(anchors, top_ix, batch_dims=1)
    batch = tf.shape(scores)[0]
    boxes = apply_box_deltas_graph(tf.reshape(top_anchors, [-1, 4]), tf.reshape(top_deltas, [-1, 4]))
    boxes = tf.reshape(clip_to_unit(boxes), [batch, k, 4])

    def nms_one(args: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        image_boxes, image_scores = args
        keep = tf.image.non_max_suppression(image_boxes, image_scores, proposal_count, nms_threshold,
                                            name="rpn_non_max_suppression")
        kept = tf.gather(image_boxes, keep)
        count = tf.shape(keep)[0]
        kept = tf.pad(kept, [[0, proposal_count - count], [0, 0]])
        return kept, count

    proposals, counts = tf.map_fn(
        nms_one, (boxes, top_scores),
        fn_output_signature=(tf.TensorSpec([proposal_count, 4], tf.float32), tf.TensorSpec([], tf.int32)),
    )
    return proposals, counts


class ProposalLayer(keras.layers.Layer):
    """Matterport's ProposalLayer. Inputs [rpn_probs, rpn_bbox, anchors]; output proposals [B, P, 4].

    Accepts matterport's signature ``ProposalLayer(proposal_count, nms_threshold, config)`` or explicit
    ``rpn_bbox_std_dev=`` / ``pre_nms_limit=`` values (what get_config stores).
    """

    def __init__(self, proposal_count: int, nms_threshold: float, config: Any = None, *,
                 rpn_bbox_std_dev: Sequence[float] | None = None, pre_nms_limit: int | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("name", PROPOSAL_LAYER_NAME)
        super().__init__(**kwargs)
        if config is not None:
            rpn_bbox_std_dev = config.RPN_BBOX_STD_DEV if rpn_bbox_std_dev is None else rpn_bbox_std_dev
            pre_nms_limit = config.PRE_NMS_LIMIT if pre_nms_limit is None else pre_nms_limit
        if rpn_bbox_std_dev is None or pre_nms_limit is None:
            raise ValueError("ProposalLayer needs a config or both rpn_bbox_std_dev and pre_nms_limit")
        if int(proposal_count) < 1 or int(pre_nms_limit) < 1:
            raise ValueError("proposal_count and pre_nms_limit must be >= 1")
        self.proposal_count = int(proposal_count)
        self.nms_threshold = float(nms_threshold)
        self.rpn_bbox_std_dev = [float(v) for v in np.asarray(rpn_bbox_std_dev).reshape(4)]
        self.pre_nms_limit = int(pre_nms_limit)

    def call(self, inputs: list) -> tf.Tensor:
        rpn_probs, rpn_bbox, anchors = inputs
        proposals, _ = generate_proposals(rpn_probs, rpn_bbox, anchors, self.proposal_count, self.nms_threshold,
                                          self.rpn_bbox_std_dev, self.pre_nms_limit)
        return proposals

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return (None, self.proposal_count, 4)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(proposal_count=self.proposal_count, nms_threshold=self.nms_threshold,
                      rpn_bbox_std_dev=self.rpn_bbox_std_dev, pre_nms_limit=self.pre_nms_limit)
        return config
