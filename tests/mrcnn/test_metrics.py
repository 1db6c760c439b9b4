"""mrcnn.metrics (via mrcnn.utils): mask IoU, matching with ties, hand-computed AP, AP range, recall."""

from __future__ import annotations

import numpy as np
import pytest

from mrcnn import utils


def box_masks(boxes, shape=(10, 10)):
    """Masks [H, W, N] filled inside pixel boxes (y1, x1, y2, x2)."""
    masks = np.zeros(shape + (len(boxes),), bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        masks[y1:y2, x1:x2, i] = True
    return masks


GT_BOXES = np.array([[0, 0, 5, 5], [5, 5, 10, 10], [0, 5, 5, 10]])
GT_IDS = np.array([1, 1, 2])


def test_compute_overlaps_masks_hand_computed():
    a = box_masks([[0, 0, 5, 5], [0, 0, 10, 10]])
    b = box_masks([[0, 0, 5, 10], [9, 9, 10, 10]])
    overlaps = utils.compute_overlaps_masks(a, b)
    np.testing.assert_allclose(overlaps, [[25 / 50, 0], [50 / 100, 1 / 100]])
    assert utils.compute_overlaps_masks(a, np.zeros((10, 10, 0))).shape == (2, 0)
    empty = np.zeros((10, 10, 1), bool)
    assert utils.compute_overlaps_masks(empty, empty)[0, 0] == 0  # not NaN


def test_compute_ap_hand_computed_case():
    # Score order: p0 = GT0 (hit), p1 = empty region (miss), p2 = GT1 (hit), p3 = GT2's region but wrong class.
    pred_boxes = np.array([[5, 5, 10, 10], [0, 5, 5, 10], [0, 0, 5, 5], [5, 0, 10, 5]])
    pred_ids = np.array([1, 1, 1, 1])
    pred_scores = np.array([0.7, 0.6, 0.9, 0.8])  # unsorted on purpose
    ap, precisions, recalls, overlaps = utils.compute_ap(
        GT_BOXES, GT_IDS, box_masks(GT_BOXES), pred_boxes, pred_ids, pred_scores, box_masks(pred_boxes)
    )
    # precisions 1, 1/2, 2/3, 1/2 ; recalls 1/3, 1/3, 2/3, 2/3 -> AP = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 0 = 5/9
    assert ap == pytest.approx(5 / 9)
    np.testing.assert_allclose(precisions, [1, 1, 2 / 3, 2 / 3, 0.5, 0])
    np.testing.assert_allclose(recalls, [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1], rtol=1e-6)
    assert overlaps.shape == (4, 3) and overlaps[0, 0] == 1.0  # rows in score order


def test_compute_matches_zero_padding_is_trimmed():
    gt_boxes = np.concatenate([GT_BOXES, np.zeros((2, 4), int)])
    gt_ids = np.concatenate([GT_IDS, [0, 0]])
    gt_masks = box_masks(np.concatenate([GT_BOXES, [[0, 0, 1, 1], [0, 0, 1, 1]]]))
    gt_match, pred_match, _ = utils.compute_matches(gt_boxes, gt_ids, gt_masks, GT_BOXES, GT_IDS,
                                                    np.array([0.9, 0.8, 0.7]), box_masks(GT_BOXES))
    assert gt_match.tolist() == [0, 1, 2] and pred_match.tolist() == [0, 1, 2]


def test_compute_matches_score_ties_later_prediction_first():
    gt = np.array([[0, 0, 5, 5]])
    preds = np.array([[0, 0, 5, 5], [0, 0, 4, 4]])  # IoU 1 and 16/25
    gt_match, pred_match, overlaps = utils.compute_matches(
        gt, np.array([1]), box_masks(gt), preds, np.array([1, 1]), np.array([0.8, 0.8]), box_masks(preds)
    )
    # Equal scores: matterport's argsort()[::-1] puts the later prediction first, and it takes the GT.
    np.testing.assert_allclose(overlaps[:, 0], [16 / 25, 1.0])
    assert pred_match.tolist() == [0, -1] and gt_match.tolist() == [0]


def test_compute_matches_iou_ties_prefer_later_gt_and_threshold_stops():
    gts = np.array([[0, 0, 5, 5], [0, 5, 5, 10]])
    pred = np.array([[0, 0, 5, 10]])  # IoU 0.5 with each
    gt_match, pred_match, _ = utils.compute_matches(gts, np.array([1, 1]), box_masks(gts), pred, np.array([1]),
                                                    np.array([0.9]), box_masks(pred))
    assert pred_match.tolist() == [1] and gt_match.tolist() == [-1, 0]
    _, pred_match, _ = utils.compute_matches(gts, np.array([1, 1]), box_masks(gts), pred, np.array([1]),
                                             np.array([0.9]), box_masks(pred), iou_threshold=0.51)
    assert pred_match.tolist() == [-1]


def test_compute_ap_range_prints_and_averages(capsys):
    pred = np.array([[0, 0, 5, 5], [5, 5, 9, 9]])  # exact, and IoU 16/25 = 0.64 with GT1
    ap = utils.compute_ap_range(GT_BOXES[:2], GT_IDS[:2], box_masks(GT_BOXES[:2]), pred, np.array([1, 1]),
                                np.array([0.9, 0.8]), box_masks(pred), iou_thresholds=[0.5, 0.7])
    assert ap == pytest.approx((1.0 + 0.5) / 2)
    out = capsys.readouterr().out
    assert "AP @0.50:\t 1.000" in out and "AP @0.70:\t 0.500" in out and "AP @0.50-0.70:\t 0.750" in out
    quiet = utils.compute_ap_range(GT_BOXES[:2], GT_IDS[:2], box_masks(GT_BOXES[:2]), pred, np.array([1, 1]),
                                   np.array([0.9, 0.8]), box_masks(pred), verbose=0)
    assert capsys.readouterr().out == "" and 0 < quiet < 1


def test_compute_ap_without_ground_truth_is_nan():
    pred = np.array([[0, 0, 5, 5]])
    ap, _, _, _ = utils.compute_ap(np.zeros((0, 4)), np.zeros(0), np.zeros((10, 10, 0)), pred, np.array([1]),
                                   np.array([0.9]), box_masks(pred))
    assert np.isnan(ap)


def test_compute_recall_hand_computed():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    pred = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 25, 30], [70, 70, 80, 80]])
    recall, positive = utils.compute_recall(pred, gt, 0.5)
    # pred0 IoU 1, pred1 0.81 (both GT0), pred2 0.5 (GT1), pred3 none -> GT0, GT1 of 3
    assert recall == pytest.approx(2 / 3)
    assert positive.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="ground-truth"):
        utils.compute_recall(pred, np.zeros((0, 4)), 0.5)


def test_compute_matches_drops_a_zero_box_inside_the_list():
    gt_boxes = np.array([[0, 0, 5, 5], [0, 0, 0, 0], [5, 5, 10, 10]])
    gt_masks = box_masks([[0, 0, 5, 5], [0, 0, 0, 0], [5, 5, 10, 10]])
    gt_match, pred_match, overlaps = utils.compute_matches(
        gt_boxes, np.array([1, 0, 2]), gt_masks, np.array([[5, 5, 10, 10]]), np.array([2]), np.array([0.9]),
        box_masks([[5, 5, 10, 10]]))
    assert overlaps.shape == (1, 2) and pred_match.tolist() == [1] and gt_match.tolist() == [-1, 0]
