"""Evaluation helpers with matterport's semantics: mask IoU, prediction/GT matching, VOC-style AP, recall.

Shape shorthand:
    G, P      ground-truth and predicted instances
    masks     [H, W, G] / [H, W, P] (values > 0.5 are foreground)
    boxes     [G, (y1, x1, y2, x2)] / [P, ...] pixels; all-zero rows are padding and are trimmed

Ties are broken as matterport's ``np.argsort(...)[::-1]`` does on small arrays: among equal scores (or equal IoUs)
the later index comes first. We use a stable sort so this holds for any array size.
"""

from __future__ import annotations

import numpy as np

from mrcnn.boxes import compute_overlaps


def trim_zeros(x: np.ndarray) -> np.ndarray:
    """Drop rows that are all zeros (padding) from a 2-D array."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"trim_zeros expects a 2-D array, got shape {x.shape}")
    return x[~np.all(x == 0, axis=1)]


def compute_overlaps_masks(masks1: np.ndarray, masks2: np.ndarray) -> np.ndarray:
    """IoU [N1, N2] between masks1 [H, W, N1] and masks2 [H, W, N2]; an empty pair has IoU 0."""
    masks1 = np.asarray(masks1)
    masks2 = np.asarray(masks2)
    if masks1.shape[-1] == 0 or masks2.shape[-1] == 0:
        return np.zeros((masks1.shape[-1], masks2.shape[-1]))
    if masks1.shape[:-1] != masks2.shape[:-1]:
        raise ValueError(f"masks must share their spatial shape, got {masks1.shape} and {masks2.shape}")
    flat1 = np.reshape(masks1 > 0.5, (-1, masks1.shape[-1])).astype(np.float32)
    flat2 = np.reshape(masks2 > 0.5, (-1, masks2.shape[-1])).astype(np.float32)
    area1 = flat1.sum(axis=0)
    area2 = flat2.sum(axis=0)
    intersections = flat1.T @ flat2
    union = area1[:, None] + area2[None, :] - intersections
    overlaps = np.zeros_like(intersections)
    np.divide(intersections, union, out=overlaps, where=union > 0)
    return overlaps


def _descending(values: np.ndarray) -> np.ndarray:
    """Indices sorting ``values`` high to low; equal values in reverse index order (matterport's tie order)."""
    return np.argsort(values, kind="stable")[::-1]


def compute_matches(
    gt_boxes: np.ndarray,
    gt_class_ids: np.ndarray,
    gt_masks: np.ndarray,
    pred_boxes: np.ndarray,
    pred_class_ids: np.ndarray,
    pred_scores: np.ndarray,
    pred_masks: np.ndarray,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching of predictions (by descending score) to GT by mask IoU -> (gt_match, pred_match, overlaps).

    gt_match[j] is the index (in score order) of the prediction matched to GT j, or -1; pred_match[i] is the GT
    index matched to prediction i (score order), or -1. overlaps is mask IoU [P, G] in score order. Each prediction
    walks the GTs by descending IoU, skips GTs already matched, stops at the first IoU < iou_threshold, and takes
    the first one of its class. As in matterport, ``score_threshold`` cuts the walk at the first GT whose IoU is
    below it (it compares IoUs, not scores).
    """
    # All-zero boxes are padding. matterport assumes they trail and cuts the other arrays to the count; we drop
    # exactly those rows everywhere, which is the same for trailing padding and also right for a zero row inside.
    gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)
    gt_keep = ~np.all(gt_boxes == 0, axis=1)
    gt_boxes = gt_boxes[gt_keep]
    gt_class_ids = np.asarray(gt_class_ids)[: len(gt_keep)][gt_keep]
    gt_masks = np.asarray(gt_masks)[..., : len(gt_keep)][..., gt_keep]
    pred_boxes = np.asarray(pred_boxes).reshape(-1, 4)
    pred_keep = ~np.all(pred_boxes == 0, axis=1)
    pred_boxes = pred_boxes[pred_keep]
    pred_scores = np.asarray(pred_scores)[: len(pred_keep)][pred_keep]
    pred_class_ids = np.asarray(pred_class_ids)[: len(pred_keep)][pred_keep]
    pred_masks = np.asarray(pred_masks)[..., : len(pred_keep)][..., pred_keep]
    order = _descending(pred_scores)
    pred_class_ids = pred_class_ids[order]
    pred_masks = pred_masks[..., order]

    overlaps = compute_overlaps_masks(pred_masks, gt_masks)
    pred_match = -1 * np.ones([pred_boxes.shape[0]])
    gt_match = -1 * np.ones([gt_boxes.shape[0]])
    for i in range(pred_boxes.shape[0]):
        candidates = _descending(overlaps[i])
        below = np.where(overlaps[i, candidates] < score_threshold)[0]
        if below.size > 0:
            candidates = candidates[: below[0]]
        for j in candidates:
            if gt_match[j] > -1:
                continue
            if overlaps[i, j] < iou_threshold:
                break
            if pred_class_ids[i] == gt_class_ids[j]:
                gt_match[j] = i
                pred_match[i] = j
                break
    return gt_match, pred_match, overlaps


def compute_ap(
    gt_boxes: np.ndarray,
    gt_class_ids: np.ndarray,
    gt_masks: np.ndarray,
    pred_boxes: np.ndarray,
    pred_class_ids: np.ndarray,
    pred_scores: np.ndarray,
    pred_masks: np.ndarray,
    iou_threshold: float = 0.5,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Average precision at one mask-IoU threshold (VOC all-points) -> (mAP, precisions, recalls, overlaps).

    With no ground truth the recall is undefined and mAP is NaN (matterport divides by zero there).
    """
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks, iou_threshold
    )
    hits = np.cumsum(pred_match > -1)
    precisions = hits / (np.arange(len(pred_match)) + 1)
    if len(gt_match) == 0:
        recalls = np.full(len(pred_match), np.nan, dtype=np.float32)
    else:
        recalls = hits.astype(np.float32) / len(gt_match)
    precisions = np.concatenate([[0], precisions, [0]])
    recalls = np.concatenate([[0], recalls, [1]])
    # Precision envelope: non-increasing from the right.
    precisions = np.maximum.accumulate(precisions[::-1])[::-1]
    if len(gt_match) == 0:
        return float("nan"), precisions, recalls, overlaps
    steps = np.where(recalls[:-1] != recalls[1:])[0] + 1
    mean_ap = float(np.sum((recalls[steps] - recalls[steps - 1]) * precisions[steps]))
    return mean_ap, precisions, recalls, overlaps


def compute_ap_range(
    gt_box: np.ndarray,
    gt_class_id: np.ndarray,
    gt_mask: np.ndarray,
    pred_box: np.ndarray,
    pred_class_id: np.ndarray,
    pred_score: np.ndarray,
    pred_mask: np.ndarray,
    iou_thresholds: np.ndarray | None = None,
    verbose: int = 1,
) -> float:
    """Mean of compute_ap over IoU thresholds (default 0.5:0.05:0.95); verbose prints each, as matterport."""
    thresholds = np.arange(0.5, 1.0, 0.05) if iou_thresholds is None else np.asarray(iou_thresholds)
    aps = []
    for threshold in thresholds:
        ap, _, _, _ = compute_ap(gt_box, gt_class_id, gt_mask, pred_box, pred_class_id, pred_score, pred_mask,
                                 iou_threshold=threshold)
        if verbose:
            print(f"AP @{threshold:.2f}:\t {ap:.3f}")
        aps.append(ap)
    mean_ap = float(np.array(aps).mean())
    if verbose:
        print(f"AP @{thresholds[0]:.2f}-{thresholds[-1]:.2f}:\t {mean_ap:.3f}")
    return mean_ap


def compute_recall(pred_boxes: np.ndarray, gt_boxes: np.ndarray, iou: float) -> tuple[float, np.ndarray]:
    """Box recall: fraction of GT boxes that some prediction overlaps with IoU >= iou -> (recall, positive_ids)."""
    gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)
    if gt_boxes.shape[0] == 0:
        raise ValueError("compute_recall needs at least one ground-truth box")
    overlaps = compute_overlaps(pred_boxes, gt_boxes)
    if overlaps.shape[0] == 0:
        return 0.0, np.zeros(0, dtype=np.int64)
    iou_max = overlaps.max(axis=1)
    iou_argmax = overlaps.argmax(axis=1)
    positive_ids = np.where(iou_max >= iou)[0]
    matched_gt = iou_argmax[positive_ids]
    return len(set(matched_gt.tolist())) / gt_boxes.shape[0], positive_ids
