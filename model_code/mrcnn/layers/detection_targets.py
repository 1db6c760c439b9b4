"""DetectionTargetLayer: sample ROIs from the proposals and build the heads' targets (matterport's rules).

Shape shorthand:
    B  images in the batch      N  proposals per image (zero padded)     G  GT instances per image (zero padded)
    T  TRAIN_ROIS_PER_IMAGE     h, w  gt mask size (mini or full)        mh, mw  MASK_SHAPE

Inputs:  proposals [B, N, (y1, x1, y2, x2)] normalised; gt_class_ids [B, G] int (negative = crowd);
         gt_boxes [B, G, 4] normalised; gt_masks [B, h, w, G] bool.
Outputs: rois [B, T, 4] normalised; target_class_ids [B, T] int32; target_deltas [B, T, 4] (already divided by
         BBOX_STD_DEV); target_masks [B, T, mh, mw] float32 0/1. Positives first, then negatives, then zeros.

Rules: a proposal is positive when its best IoU with a non-crowd GT is >= 0.5, negative when it is below 0.5 and
it overlaps no crowd box (IoU < 0.001). At most int(T * ROI_POSITIVE_RATIO) random positives are kept, then
int(#positives / ROI_POSITIVE_RATIO) - #positives random negatives. Each positive regresses to and takes the
class and mask of its best GT. The whole batch is processed at once (no per-image loop): random keys + top_k
pick the samples of every image in one op.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from mrcnn.boxes import box_refinement_graph, overlaps_graph

#: IoU with a GT from which a proposal is a positive ROI.
POSITIVE_ROI_IOU = 0.5
#: Proposals touching a crowd box at least this much are never negatives.
CROWD_IOU = 0.001


def _batched_gather(params: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    return tf.gather(params, indices, batch_dims=1)


class DetectionTargetLayer(keras.layers.Layer):
    """Subsample proposals into training ROIs and compute class, box-delta and mask targets for them."""

    def __init__(
        self,
        train_rois_per_image: int,
        roi_positive_ratio: float,
        bbox_std_dev: tuple[float, float, float, float] | np.ndarray,
        mask_shape: tuple[int, int] | list[int],
        use_mini_mask: bool,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if train_rois_per_image < 1:
            raise ValueError(f"train_rois_per_image must be >= 1, got {train_rois_per_image}")
        if not 0.0 < roi_positive_ratio <= 1.0:
            raise ValueError(f"roi_positive_ratio must be in (0, 1], got {roi_positive_ratio}")
        self.train_rois_per_image = int(train_rois_per_image)
        self.roi_positive_ratio = float(roi_positive_ratio)
        self.bbox_std_dev = [float(v) for v in np.asarray(bbox_std_dev).reshape(4)]
        self.mask_shape = [int(v) for v in mask_shape]
        self.use_mini_mask = bool(use_mini_mask)

    @property
    def max_positive_rois(self) -> int:
        """Upper bound on positive ROIs per image; positives always occupy the first slots of the outputs."""
        return max(int(self.train_rois_per_image * self.roi_positive_ratio), 1)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            train_rois_per_image=self.train_rois_per_image,
            roi_positive_ratio=self.roi_positive_ratio,
            bbox_std_dev=self.bbox_std_dev,
            mask_shape=self.mask_shape,
            use_mini_mask=self.use_mini_mask,
        )
        return config

    def call(self, inputs):
        proposals, gt_class_ids, gt_boxes, gt_masks = inputs
        proposals = tf.stop_gradient(tf.cast(proposals, tf.float32))
        gt_class_ids = tf.cast(gt_class_ids, tf.int32)
        gt_boxes = tf.cast(gt_boxes, tf.float32)
        gt_masks = tf.cast(gt_masks, tf.float32)
        # One extra all-zero (invalid) GT keeps every reduction and mask gather defined when G is 0.
        gt_class_ids = tf.pad(gt_class_ids, [[0, 0], [0, 1]])
        gt_boxes = tf.pad(gt_boxes, [[0, 0], [0, 1], [0, 0]])
        gt_masks = tf.pad(gt_masks, [[0, 0], [0, 0], [0, 0], [0, 1]])
        num_rois = self.train_rois_per_image
        batch = tf.shape(proposals)[0]
        num_proposals = proposals.shape[1]
        if num_proposals is None:
            raise ValueError("DetectionTargetLayer needs a static number of proposals per image")

        valid_proposal = tf.reduce_any(tf.not_equal(proposals, 0.0), axis=-1)  # [B, N]
        valid_gt = tf.reduce_any(tf.not_equal(gt_boxes, 0.0), axis=-1) & tf.not_equal(gt_class_ids, 0)
        crowd_gt = valid_gt & (gt_class_ids < 0)
        object_gt = valid_gt & (gt_class_ids > 0)

        overlaps = overlaps_graph(proposals, gt_boxes)  # [B, N, G]
        object_overlaps = tf.where(object_gt[:, None, :], overlaps, -1.0)
        crowd_overlaps = tf.where(crowd_gt[:, None, :], overlaps, 0.0)
        roi_iou_max = tf.reduce_max(object_overlaps, axis=2)
        crowd_iou_max = tf.reduce_max(crowd_overlaps, axis=2)
        assigned_gt = tf.argmax(object_overlaps, axis=2, output_type=tf.int32)

        positive = valid_proposal & (roi_iou_max >= POSITIVE_ROI_IOU)
        negative = valid_proposal & (roi_iou_max < POSITIVE_ROI_IOU) & (crowd_iou_max < CROWD_IOU)

        # Random sampling of the whole batch: the k largest random keys among the eligible proposals.
        keys = tf.random.uniform(tf.shape(positive))
        max_positive = min(self.max_positive_rois, num_proposals)
        max_negative = min(num_rois, num_proposals)
        positive_order = tf.math.top_k(tf.where(positive, keys, -1.0), k=max(max_positive, 1)).indices
        negative_order = tf.math.top_k(tf.where(negative, keys, -1.0), k=max_negative).indices
        positive_count = tf.minimum(tf.reduce_sum(tf.cast(positive, tf.int32), axis=1), max_positive)
        wanted_negatives = (
            tf.cast(tf.cast(positive_count, tf.float32) / self.roi_positive_ratio, tf.int32) - positive_count
        )
        negative_count = tf.minimum(
            tf.minimum(wanted_negatives, num_rois - positive_count),
            tf.reduce_sum(tf.cast(negative, tf.int32), axis=1),
        )

        slot = tf.range(num_rois)[None, :]  # [1, T]
        is_positive = slot < positive_count[:, None]  # [B, T]
        is_sampled = slot < (positive_count + negative_count)[:, None]
        positive_pick = _batched_gather(positive_order, tf.broadcast_to(tf.minimum(slot, max(max_positive, 1) - 1),
                                                                        [batch, num_rois]))
        negative_pick = _batched_gather(
            negative_order, tf.clip_by_value(slot - positive_count[:, None], 0, max_negative - 1)
        )
        roi_index = tf.where(is_positive, positive_pick, negative_pick)  # [B, T] index into N

        sampled = tf.cast(is_sampled, tf.float32)[..., None]
        positive_f = tf.cast(is_positive, tf.float32)
        rois = _batched_gather(proposals, roi_index) * sampled
        roi_gt = _batched_gather(assigned_gt, roi_index)  # [B, T] index into G
        target_class_ids = tf.where(is_positive, _batched_gather(gt_class_ids, roi_gt), 0)
        roi_gt_boxes = _batched_gather(gt_boxes, roi_gt)  # [B, T, 4]
        deltas = tf.reshape(
            box_refinement_graph(tf.reshape(rois, [-1, 4]), tf.reshape(roi_gt_boxes, [-1, 4])), [batch, num_rois, 4]
        )
        target_deltas = deltas / tf.constant(self.bbox_std_dev, tf.float32) * positive_f[..., None]
        target_deltas = tf.where(tf.math.is_finite(target_deltas), target_deltas, 0.0)

        target_masks = self._mask_targets(rois, roi_gt, roi_gt_boxes, gt_masks) * positive_f[..., None, None]
        return [
            tf.stop_gradient(rois),
            tf.stop_gradient(target_class_ids),
            tf.stop_gradient(target_deltas),
            tf.stop_gradient(target_masks),
        ]

    def _mask_targets(self, rois, roi_gt, roi_gt_boxes, gt_masks) -> tf.Tensor:
        """Crop each ROI's assigned GT mask with the ROI and resize to MASK_SHAPE, rounded to 0/1."""
        batch = tf.shape(rois)[0]
        num_rois = self.train_rois_per_image
        num_gt = tf.shape(gt_masks)[3]
        # [B, h, w, G] -> [B * G, h, w, 1] so that crop_and_resize can index any image's any mask.
        masks = tf.transpose(gt_masks, [0, 3, 1, 2])
        masks = tf.reshape(masks, tf.concat([[-1], tf.shape(masks)[2:], [1]], axis=0))
        box_indices = tf.reshape(tf.range(batch)[:, None] * num_gt + roi_gt, [-1])
        boxes = rois
        if self.use_mini_mask:
            # Mini masks cover only the GT box: express the ROI in that box's unit frame.
            gt_y1, gt_x1, gt_y2, gt_x2 = tf.split(roi_gt_boxes, 4, axis=-1)
            y1, x1, y2, x2 = tf.split(rois, 4, axis=-1)
            height, width = gt_y2 - gt_y1, gt_x2 - gt_x1
            boxes = tf.concat(
                [
                    tf.math.divide_no_nan(y1 - gt_y1, height),
                    tf.math.divide_no_nan(x1 - gt_x1, width),
                    tf.math.divide_no_nan(y2 - gt_y1, height),
                    tf.math.divide_no_nan(x2 - gt_x1, width),
                ],
                axis=-1,
            )
        crops = tf.image.crop_and_resize(masks, tf.reshape(boxes, [-1, 4]), box_indices, self.mask_shape)
        crops = tf.reshape(crops, [batch, num_rois, *self.mask_shape])
        return tf.round(crops)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0][0]
        num_rois = self.train_rois_per_image
        return [
            (batch, num_rois, 4),
            (batch, num_rois),
            (batch, num_rois, 4),
            (batch, num_rois, *self.mask_shape),
        ]
