"""Region Proposal Network: one nested Keras model ("rpn_model") shared across the pyramid levels.

Shape shorthand:
    B  batch     h, w  one level's map size     D  TOP_DOWN_PYRAMID_SIZE     A  anchors per location
    feature map [B, h, w, D]
    rpn_class_logits [B, h*w*A/s^2, 2]   rpn_probs [B, ..., 2] (bg, fg)   rpn_bbox [B, ..., 4] (dy, dx, log dh, log dw)

The nested model is saved as ONE group "rpn_model" holding six tensors, in this order: rpn_conv_shared
kernel/bias, rpn_class_raw kernel/bias, rpn_bbox_pred kernel/bias (matterport's layout).
"""

from __future__ import annotations

from typing import Any

import tf_keras as keras

KL = keras.layers

RPN_MODEL_NAME = "rpn_model"
RPN_INPUT_NAME = "input_rpn_feature_map"
RPN_SHARED_CONV = "rpn_conv_shared"
RPN_CLASS_RAW = "rpn_class_raw"
RPN_BBOX_PRED = "rpn_bbox_pred"
#: Names of the concatenated outputs over all levels.
RPN_CLASS_LOGITS = "rpn_class_logits"
RPN_CLASS = "rpn_class"
RPN_BBOX = "rpn_bbox"


def rpn_graph(feature_map: Any, anchors_per_location: int, anchor_stride: int, conv_channels: int = 512) -> list:
    """RPN head on one feature map: returns [rpn_class_logits, rpn_probs, rpn_bbox]."""
    shared = KL.Conv2D(conv_channels, (3, 3), padding="same", activation="relu", strides=anchor_stride,
                       name=RPN_SHARED_CONV)(feature_map)
    x = KL.Conv2D(2 * anchors_per_location, (1, 1), padding="valid", activation="linear", name=RPN_CLASS_RAW)(shared)
    rpn_class_logits = KL.Reshape((-1, 2))(x)
    rpn_probs = KL.Activation("softmax", name="rpn_class_xxx")(rpn_class_logits)
    x = KL.Conv2D(anchors_per_location * 4, (1, 1), padding="valid", activation="linear", name=RPN_BBOX_PRED)(shared)
    rpn_bbox = KL.Reshape((-1, 4))(x)
    return [rpn_class_logits, rpn_probs, rpn_bbox]


def build_rpn_model(anchor_stride: int, anchors_per_location: int, depth: int,
                    conv_channels: int = 512) -> keras.Model:
    """The shared RPN as a Keras model named ``rpn_model`` (input: one [B, h, w, depth] map)."""
    input_feature_map = KL.Input(shape=[None, None, depth], name=RPN_INPUT_NAME)
    outputs = rpn_graph(input_feature_map, anchors_per_location, anchor_stride, conv_channels)
    return keras.Model([input_feature_map], outputs, name=RPN_MODEL_NAME)
