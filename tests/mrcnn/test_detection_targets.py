"""DetectionTargetLayer on a hand-made batch: sampling counts, deltas, class ids, mini-mask crops, crowds."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from mrcnn.layers.detection_targets import DetectionTargetLayer

GT_BOX = [0.1, 0.1, 0.5, 0.5]
PROPOSALS = [
    GT_BOX,  # IoU 1 -> positive
    [0.1, 0.1, 0.5, 0.6],  # IoU 0.8 -> positive
    [0.6, 0.6, 0.9, 0.9],  # IoU 0 -> negative
    [0.0, 0.0, 0.0, 0.0],  # padding
]


def _layer(**overrides):
    values = dict(
        train_rois_per_image=6,
        roi_positive_ratio=0.5,
        bbox_std_dev=[0.1, 0.1, 0.2, 0.2],
        mask_shape=[4, 4],
        use_mini_mask=True,
    )
    values.update(overrides)
    return DetectionTargetLayer(**values)


def _batch(second_class_ids=(0, 0), second_boxes=((0, 0, 0, 0), (0, 0, 0, 0))):
    proposals = np.array([PROPOSALS, PROPOSALS], np.float32)
    class_ids = np.array([[1, 0], list(second_class_ids)], np.int32)
    boxes = np.array([[GT_BOX, [0, 0, 0, 0]], list(second_boxes)], np.float32)
    masks = np.zeros([2, 8, 8, 2], bool)
    masks[:, :4, :, 0] = True  # top half of the mini mask
    masks[1, :, :, 1] = True
    return [tf.constant(proposals), tf.constant(class_ids), tf.constant(boxes), tf.constant(masks)]


def test_sampling_targets_and_padding():
    rois, class_ids, deltas, masks = (t.numpy() for t in _layer()(_batch()))
    assert rois.shape == (2, 6, 4) and class_ids.shape == (2, 6) and masks.shape == (2, 6, 4, 4)
    # Image 0: two positives (any order), then int(2 / 0.5) - 2 = 2 wanted negatives of which 1 exists.
    np.testing.assert_array_equal(class_ids[0], [1, 1, 0, 0, 0, 0])
    positives = {tuple(round(float(v), 3) for v in r) for r in rois[0, :2]}
    assert positives == {tuple(PROPOSALS[0]), tuple(PROPOSALS[1])}
    np.testing.assert_allclose(rois[0, 2], PROPOSALS[2])
    np.testing.assert_array_equal(rois[0, 3:], 0.0)
    for row in range(2):
        if np.allclose(rois[0, row], PROPOSALS[1]):
            # x centre 0.35 -> 0.3 on a 0.5 wide roi; width 0.5 -> 0.4.
            expected = [0.0, -0.1 / 0.1, 0.0, math.log(0.4 / 0.5) / 0.2]
        else:
            expected = [0.0, 0.0, 0.0, 0.0]
        np.testing.assert_allclose(deltas[0, row], expected, atol=1e-5)
    np.testing.assert_array_equal(deltas[0, 2:], 0.0)
    # Image 1 has no GT: no positives, hence (matterport) no negatives either; all zeros, no NaN.
    assert np.all(rois[1] == 0) and np.all(class_ids[1] == 0) and np.all(deltas[1] == 0) and np.all(masks[1] == 0)


def test_mask_target_is_the_mini_mask_cropped_by_the_roi():
    rois, _, _, masks = (t.numpy() for t in _layer()(_batch()))
    for row in range(2):
        if np.allclose(rois[0, row], GT_BOX):
            # ROI == GT box: the whole 8x8 mini mask resized to 4x4; top half set.
            np.testing.assert_array_equal(masks[0, row], [[1] * 4, [1] * 4, [0] * 4, [0] * 4])
    np.testing.assert_array_equal(masks[0, 2:], 0.0)


def test_crowd_box_blocks_negatives():
    layer = _layer()
    crowd = _batch(second_class_ids=(1, -1), second_boxes=(GT_BOX, [0.6, 0.6, 0.9, 0.9]))
    rois, class_ids, _, _ = (t.numpy() for t in layer(crowd))
    # Image 1: proposal 2 sits on a crowd box, so it is not a negative: 2 positives and nothing else.
    np.testing.assert_array_equal(class_ids[1], [1, 1, 0, 0, 0, 0])
    assert np.all(rois[1, 2:] == 0)


def test_positive_cap_and_get_config_round_trip():
    layer = _layer(train_rois_per_image=2, roi_positive_ratio=0.5)
    rois, class_ids, _, _ = (t.numpy() for t in layer(_batch()))
    # int(2 * 0.5) = 1 positive, then int(1 / 0.5) - 1 = 1 negative.
    np.testing.assert_array_equal(class_ids[0], [1, 0])
    np.testing.assert_allclose(rois[0, 1], PROPOSALS[2])
    clone = DetectionTargetLayer.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_full_size_masks_are_cropped_by_the_roi_in_image_coordinates():
    layer = _layer(train_rois_per_image=2, use_mini_mask=False)
    masks = np.zeros([1, 10, 10, 1], bool)
    masks[0, :5, :, 0] = True  # top half of the image
    inputs = [
        tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        tf.constant([[1]], tf.int32),
        tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        tf.constant(masks),
    ]
    _, class_ids, _, targets = (t.numpy() for t in layer(inputs))
    np.testing.assert_array_equal(class_ids[0], [1, 0])
    # 4 samples over rows 0..9 land on rows 0, 3, 6, 9: the first two are inside the top half.
    np.testing.assert_array_equal(targets[0, 0], [[1] * 4, [1] * 4, [0] * 4, [0] * 4])
