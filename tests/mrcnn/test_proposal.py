"""ProposalLayer / generate_proposals on hand-computed boxes: top-k, deltas x std-dev, clipping, NMS, padding."""

from __future__ import annotations

import numpy as np
import pytest

from mrcnn.layers.proposal import ProposalLayer, generate_proposals

STD = [0.1, 0.1, 0.2, 0.2]
ANCHORS = np.array([
    [0.10, 0.10, 0.50, 0.50],   # score 0.90
    [0.12, 0.10, 0.52, 0.50],   # score 0.80, IoU 0.905 with #0 -> suppressed at 0.7
    [0.60, 0.60, 0.90, 0.90],   # score 0.70
    [-0.10, 0.50, 0.30, 1.20],  # score 0.95, clipped to (0, 0.5, 0.3, 1.0); touches #0 with zero overlap
], np.float32)
FG = np.array([0.90, 0.80, 0.70, 0.95], np.float32)


def _inputs(anchors=ANCHORS, fg=FG, deltas=None):
    probs = np.stack([1 - fg, fg], axis=-1)[None]
    deltas = np.zeros_like(anchors) if deltas is None else deltas
    return probs.astype(np.float32), deltas[None].astype(np.float32), anchors[None]


def _run(proposal_count, pre_nms_limit=100, threshold=0.7, **kw):
    probs, deltas, anchors = _inputs(**kw)
    out, counts = generate_proposals(probs, deltas, anchors, proposal_count, threshold, STD, pre_nms_limit)
    return out.numpy(), counts.numpy()


def test_nms_order_clipping_and_zero_padding():
    out, counts = _run(5)
    expected = np.array([
        [0.0, 0.5, 0.3, 1.0],
        [0.10, 0.10, 0.50, 0.50],
        [0.60, 0.60, 0.90, 0.90],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ], np.float32)
    np.testing.assert_allclose(out[0], expected, atol=1e-7)
    assert counts.tolist() == [3]


def test_proposal_count_caps_survivors():
    out, counts = _run(2)
    np.testing.assert_allclose(out[0], [[0.0, 0.5, 0.3, 1.0], [0.10, 0.10, 0.50, 0.50]], atol=1e-7)
    assert counts.tolist() == [2]


def test_pre_nms_limit_keeps_only_top_scores():
    out, counts = _run(5, pre_nms_limit=2)
    assert counts.tolist() == [2]
    np.testing.assert_allclose(out[0, :2], [[0.0, 0.5, 0.3, 1.0], [0.10, 0.10, 0.50, 0.50]], atol=1e-7)
    assert not out[0, 2:].any()


def test_higher_threshold_keeps_the_overlapping_box():
    out, counts = _run(5, threshold=0.95)
    assert counts.tolist() == [4]
    np.testing.assert_allclose(out[0, 2], [0.12, 0.10, 0.52, 0.50], atol=1e-7)


def test_deltas_are_scaled_by_std_dev_before_applying():
    anchors = np.array([[0.2, 0.2, 0.4, 0.6]], np.float32)
    deltas = np.array([[1.0, -1.0, 5 * np.log(2.0), 0.0]], np.float32)  # x STD -> (0.1, -0.1, ln 2, 0)
    out, counts = _run(1, anchors=anchors, fg=np.array([0.9], np.float32), deltas=deltas)
    # h 0.2 -> 0.4, centre y 0.3 + 0.1*0.2 = 0.32; w stays 0.4, centre x 0.4 - 0.1*0.4 = 0.36
    np.testing.assert_allclose(out[0, 0], [0.12, 0.16, 0.52, 0.56], atol=1e-6)
    assert counts.tolist() == [1]


def test_batch_matches_single_images():
    rng = np.random.default_rng(3)
    n = 60
    yx = rng.uniform(0, 0.8, size=(2, n, 2))
    hw = rng.uniform(0.05, 0.3, size=(2, n, 2))
    anchors = np.concatenate([yx, yx + hw], axis=-1).astype(np.float32)
    probs = rng.dirichlet([1, 1], size=(2, n)).astype(np.float32)
    deltas = rng.normal(size=(2, n, 4)).astype(np.float32)
    both, counts = generate_proposals(probs, deltas, anchors, 30, 0.5, STD, 40)
    for i in range(2):
        one, count = generate_proposals(probs[i:i + 1], deltas[i:i + 1], anchors[i:i + 1], 30, 0.5, STD, 40)
        np.testing.assert_array_equal(both.numpy()[i], one.numpy()[0])
        assert counts.numpy()[i] == count.numpy()[0]


def test_layer_output_shape_and_name():
    probs, deltas, anchors = _inputs()
    layer = ProposalLayer(6, 0.7, rpn_bbox_std_dev=STD, pre_nms_limit=100)
    out = layer([probs, deltas, anchors])
    assert layer.name == "ROI"
    assert out.shape == (1, 6, 4)


@pytest.mark.parametrize("bad", [0, -3])
def test_invalid_counts_raise(bad):
    with pytest.raises(ValueError):
        ProposalLayer(bad, 0.7, rpn_bbox_std_dev=STD, pre_nms_limit=10)
