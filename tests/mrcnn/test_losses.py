"""The five Mask R-CNN losses on tiny hand-computed cases, including the 'no positives' zeros."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from mrcnn import losses


def _value(tensor) -> float:
    value = float(np.asarray(tensor))
    assert math.isfinite(value)
    return value


def test_smooth_l1_both_branches():
    got = losses.smooth_l1(tf.constant([0.0, 0.0, 0.0]), tf.constant([0.5, -2.0, 1.0])).numpy()
    np.testing.assert_allclose(got, [0.125, 1.5, 0.5])


def test_rpn_class_loss_ignores_neutral_anchors():
    rpn_match = tf.constant([[[1], [-1], [0]]], tf.int32)
    logits = tf.constant([[[0.0, 0.0], [0.0, math.log(3.0)], [5.0, -5.0]]])
    # anchor 0: CE of uniform = ln 2; anchor 1 (bg): -log(1/4) = ln 4; anchor 2 neutral.
    expected = (math.log(2.0) + math.log(4.0)) / 2
    assert _value(losses.rpn_class_loss(rpn_match, logits)) == pytest.approx(expected, rel=1e-5)


def test_rpn_class_loss_all_neutral_is_zero():
    assert _value(losses.rpn_class_loss(tf.zeros([2, 4, 1], tf.int32), tf.random.normal([2, 4, 2]))) == 0.0


def test_rpn_bbox_loss_pairs_kth_positive_with_kth_target_row():
    # Two images; image 0 has positives at anchors 1 and 3, image 1 at anchor 0.
    rpn_match = tf.constant([[[0], [1], [-1], [1]], [[1], [0], [0], [-1]]], tf.int32)
    target = np.zeros([2, 3, 4], np.float32)
    target[0, 0] = [1, 0, 0, 0]
    target[0, 1] = [0, 2, 0, 0]
    target[1, 0] = [0, 0, 0.5, 0]
    pred = np.zeros([2, 4, 4], np.float32)
    pred[0, 1] = [1, 0, 0, 0]  # exact -> 0
    pred[0, 3] = [0, 0, 0, 0]  # |d| = 2 -> 1.5
    pred[1, 0] = [0, 0, 0, 0]  # |d| = 0.5 -> 0.125
    pred[0, 2] = [9, 9, 9, 9]  # negative anchor: ignored
    expected = (1.5 + 0.125) / (3 * 4)
    got = _value(losses.rpn_bbox_loss(tf.constant(target), rpn_match, tf.constant(pred)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_rpn_bbox_loss_without_positives_is_zero():
    rpn_match = tf.constant([[[-1], [0]]], tf.int32)
    assert _value(losses.rpn_bbox_loss(tf.zeros([1, 2, 4]), rpn_match, tf.ones([1, 2, 4]))) == 0.0


def test_mrcnn_class_loss_weights_by_active_classes():
    target = tf.constant([[1, 0]], tf.int32)
    logits = tf.constant([[[0.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])  # roi 1 predicts class 2 (inactive)
    active = tf.constant([[1, 1, 0]], tf.int32)
    # roi 0 argmax = 0 (first of ties) -> active, CE = ln 3; roi 1 -> inactive, ignored.
    assert _value(losses.mrcnn_class_loss(target, logits, active)) == pytest.approx(math.log(3.0), rel=1e-5)
    assert _value(losses.mrcnn_class_loss(target, logits, tf.zeros([1, 3], tf.int32))) == 0.0


def test_mrcnn_bbox_loss_uses_target_class_deltas():
    target_ids = tf.constant([[2, 0]], tf.int32)
    target_bbox = tf.constant([[[0.5, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]])
    pred = np.zeros([1, 2, 3, 4], np.float32)
    pred[0, 0, 1] = 7.0  # wrong class channel: must be ignored
    pred[0, 1] = 9.0  # negative roi: ignored
    expected = 0.125 / 4
    assert _value(losses.mrcnn_bbox_loss(target_bbox, target_ids, tf.constant(pred))) == pytest.approx(expected)


def test_mrcnn_mask_loss_picks_target_channel_and_is_zero_without_positives():
    target_ids = tf.constant([[1, 0]], tf.int32)
    target_masks = tf.constant(np.array([[[[1.0, 0.0]], [[1.0, 1.0]]]], np.float32))  # [1, 2, 1, 2]
    pred = np.full([1, 2, 1, 2, 2], 0.5, np.float32)
    pred[0, 0, 0, :, 1] = [0.8, 0.4]  # class 1 channel of roi 0
    expected = (-math.log(0.8) - math.log(0.6)) / 2
    got = _value(losses.mrcnn_mask_loss(target_masks, target_ids, tf.constant(pred)))
    assert got == pytest.approx(expected, rel=1e-5)
    none = losses.mrcnn_mask_loss(target_masks, tf.zeros([1, 2], tf.int32), tf.constant(pred))
    assert _value(none) == 0.0


def test_losses_have_finite_zero_gradients_without_positives():
    pred = tf.Variable(tf.random.normal([1, 4, 2, 4]))
    with tf.GradientTape() as tape:
        loss = losses.mrcnn_bbox_loss(tf.zeros([1, 4, 4]), tf.zeros([1, 4], tf.int32), pred)
    grad = tape.gradient(loss, pred)
    assert np.all(np.asarray(grad) == 0.0)
