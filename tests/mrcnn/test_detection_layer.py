"""DetectionLayer: class/score choice, background and confidence filter, per-class NMS, top-k, clipping, padding."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mrcnn.boxes import apply_box_deltas, clip_boxes
from mrcnn.image_meta import compose_image_meta
from mrcnn.layers.detection import DetectionLayer, grouped_nms, nms_iou_matrix, refine_detections_flat

STD = [0.1, 0.1, 0.2, 0.2]
FULL_WINDOW = np.array([[0.0, 0.0, 1.0, 1.0]], np.float32)

ROIS = np.array([
    [0.10, 0.10, 0.50, 0.50],  # class 1 @ 0.9
    [0.60, 0.60, 0.90, 0.90],  # background wins -> dropped
    [0.60, 0.10, 0.90, 0.40],  # class 2 @ 0.7
    [0.12, 0.10, 0.52, 0.50],  # class 1 @ 0.8, IoU 0.905 with #0 -> suppressed
], np.float32)
PROBS = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.3, 0.0, 0.7], [0.2, 0.8, 0.0]], np.float32)


def _detect(rois=ROIS, probs=PROBS, deltas=None, min_confidence=0.0, max_instances=5, nms=0.3, windows=FULL_WINDOW,
            batch_indices=None, batch_size=1):
    deltas = np.zeros(probs.shape + (4,), np.float32) if deltas is None else deltas
    batch_indices = np.zeros(len(rois), np.int32) if batch_indices is None else batch_indices
    dets, counts = refine_detections_flat(rois, batch_indices, probs, deltas, windows, batch_size, STD,
                                          min_confidence, max_instances, nms)
    return dets.numpy(), counts.numpy()


def test_background_dropped_same_class_suppressed_rows_sorted_and_padded():
    dets, counts = _detect()
    assert counts.tolist() == [2]
    np.testing.assert_allclose(dets[0, 0], [0.10, 0.10, 0.50, 0.50, 1, 0.9], atol=1e-6)
    np.testing.assert_allclose(dets[0, 1], [0.60, 0.10, 0.90, 0.40, 2, 0.7], atol=1e-6)
    assert dets.shape == (1, 5, 6) and not dets[0, 2:].any()


def test_overlapping_boxes_of_different_classes_both_survive():
    probs = PROBS.copy()
    probs[3] = [0.2, 0.0, 0.8]  # now class 2: no NMS against the class-1 box
    dets, counts = _detect(probs=probs)
    assert counts.tolist() == [3]
    assert dets[0, :3, 4].tolist() == [1, 2, 2] and dets[0, :3, 5].tolist() == pytest.approx([0.9, 0.8, 0.7])


def test_min_confidence_filters_and_falsy_disables():
    dets, counts = _detect(min_confidence=0.75)
    assert counts.tolist() == [1] and dets[0, 0, 4] == 1
    # a score equal to the threshold is kept (>=)
    _, counts = _detect(min_confidence=0.7)
    assert counts.tolist() == [2]
    for falsy in (0, 0.0, None):
        _, counts = _detect(min_confidence=falsy)
        assert counts.tolist() == [2]


def test_max_instances_keeps_top_scores():
    dets, counts = _detect(max_instances=1)
    assert counts.tolist() == [1] and dets.shape == (1, 1, 6) and dets[0, 0, 5] == pytest.approx(0.9)


def test_class_specific_deltas_times_std_dev_and_window_clip():
    rois = np.array([[0.2, 0.2, 0.4, 0.6]], np.float32)
    probs = np.array([[0.1, 0.2, 0.7]], np.float32)
    deltas = np.zeros((1, 3, 4), np.float32)
    deltas[0, 1] = [5, 5, 5, 5]  # another class's deltas must be ignored
    deltas[0, 2] = [1.0, -1.0, 5 * np.log(2.0), 0.0]  # x STD -> (0.1, -0.1, ln 2, 0)
    dets, _ = _detect(rois=rois, probs=probs, deltas=deltas)
    np.testing.assert_allclose(dets[0, 0, :4], [0.12, 0.16, 0.52, 0.56], atol=1e-6)
    window = np.array([[0.2, 0.0, 0.5, 1.0]], np.float32)
    dets, _ = _detect(rois=rois, probs=probs, deltas=deltas, windows=window)
    np.testing.assert_allclose(dets[0, 0, :4], [0.2, 0.16, 0.5, 0.56], atol=1e-6)


def test_zero_candidates_gives_all_padding():
    probs = np.tile([[1.0, 0.0, 0.0]], (4, 1)).astype(np.float32)
    dets, counts = _detect(probs=probs)
    assert counts.tolist() == [0] and not dets.any()


def test_iou_matrix_matches_tf_nms_kernel_definition():
    boxes = np.array([[0, 0, 1, 1], [0, 0.5, 1, 1.5], [2, 2, 2, 3], [1, 1, 0, 0]], np.float32)
    iou = nms_iou_matrix(boxes).numpy()
    assert iou[0, 1] == pytest.approx(1 / 3)
    assert iou[0, 2] == 0 and iou[2, 2] == 0  # zero-area boxes overlap nothing
    assert iou[0, 3] == pytest.approx(1.0)  # flipped corners are normalised like the kernel does


def _reference_per_class(boxes, scores, classes, max_out, threshold):
    """Straightforward per-class NMS (one tf NMS call per class), union, then top-k by score (ties: lower index)."""
    keep = []
    for c in np.unique(classes):
        ix = np.where(classes == c)[0]
        sel = tf.image.non_max_suppression(boxes[ix], scores[ix], max_out, threshold).numpy()
        keep.extend(ix[sel].tolist())
    keep = np.array(sorted(keep), np.int64)
    order = tf.math.top_k(scores[keep], k=min(len(keep), max_out), sorted=True).indices.numpy()
    return keep[order]


@pytest.mark.parametrize("seed", range(6))
def test_single_grouped_nms_equals_per_class_reference(seed):
    rng = np.random.default_rng(seed)
    n = 300
    yx = rng.uniform(0, 0.8, size=(n, 2))
    hw = rng.uniform(0.02, 0.3, size=(n, 2))
    boxes = np.concatenate([yx, yx + hw], axis=1).astype(np.float32)
    scores = np.round(rng.uniform(size=n), 2).astype(np.float32)  # rounding creates score ties on purpose
    classes = rng.integers(1, 5, size=n).astype(np.int32)
    max_out = 40
    ours = grouped_nms(boxes, scores, classes, 0.3).numpy()[:max_out]
    np.testing.assert_array_equal(ours, _reference_per_class(boxes, scores, classes, max_out, 0.3))


def test_refine_matches_numpy_reference_on_random_rois():
    rng = np.random.default_rng(11)
    n, c = 200, 4
    yx = rng.uniform(0, 0.8, size=(n, 2))
    rois = np.concatenate([yx, yx + rng.uniform(0.02, 0.2, size=(n, 2))], axis=1).astype(np.float32)
    probs = rng.dirichlet(np.ones(c), size=n).astype(np.float32)
    deltas = rng.normal(scale=0.5, size=(n, c, 4)).astype(np.float32)
    window = np.array([0.1, 0.05, 0.95, 0.9], np.float32)
    dets, counts = _detect(rois=rois, probs=probs, deltas=deltas, min_confidence=0.4, max_instances=30,
                           windows=window[None])
    class_ids = probs.argmax(1)
    scores = probs[np.arange(n), class_ids]
    refined = clip_boxes(apply_box_deltas(rois, deltas[np.arange(n), class_ids] * np.array(STD, np.float32)), window)
    keep = np.where((class_ids > 0) & (scores >= 0.4))[0]
    order = _reference_per_class(refined[keep].astype(np.float32), scores[keep], class_ids[keep], 30, 0.3)
    expected = keep[order]
    assert counts[0] == len(expected)
    np.testing.assert_array_equal(dets[0, :len(expected), 4], class_ids[expected])
    np.testing.assert_allclose(dets[0, :len(expected), 5], scores[expected])
    np.testing.assert_allclose(dets[0, :len(expected), :4], refined[expected], atol=1e-6)


def test_batch_images_do_not_suppress_each_other():
    rois = np.concatenate([ROIS, ROIS])
    probs = np.concatenate([PROBS, PROBS])
    windows = np.concatenate([FULL_WINDOW, FULL_WINDOW])
    dets, counts = _detect(rois=rois, probs=probs, windows=windows, batch_indices=np.repeat([0, 1], 4), batch_size=2)
    single, _ = _detect()
    assert counts.tolist() == [2, 2]
    np.testing.assert_array_equal(dets[0], single[0])
    np.testing.assert_array_equal(dets[1], single[0])


def test_layer_normalises_window_from_image_meta():
    meta = compose_image_meta(0, (50, 100, 3), (101, 101, 3), (0, 0, 51, 101), 1.0, np.zeros(3))
    meta = meta[None].astype(np.float32)
    layer = DetectionLayer(bbox_std_dev=STD, min_confidence=0.0, max_instances=4, nms_threshold=0.3)
    rois = np.array([[[0.4, 0.1, 0.9, 0.3]]], np.float32)
    probs = np.array([[[0.1, 0.9, 0.0]]], np.float32)
    out = layer([rois, probs, np.zeros((1, 1, 3, 4), np.float32), meta]).numpy()
    # window y2 = (51 - 1) / 100 = 0.5 in normalised coordinates
    np.testing.assert_allclose(out[0, 0], [0.4, 0.1, 0.5, 0.3, 1, 0.9], atol=1e-6)
    assert out.shape == (1, 4, 6)
