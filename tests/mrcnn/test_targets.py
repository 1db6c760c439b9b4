"""RPN targets (NumPy) on hand-made anchors and boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrcnn.data.targets import build_rpn_targets

STD = np.array([0.1, 0.1, 0.2, 0.2])
ANCHORS = np.array(
    [
        [0, 0, 10, 10],  # a0
        [0, 0, 20, 20],  # a1
        [50, 50, 60, 60],  # a2
        [100, 100, 110, 110],  # a3
    ],
    np.float32,
)


def test_positive_anchor_gets_scaled_deltas_and_others_are_labelled():
    # IoU(a0, gt) = 100 / 120 = 0.83 -> positive; IoU(a1, gt) = 120 / 400 = 0.3 -> neutral.
    targets = build_rpn_targets(ANCHORS, np.array([1]), np.array([[0, 0, 10, 12]]), 8, STD)
    np.testing.assert_array_equal(targets.rpn_match, [1, 0, -1, -1])
    # centre x moves by 1 px on a 10 px anchor; width grows 10 -> 12.
    np.testing.assert_allclose(targets.rpn_bbox[0], [0.0, 0.1 / 0.1, 0.0, math.log(1.2) / 0.2], rtol=1e-5)
    np.testing.assert_array_equal(targets.rpn_bbox[1:], 0.0)
    assert targets.rpn_bbox.shape == (8, 4)


def test_best_anchor_of_a_gt_is_positive_below_threshold():
    # Best IoU is a1 with 400 / 600 = 0.67 (< 0.7) -> still positive.
    targets = build_rpn_targets(ANCHORS, np.array([1]), np.array([[0, 0, 20, 30]]), 8, STD)
    assert targets.rpn_match[1] == 1
    np.testing.assert_allclose(targets.rpn_bbox[0], [0.0, 5 / 20 / 0.1, 0.0, math.log(1.5) / 0.2], rtol=1e-5)


def test_crowd_box_keeps_touching_anchors_out_of_the_negatives():
    class_ids = np.array([1, -1])
    boxes = np.array([[0, 0, 10, 12], [100, 100, 110, 110]])
    targets = build_rpn_targets(ANCHORS, class_ids, boxes, 8, STD)
    np.testing.assert_array_equal(targets.rpn_match, [1, 0, -1, 0])


def test_no_gt_gives_only_negatives_capped():
    anchors = np.array([[i, i, i + 5, i + 5] for i in range(20)], np.float32)
    targets = build_rpn_targets(anchors, np.zeros([0], np.int32), np.zeros([0, 4]), 8, STD)
    assert targets.num_positive == 0
    assert targets.num_negative == 8
    np.testing.assert_array_equal(targets.rpn_bbox, 0.0)


def test_positive_and_negative_caps():
    # 40 copies of the GT box -> 40 positives, capped at 8 / 2 = 4; then 4 negatives out of 10.
    anchors = np.concatenate([np.tile([[0, 0, 10, 10]], (40, 1)), np.tile([[50, 50, 60, 60]], (10, 1))])
    rng = np.random.default_rng(0)
    targets = build_rpn_targets(anchors, np.array([1]), np.array([[0, 0, 10, 10]]), 8, STD, rng)
    assert targets.num_positive == 4
    assert targets.num_negative == 4
    assert np.all(targets.rpn_match[:40] >= 0) and np.all(targets.rpn_match[40:] <= 0)


def test_gt_touching_no_anchor_marks_nothing_positive():
    targets = build_rpn_targets(ANCHORS, np.array([1]), np.array([[200, 200, 210, 210]]), 8, STD)
    assert targets.num_positive == 0


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="class ids"):
        build_rpn_targets(ANCHORS, np.array([1, 1]), np.array([[0, 0, 1, 1]]), 8, STD)
    with pytest.raises(ValueError, match="anchors"):
        build_rpn_targets(np.zeros([4, 3]), np.array([1]), np.array([[0, 0, 1, 1]]), 8, STD)
