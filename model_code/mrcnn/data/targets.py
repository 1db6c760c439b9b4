"""RPN training targets in NumPy (matterport's ``build_rpn_targets``), per image, in pixel coordinates.

Shape shorthand:
    A  anchors of the image          G  ground-truth instances (crowds included, class id < 0)
    R  RPN_TRAIN_ANCHORS_PER_IMAGE   rows of the packed delta targets

Anchor labelling:
    * negative (-1): best IoU with any non-crowd GT < 0.3 and IoU with every crowd box < 0.001;
    * positive (+1): IoU >= 0.7 with some GT, or the best anchor(s) of a GT (all ties);
    * neutral (0): the rest, plus random positives beyond R/2 and random negatives beyond R - #positives.
One deliberate difference from matterport: a GT box that overlaps no anchor at all (IoU 0 everywhere) marks no
anchor positive; matterport's ``overlaps == max`` test would mark every anchor of the image positive then.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrcnn.boxes import box_refinement, compute_overlaps

#: Anchors with at least this IoU with a non-crowd GT are positive.
POSITIVE_IOU = 0.7
#: Anchors whose best IoU is below this are negative.
NEGATIVE_IOU = 0.3
#: Anchors touching a crowd box at least this much are never negative.
CROWD_IOU = 0.001


@dataclass
class RpnTargets:
    """rpn_match [A] int32 (1 / -1 / 0) and rpn_bbox [R, 4] float32 (positive anchors' deltas / std, padded)."""

    rpn_match: np.ndarray
    rpn_bbox: np.ndarray

    @property
    def num_positive(self) -> int:
        return int(np.sum(self.rpn_match == 1))

    @property
    def num_negative(self) -> int:
        return int(np.sum(self.rpn_match == -1))


def build_rpn_targets(
    anchors: np.ndarray,
    gt_class_ids: np.ndarray,
    gt_boxes: np.ndarray,
    anchors_per_image: int,
    bbox_std_dev: np.ndarray,
    rng: np.random.Generator | None = None,
) -> RpnTargets:
    """Label anchors and compute the deltas of the positive ones.

    anchors: [A, (y1, x1, y2, x2)] pixels.  gt_class_ids: [G] int (negative = crowd).  gt_boxes: [G, 4] pixels.
    anchors_per_image: RPN_TRAIN_ANCHORS_PER_IMAGE.  bbox_std_dev: RPN_BBOX_STD_DEV [4].
    rng: source of the random subsampling (a fresh default generator when None).
    """
    anchors = np.asarray(anchors, dtype=np.float32)
    gt_class_ids = np.asarray(gt_class_ids).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise ValueError(f"anchors must be [A, 4], got shape {anchors.shape}")
    if gt_class_ids.shape[0] != gt_boxes.shape[0]:
        raise ValueError(f"{gt_class_ids.shape[0]} class ids for {gt_boxes.shape[0]} GT boxes")
    if anchors_per_image < 2:
        raise ValueError(f"anchors_per_image must be >= 2, got {anchors_per_image}")
    rng = rng if rng is not None else np.random.default_rng()
    num_anchors = anchors.shape[0]
    rpn_match = np.zeros([num_anchors], dtype=np.int32)
    rpn_bbox = np.zeros([anchors_per_image, 4], dtype=np.float32)

    crowd = gt_class_ids < 0
    if np.any(crowd):
        crowd_iou_max = compute_overlaps(anchors, gt_boxes[crowd]).max(axis=1)
        not_near_crowd = crowd_iou_max < CROWD_IOU
        gt_boxes = gt_boxes[~crowd]
    else:
        not_near_crowd = np.ones([num_anchors], dtype=bool)

    if gt_boxes.shape[0] == 0:
        anchor_iou_max = np.zeros([num_anchors], dtype=np.float32)
        anchor_iou_argmax = np.zeros([num_anchors], dtype=np.int64)
    else:
        overlaps = compute_overlaps(anchors, gt_boxes)  # [A, G]
        anchor_iou_argmax = np.argmax(overlaps, axis=1)
        anchor_iou_max = overlaps[np.arange(num_anchors), anchor_iou_argmax]

    rpn_match[(anchor_iou_max < NEGATIVE_IOU) & not_near_crowd] = -1
    if gt_boxes.shape[0]:
        # Each GT's best anchors become positive (even below 0.7) so that every GT gets some anchor.
        gt_iou_max = overlaps.max(axis=0)
        best_for_gt = (overlaps == gt_iou_max[None, :]) & (gt_iou_max[None, :] > 0)
        rpn_match[np.any(best_for_gt, axis=1)] = 1
    rpn_match[anchor_iou_max >= POSITIVE_IOU] = 1

    positive_ids = np.flatnonzero(rpn_match == 1)
    extra = len(positive_ids) - anchors_per_image // 2
    if extra > 0:
        rpn_match[rng.choice(positive_ids, extra, replace=False)] = 0
    negative_ids = np.flatnonzero(rpn_match == -1)
    extra = len(negative_ids) - (anchors_per_image - int(np.sum(rpn_match == 1)))
    if extra > 0:
        rpn_match[rng.choice(negative_ids, extra, replace=False)] = 0

    positive_ids = np.flatnonzero(rpn_match == 1)
    if len(positive_ids):
        deltas = box_refinement(anchors[positive_ids], gt_boxes[anchor_iou_argmax[positive_ids]])
        rpn_bbox[: len(positive_ids)] = np.asarray(deltas, np.float32) / np.asarray(bbox_std_dev, np.float32)
    return RpnTargets(rpn_match=rpn_match, rpn_bbox=rpn_bbox)
