"""get_config round trip for every custom layer of the engine (a rebuilt layer computes the same thing)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mrcnn.layers.detection import DetectionLayer
from mrcnn.layers.proposal import ProposalLayer
from mrcnn.layers.roi_align import PyramidROIAlign


@pytest.mark.parametrize(
    "layer",
    [
        ProposalLayer(7, 0.6, rpn_bbox_std_dev=[0.1, 0.1, 0.2, 0.2], pre_nms_limit=50, name="ROI"),
        PyramidROIAlign([3, 3], name="roi_align_classifier"),
        DetectionLayer(bbox_std_dev=[0.1, 0.1, 0.2, 0.2], min_confidence=0.5, max_instances=9, nms_threshold=0.3),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    rebuilt = type(layer).from_config(config)
    assert rebuilt.get_config() == config
    assert rebuilt.name == layer.name


def test_layers_take_matterport_config_objects(tiny_inference_config):
    cfg = tiny_inference_config
    proposal = ProposalLayer(cfg.POST_NMS_ROIS_INFERENCE, cfg.RPN_NMS_THRESHOLD, cfg)
    assert proposal.name == "ROI"
    assert proposal.pre_nms_limit == cfg.PRE_NMS_LIMIT
    assert proposal.rpn_bbox_std_dev == pytest.approx(list(cfg.RPN_BBOX_STD_DEV))
    detection = DetectionLayer(cfg)
    assert detection.name == "mrcnn_detection"
    assert detection.max_instances == cfg.DETECTION_MAX_INSTANCES
    assert detection.min_confidence == 0.0  # the tiny config disables the filter with 0.0


def test_bad_layer_arguments_raise_value_error():
    with pytest.raises(ValueError):
        ProposalLayer(10, 0.7)  # neither config nor explicit values
    with pytest.raises(ValueError):
        PyramidROIAlign([3, 4])
    with pytest.raises(ValueError):
        DetectionLayer(bbox_std_dev=[1, 1, 1, 1], max_instances=0, nms_threshold=0.3)


def test_rebuilt_proposal_layer_gives_same_output():
    layer = ProposalLayer(4, 0.5, rpn_bbox_std_dev=[0.1, 0.1, 0.2, 0.2], pre_nms_limit=8)
    rebuilt = ProposalLayer.from_config(layer.get_config())
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 0.7, size=(1, 8, 2))
    anchors = np.stack([y[..., 0], y[..., 1], y[..., 0] + 0.3, y[..., 1] + 0.3], axis=-1).astype(np.float32)
    probs = tf.nn.softmax(rng.normal(size=(1, 8, 2)).astype(np.float32))
    deltas = rng.normal(size=(1, 8, 4)).astype(np.float32)
    np.testing.assert_array_equal(layer([probs, deltas, anchors]).numpy(), rebuilt([probs, deltas, anchors]).numpy())
