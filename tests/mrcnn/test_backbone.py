"""Backbones: tiny strides/channels and name prefix, ResNet names and block counts, callable backbones."""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras

import mrcnn.model as modellib
from mrcnn.layers.backbone import (
    STAGE4_IDENTITY_BLOCKS,
    TINY_CHANNELS,
    TINY_PREFIX,
    build_backbone,
    resnet_graph,
    tiny_graph,
)
from tests.conftest import tiny_config

KL = keras.layers


def test_tiny_backbone_strides_channels_and_prefix():
    image = KL.Input([128, 96, 3])
    c1, c2, c3, c4, c5 = tiny_graph(image)
    model = keras.Model(image, [c2, c3, c4, c5])
    for tensor, stride, channels in zip([c2, c3, c4, c5], (4, 8, 16, 32), TINY_CHANNELS[1:], strict=True):
        assert tuple(tensor.shape[1:]) == (128 // stride, 96 // stride, channels)
    weighted = [layer.name for layer in model.layers if layer.weights]
    assert weighted and all(name.startswith(TINY_PREFIX) for name in weighted)


@pytest.mark.parametrize("architecture", ["resnet50"])  # resnet101's names are checked against the COCO layout
def test_resnet_names_and_stage4_blocks(architecture):
    image = KL.Input([64, 64, 3])
    maps = resnet_graph(image, architecture, stage5=True)
    model = keras.Model(image, maps[1:])
    names = {layer.name for layer in model.layers}
    last_block = chr(ord("a") + STAGE4_IDENTITY_BLOCKS[architecture])
    assert f"res4{last_block}_branch2c" in names and f"bn4{last_block}_branch2c" in names
    assert f"res4{chr(ord(last_block) + 1)}_branch2a" not in names
    assert {"conv1", "bn_conv1", "res2a_branch1", "res5c_out", "res5a_branch1"} <= names
    assert [tuple(m.shape[1:]) for m in maps[1:]] == [(16, 16, 256), (8, 8, 512), (4, 4, 1024), (2, 2, 2048)]
    weighted = sum(1 for layer in model.layers if layer.weights)
    # ResNet-101: 233 weighted layers minus 8 FPN, 1 RPN and 16 head layers = 208; ResNet-50: 208 - 102 = 106.
    assert weighted == {"resnet50": 106, "resnet101": 208}[architecture]


def test_unknown_architecture_raises():
    with pytest.raises(ValueError, match="architecture"):
        resnet_graph(KL.Input([64, 64, 3]), "resnet18")


def test_callable_backbone_is_used_with_its_shapes(tmp_path):
    calls = []

    def small_backbone(input_image, stage5=True, train_bn=None):
        calls.append((stage5, train_bn))
        x = input_image
        maps = []
        for i, channels in enumerate((4, 8, 8, 16, 16), start=1):
            x = KL.Conv2D(channels, 3, strides=2, padding="same", name=f"custom_c{i}")(x)
            maps.append(x)
        return maps

    def shapes(image_shape):
        return np.array([[int(np.ceil(image_shape[0] / s)), int(np.ceil(image_shape[1] / s))]
                         for s in (4, 8, 16, 32, 64)])

    # staticmethod, as in a matterport Config subclass body (a bare function attribute would be bound to the config)
    config = tiny_config(BACKBONE=staticmethod(small_backbone), COMPUTE_BACKBONE_SHAPE=staticmethod(shapes))
    keras.utils.set_random_seed(0)
    model = modellib.MaskRCNN("inference", config, tmp_path)
    assert calls == [(True, config.TRAIN_BN)]
    assert model.keras_model.get_layer("custom_c5") is not None
    result = model.detect([np.full((96, 128, 3), 100, np.uint8)])[0]
    assert result["masks"].shape[:2] == (96, 128)


def test_build_backbone_rejects_wrong_map_count():
    def bad(input_image, stage5=True, train_bn=None):
        return [KL.Conv2D(4, 3, strides=2, padding="same")(input_image)]

    with pytest.raises(ValueError, match="C1, C2, C3, C4, C5"):
        build_backbone(KL.Input([64, 64, 3]), bad)
