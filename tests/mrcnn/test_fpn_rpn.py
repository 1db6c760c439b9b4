"""FPN top-down maths and names; the shared RPN model, its weight order and the level concatenation."""

from __future__ import annotations

import numpy as np
import tf_keras as keras

from mrcnn.graph import build_rpn_outputs
from mrcnn.layers.fpn import fpn_graph
from mrcnn.layers.rpn import build_rpn_model
from tests.conftest import tiny_config

KL = keras.layers


def _fpn_model(depth=2):
    inputs = [KL.Input([s, s, c]) for s, c in ((16, 3), (8, 4), (4, 5), (2, 6))]
    rpn_maps, head_maps = fpn_graph(*inputs, depth=depth)
    return keras.Model(inputs, rpn_maps), head_maps


def test_fpn_names_shapes_and_top_down_sum():
    model, head_maps = _fpn_model()
    assert [tuple(t.shape[1:]) for t in model.outputs] == [(16, 16, 2), (8, 8, 2), (4, 4, 2), (2, 2, 2), (1, 1, 2)]
    assert len(head_maps) == 4
    weighted = [layer.name for layer in model.layers if layer.weights]
    assert weighted == ["fpn_c5p5", "fpn_c4p4", "fpn_c3p3", "fpn_c2p2", "fpn_p5", "fpn_p2", "fpn_p3", "fpn_p4"]
    # With 1x1 laterals that sum channels and 3x3 convs that are identity (centre tap), P4 = up(P5) + lateral(C4).
    for layer in model.layers:
        if not layer.weights:
            continue
        kernel, bias = layer.get_weights()
        kernel = np.zeros_like(kernel)
        if kernel.shape[0] == 1:
            kernel[0, 0, :, :] = 1.0
        else:
            kernel[1, 1] = np.eye(kernel.shape[2])
        layer.set_weights([kernel, np.zeros_like(bias)])
    rng = np.random.default_rng(0)
    c = [rng.standard_normal((1, s, s, ch)).astype(np.float32) for s, ch in ((16, 3), (8, 4), (4, 5), (2, 6))]
    p2, p3, p4, p5, p6 = model.predict(c, verbose=0)
    lat = [x.sum(-1, keepdims=True) for x in c]
    np.testing.assert_allclose(p5[..., :1], lat[3], atol=1e-5)
    np.testing.assert_allclose(p4[..., :1], lat[2] + lat[3].repeat(2, 1).repeat(2, 2), atol=1e-5)
    np.testing.assert_allclose(p6, p5[:, ::2, ::2], atol=1e-6)


def test_rpn_model_outputs_and_weight_order():
    rpn = build_rpn_model(anchor_stride=1, anchors_per_location=3, depth=8, conv_channels=16)
    assert rpn.name == "rpn_model" and rpn.input.name.startswith("input_rpn_feature_map")
    names = [w.name for w in rpn.weights]
    assert names == ["rpn_conv_shared/kernel:0", "rpn_conv_shared/bias:0", "rpn_class_raw/kernel:0",
                     "rpn_class_raw/bias:0", "rpn_bbox_pred/kernel:0", "rpn_bbox_pred/bias:0"]
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 8)).astype(np.float32)
    logits, probs, bbox = rpn.predict(x, verbose=0)
    assert logits.shape == (2, 60, 2) and probs.shape == (2, 60, 2) and bbox.shape == (2, 60, 4)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    # rows are (cell row-major, then anchor): row 3*k + a comes from channel pair a of cell k
    raw = rpn.get_layer("rpn_class_raw")
    shared = keras.Model(rpn.input, raw.output).predict(x, verbose=0)
    np.testing.assert_allclose(logits[0, 3 * 7 + 2], shared[0, 1, 2, 4:6], rtol=1e-5)


def test_rpn_outputs_concatenate_levels_in_order():
    cfg = tiny_config(TOP_DOWN_PYRAMID_SIZE=4, RPN_CONV_CHANNELS=8)
    maps = [KL.Input([s, s, 4]) for s in (8, 4, 2, 1, 1)]
    outputs = build_rpn_outputs(maps, cfg)
    model = keras.Model(maps, list(outputs))
    assert [t.name.split("/")[0] for t in model.outputs] == ["rpn_class_logits", "rpn_class", "rpn_bbox"]
    x = [np.random.default_rng(i).standard_normal((1, s, s, 4)).astype(np.float32) for i, s in
         enumerate((8, 4, 2, 1, 1))]
    logits, _, bbox = model.predict(x, verbose=0)
    assert logits.shape == (1, 3 * (64 + 16 + 4 + 1 + 1), 2)
    per_level = model.get_layer("rpn_model").predict(x[1], verbose=0)
    np.testing.assert_allclose(bbox[0, 3 * 64: 3 * 80], per_level[2][0], rtol=1e-5, atol=1e-6)
