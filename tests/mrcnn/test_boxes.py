"""mrcnn.boxes: hand-computed conversions, IoU, delta round trips, and TF twins equal to the NumPy functions."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mrcnn import boxes as B


def test_norm_boxes_hand_computed():
    # 11x21 image: scale [10, 20, 10, 20], shift [0, 0, 1, 1]
    pixel = np.array([[0, 0, 11, 21], [1, 2, 6, 11]])
    got = B.norm_boxes(pixel, (11, 21))
    np.testing.assert_allclose(got, [[0, 0, 1, 1], [0.1, 0.1, 0.5, 0.5]], atol=1e-7)
    assert got.dtype == np.float32


def test_denorm_rounds_half_to_even():
    # 0.25 * 10 = 2.5 -> 2 ; 0.35 * 10 = 3.5 -> 4 ; y2: 0.45*10 + 1 = 5.5 -> 6 ; x2: 0.05*10+1 = 1.5 -> 2
    got = B.denorm_boxes(np.array([[0.25, 0.35, 0.45, 0.05]]), (11, 11))
    np.testing.assert_array_equal(got, [[2, 4, 6, 2]])
    assert got.dtype == np.int32


def test_norm_denorm_round_trip():
    rng = np.random.default_rng(0)
    y1 = rng.integers(0, 300, 50)
    x1 = rng.integers(0, 500, 50)
    pixel = np.stack([y1, x1, y1 + rng.integers(1, 50, 50), x1 + rng.integers(1, 50, 50)], axis=1)
    np.testing.assert_array_equal(B.denorm_boxes(B.norm_boxes(pixel, (351, 591)), (351, 591)), pixel)


def test_norm_boxes_rejects_bad_shapes():
    with pytest.raises(ValueError, match="last dimension of 4"):
        B.norm_boxes(np.zeros((3, 3)), (10, 10))
    with pytest.raises(ValueError, match=">= 2"):
        B.norm_boxes(np.zeros((1, 4)), (1, 10))


def test_compute_iou_and_overlaps_hand_computed():
    a = np.array([0, 0, 10, 10])
    others = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [10, 10, 20, 20], [0, 0, 5, 10]])
    # intersections 100, 25, 0, 50; unions 100, 175, 200, 100
    expected = [1.0, 25 / 175, 0.0, 0.5]
    np.testing.assert_allclose(B.compute_iou(a, others), expected)
    np.testing.assert_allclose(B.compute_iou(a, others, 100, B.box_area(others)), expected)
    overlaps = B.compute_overlaps(np.stack([a, others[1]]), others)
    assert overlaps.shape == (2, 4)
    np.testing.assert_allclose(overlaps[0], expected)
    np.testing.assert_allclose(overlaps[1], [25 / 175, 1.0, 25 / 175, 0.0])


def test_empty_boxes_have_zero_iou_not_nan():
    zero = np.zeros((2, 4))
    overlaps = B.compute_overlaps(zero, zero)
    assert np.all(overlaps == 0)


def test_apply_box_deltas_hand_computed():
    box = np.array([[10.0, 20.0, 30.0, 60.0]])  # h 20, w 40, centre (20, 40)
    deltas = np.array([[0.5, -0.25, np.log(2.0), 0.0]])  # centre (30, 30), h 40, w 40
    np.testing.assert_allclose(B.apply_box_deltas(box, deltas), [[10.0, 10.0, 50.0, 50.0]], rtol=1e-6)


def test_encode_decode_round_trip_returns_gt():
    rng = np.random.default_rng(1)
    anchors = np.concatenate([rng.uniform(0, 100, (20, 2)), rng.uniform(0, 100, (20, 2))], axis=1)
    anchors[:, 2:] = anchors[:, :2] + rng.uniform(5, 60, (20, 2))
    gt = anchors + rng.uniform(-4, 4, anchors.shape)
    deltas = B.box_refinement(anchors, gt)
    np.testing.assert_allclose(B.apply_box_deltas(anchors, deltas), gt, rtol=1e-4, atol=1e-3)


def test_clip_boxes():
    got = B.clip_boxes(np.array([[-1.0, 0.5, 2.0, 0.7]]), (0, 0, 1, 0.6))
    np.testing.assert_allclose(got, [[0.0, 0.5, 1.0, 0.6]])


@pytest.fixture(scope="module")
def random_boxes():
    rng = np.random.default_rng(2)
    starts = rng.uniform(0, 0.7, (2, 6, 2))
    sizes = rng.uniform(0.05, 0.3, (2, 6, 2))
    return np.concatenate([starts, starts + sizes], axis=-1).astype(np.float32)


def test_tf_twins_match_numpy(random_boxes):
    boxes = random_boxes  # [2, 6, 4], a batch dimension to check broadcasting
    gt = np.roll(boxes, 1, axis=1) * np.float32(0.9) + np.float32(0.02)
    deltas = B.box_refinement(boxes, gt)
    np.testing.assert_allclose(B.box_refinement_graph(boxes, gt).numpy(), deltas, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        B.apply_box_deltas_graph(boxes, deltas).numpy(), B.apply_box_deltas(boxes, deltas), rtol=1e-5, atol=1e-6
    )
    shape = (129, 257)
    np.testing.assert_allclose(B.norm_boxes_graph(boxes * 100, tf.constant(shape)).numpy(),
                               B.norm_boxes(boxes * 100, shape), rtol=1e-6)
    np.testing.assert_array_equal(B.denorm_boxes_graph(boxes, tf.constant(shape)).numpy(),
                                  B.denorm_boxes(boxes, shape))
    for i in range(2):
        np.testing.assert_allclose(B.overlaps_graph(boxes[i], gt[i]).numpy(),
                                   B.compute_overlaps(boxes[i], gt[i]), rtol=1e-5, atol=1e-7)
    batched = B.overlaps_graph(boxes, gt).numpy()
    assert batched.shape == (2, 6, 6)
    np.testing.assert_allclose(batched[1], B.compute_overlaps(boxes[1], gt[1]), rtol=1e-5, atol=1e-7)


def test_clip_boxes_graph_single_and_per_image_window(random_boxes):
    window = np.array([0.1, 0.2, 0.6, 0.7], np.float32)
    got = B.clip_boxes_graph(random_boxes[0], window).numpy()
    np.testing.assert_allclose(got, B.clip_boxes(random_boxes[0], window))
    windows = np.stack([window, np.array([0.0, 0.0, 0.5, 0.5], np.float32)])
    got = B.clip_boxes_graph(random_boxes, windows).numpy()
    np.testing.assert_allclose(got[1], B.clip_boxes(random_boxes[1], windows[1]))
    np.testing.assert_allclose(got[0], B.clip_boxes(random_boxes[0], windows[0]))


def test_denorm_graph_half_to_even():
    got = B.denorm_boxes_graph(tf.constant([[0.25, 0.35, 0.45, 0.05]]), tf.constant([11, 11])).numpy()
    np.testing.assert_array_equal(got, [[2, 4, 6, 2]])


def test_overlaps_graph_zero_boxes_are_zero():
    z = tf.zeros((3, 4))
    assert np.all(B.overlaps_graph(z, z).numpy() == 0)


def test_norm_boxes_graph_per_image_shapes(random_boxes):
    shapes = tf.constant([[129, 257], [65, 33]])
    got = B.norm_boxes_graph(random_boxes * 30, shapes).numpy()
    np.testing.assert_allclose(got[0], B.norm_boxes(random_boxes[0] * 30, (129, 257)), rtol=1e-6)
    np.testing.assert_allclose(got[1], B.norm_boxes(random_boxes[1] * 30, (65, 33)), rtol=1e-6)
    back = B.denorm_boxes_graph(got, shapes).numpy()
    np.testing.assert_array_equal(back[1], B.denorm_boxes(got[1], (65, 33)))
