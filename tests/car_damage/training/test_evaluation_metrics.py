"""Evaluation maths on hand-made detections with known answers, and the PR plot."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from car_damage.training.metrics import ImageDetections, evaluate_detections, plot_precision_recall, pooled_ap

CLASSES = ["BG", "scratch", "dent"]


def _masks(boxes, size=20):
    masks = np.zeros((size, size, len(boxes)), bool)
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        masks[y1:y2, x1:x2, k] = True
    return masks


def _item(gt, gt_ids, pred, pred_ids, scores, name="img"):
    return ImageDetections(
        image_id=name,
        gt_boxes=np.asarray(gt, np.int32).reshape(-1, 4), gt_class_ids=np.asarray(gt_ids, np.int32),
        gt_masks=_masks(gt),
        pred_boxes=np.asarray(pred, np.int32).reshape(-1, 4), pred_class_ids=np.asarray(pred_ids, np.int32),
        pred_scores=np.asarray(scores, np.float32), pred_masks=_masks(pred),
    )


def test_perfect_predictions_score_one(tmp_path):
    gt = [(1, 1, 6, 6), (10, 10, 18, 15)]
    items = [_item(gt, [1, 2], gt, [1, 2], [0.9, 0.8], "a"), _item(gt[:1], [1], gt[:1], [1], [0.95], "b")]
    report = evaluate_detections(items, CLASSES)
    assert (report.num_images, report.num_gt, report.num_predictions) == (2, 3, 3)
    assert report.map50 == pytest.approx(1.0) and report.map50_95 == pytest.approx(1.0)
    assert (report.mean_recall, report.precision, report.recall, report.f1) == (1.0, 1.0, 1.0, 1.0)
    assert report.per_class_ap == {"scratch": pytest.approx(1.0), "dent": pytest.approx(1.0)}
    assert report.coco["AP"] == pytest.approx(1.0) and report.coco["AP50"] == pytest.approx(1.0)
    png = plot_precision_recall(report, tmp_path / "pr.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (500, 500)


def test_hand_computed_ap_with_a_false_positive():
    # scores 0.9 hit, 0.8 miss, 0.7 hit: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    # all-points AP = 0.5 * 1 + 0.5 * 2/3 = 5/6
    gt = [(0, 0, 5, 5), (10, 10, 15, 15)]
    pred = [(0, 0, 5, 5), (0, 12, 4, 19), (10, 10, 15, 15)]
    report = evaluate_detections([_item(gt, [1, 1], pred, [1, 1, 1], [0.9, 0.8, 0.7])], CLASSES, with_coco=False)
    assert report.map50 == pytest.approx(5 / 6)
    assert report.per_class_ap == {"scratch": pytest.approx(5 / 6)}
    assert report.precision == pytest.approx(2 / 3) and report.recall == 1.0
    assert report.f1 == pytest.approx(0.8)
    assert report.pr_curve["precision"] == pytest.approx([1.0, 0.5, 2 / 3])
    assert report.pr_curve["recall"] == pytest.approx([0.5, 0.5, 1.0])
    assert report.coco == {}


def test_wrong_class_and_low_iou_do_not_match():
    gt = [(0, 0, 10, 10)]
    # same place, wrong class; right class but IoU 25/100 + ... below 0.5
    pred = [(0, 0, 10, 10), (0, 0, 5, 5)]
    report = evaluate_detections([_item(gt, [1], pred, [2, 1], [0.9, 0.8])], CLASSES, with_coco=False)
    assert report.map50 == 0.0 and report.recall == 0.0 and report.f1 == 0.0
    assert report.mean_recall == 0.0


def test_no_predictions_and_no_ground_truth():
    empty = _item([(0, 0, 4, 4)], [1], [], [], [])
    report = evaluate_detections([empty], CLASSES, with_coco=True)
    assert report.map50 == 0.0 and report.precision == 0.0 and report.coco == {}
    with pytest.raises(ValueError, match="no image has ground truth"):
        evaluate_detections([_item([], [], [], [], [])], CLASSES)


def test_pooled_ap_matches_the_voc_rule():
    ap, precisions, recalls = pooled_ap(np.array([0.2, 0.9, 0.5]), np.array([True, True, False]), 4)
    # order 0.9 hit, 0.5 miss, 0.2 hit -> recall 1/4, 1/4, 2/4; AP = 1/4 * 1 + 1/4 * 2/3
    assert ap == pytest.approx(0.25 + 0.25 * 2 / 3)
    np.testing.assert_allclose(precisions, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(recalls, [0.25, 0.25, 0.5])
