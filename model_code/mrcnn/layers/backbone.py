"""Backbones giving the C2..C5 feature maps: matterport's Caffe-style ResNet-50/101, a "tiny" conv net, or a callable.

Shape shorthand:
    B  batch      H, W  molded image size (multiples of 64)
    C2 [B, H/4, W/4, c2]   C3 [B, H/8, W/8, c3]   C4 [B, H/16, W/16, c4]   C5 [B, H/32, W/32, c5]

Layer names are part of the weights contract (matterport's .h5 files are loaded by layer name); every
name is produced by one helper below. The tiny backbone has its own prefix (``TINY_PREFIX``) so that a
weights file tells which backbone wrote it (see ``mrcnn.weights.inspect_weights``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import tf_keras as keras

KL = keras.layers

#: Identity blocks of stage 4 after block "a": ResNet-50 has b..f, ResNet-101 has b..w.
STAGE4_IDENTITY_BLOCKS = {"resnet50": 5, "resnet101": 22}
#: Prefix of every weighted layer of the tiny backbone.
TINY_PREFIX = "tiny_"
#: Output channels of the tiny backbone's C1..C5 levels.
TINY_CHANNELS = (16, 32, 64, 128, 128)
#: The molded image is mean-subtracted pixels (about +-128); the tiny net scales it to about +-1 first, because
#: its random initial weights expect unit-scale inputs (raw pixels made its first steps diverge or die).
TINY_INPUT_SCALE = 1.0 / 128.0
#: Channels per group of the tiny backbone's group normalisation. Group norm normalises each image by itself,
#: so it behaves the same in training and inference and needs no batch statistics (matterport freezes BN).
TINY_CHANNELS_PER_GROUP = 8
#: Keras defaults matterport's BatchNorm keeps (epsilon 1e-3, momentum 0.99).
BN_EPSILON = 1e-3


def conv_name(stage: int | str, block: str, branch: str) -> str:
    """Name of a ResNet conv, e.g. ``res4b_branch2a``."""
    return f"res{stage}{block}_branch{branch}"


def bn_name(stage: int | str, block: str, branch: str) -> str:
    """Name of a ResNet batch-norm, e.g. ``bn4b_branch2a``."""
    return f"bn{stage}{block}_branch{branch}"


def block_out_name(stage: int, block: str) -> str:
    return f"res{stage}{block}_out"


def tiny_layer_name(level: int, part: str = "") -> str:
    """Name of a tiny backbone layer of level <level>: ``tiny_c3`` is the level's last conv, ``tiny_c3a`` its
    strided conv, ``tiny_c3_gn`` / ``tiny_c3a_gn`` their group norms."""
    return f"{TINY_PREFIX}c{level}{part}"


def batch_norm(name: str) -> KL.BatchNormalization:
    return KL.BatchNormalization(epsilon=BN_EPSILON, name=name)


def _bottleneck(
    x: Any,
    kernel_size: int,
    filters: Sequence[int],
    stage: int,
    block: str,
    strides: int,
    shortcut_conv: bool,
    train_bn: bool | None,
) -> Any:
    """ResNet bottleneck: 1x1 (strided) -> kxk -> 1x1, plus identity or 1x1-conv shortcut, then relu."""
    f1, f2, f3 = filters
    y = KL.Conv2D(f1, (1, 1), strides=(strides, strides), name=conv_name(stage, block, "2a"), use_bias=True)(x)
    y = batch_norm(bn_name(stage, block, "2a"))(y, training=train_bn)
    y = KL.Activation("relu")(y)
    y = KL.Conv2D(f2, (kernel_size, kernel_size), padding="same", name=conv_name(stage, block, "2b"), use_bias=True)(y)
    y = batch_norm(bn_name(stage, block, "2b"))(y, training=train_bn)
    y = KL.Activation("relu")(y)
    y = KL.Conv2D(f3, (1, 1), name=conv_name(stage, block, "2c"), use_bias=True)(y)
    y = batch_norm(bn_name(stage, block, "2c"))(y, training=train_bn)
    if shortcut_conv:
        shortcut = KL.Conv2D(f3, (1, 1), strides=(strides, strides), name=conv_name(stage, block, "1"),
                             use_bias=True)(x)
        shortcut = batch_norm(bn_name(stage, block, "1"))(shortcut, training=train_bn)
    else:
        shortcut = x
    y = KL.Add()([y, shortcut])
    return KL.Activation("relu", name=block_out_name(stage, block))(y)


def identity_block(x: Any, kernel_size: int, filters: Sequence[int], stage: int, block: str,
                   train_bn: bool | None = False) -> Any:
    """Bottleneck block whose shortcut is the input itself (matterport ``identity_block``)."""
    return _bottleneck(x, kernel_size, filters, stage, block, 1, False, train_bn)


def conv_block(x: Any, kernel_size: int, filters: Sequence[int], stage: int, block: str, strides: int = 2,
               train_bn: bool | None = False) -> Any:
    """Bottleneck block with a strided 1x1-conv shortcut (matterport ``conv_block``)."""
    return _bottleneck(x, kernel_size, filters, stage, block, strides, True, train_bn)


def resnet_graph(input_image: Any, architecture: str, stage5: bool = True, train_bn: bool | None = False) -> list:
    """Matterport's ResNet: returns [C1, C2, C3, C4, C5] (C5 is None when stage5 is False)."""
    if architecture not in STAGE4_IDENTITY_BLOCKS:
        raise ValueError(f"architecture must be one of {sorted(STAGE4_IDENTITY_BLOCKS)}, got {architecture!r}")
    x = KL.ZeroPadding2D((3, 3))(input_image)
    x = KL.Conv2D(64, (7, 7), strides=(2, 2), name="conv1", use_bias=True)(x)
    x = batch_norm("bn_conv1")(x, training=train_bn)
    x = KL.Activation("relu")(x)
    c1 = x = KL.MaxPooling2D((3, 3), strides=(2, 2), padding="same")(x)

    x = conv_block(x, 3, [64, 64, 256], stage=2, block="a", strides=1, train_bn=train_bn)
    x = identity_block(x, 3, [64, 64, 256], stage=2, block="b", train_bn=train_bn)
    c2 = x = identity_block(x, 3, [64, 64, 256], stage=2, block="c", train_bn=train_bn)

    x = conv_block(x, 3, [128, 128, 512], stage=3, block="a", train_bn=train_bn)
    for block in "bcd":
        x = identity_block(x, 3, [128, 128, 512], stage=3, block=block, train_bn=train_bn)
    c3 = x

    x = conv_block(x, 3, [256, 256, 1024], stage=4, block="a", train_bn=train_bn)
    for i in range(STAGE4_IDENTITY_BLOCKS[architecture]):
        x = identity_block(x, 3, [256, 256, 1024], stage=4, block=chr(ord("b") + i), train_bn=train_bn)
    c4 = x

    if stage5:
        x = conv_block(x, 3, [512, 512, 2048], stage=5, block="a", train_bn=train_bn)
        x = identity_block(x, 3, [512, 512, 2048], stage=5, block="b", train_bn=train_bn)
        c5 = identity_block(x, 3, [512, 512, 2048], stage=5, block="c", train_bn=train_bn)
    else:
        c5 = None
    return [c1, c2, c3, c4, c5]


def _tiny_conv(x: Any, channels: int, stride: int, name: str) -> Any:
    """3x3 conv -> group norm -> relu."""
    x = KL.Conv2D(channels, (3, 3), strides=(stride, stride), padding="same", use_bias=False, name=name)(x)
    groups = max(1, channels // TINY_CHANNELS_PER_GROUP)
    x = KL.GroupNormalization(groups=groups, epsilon=BN_EPSILON, name=f"{name}_gn")(x)
    return KL.Activation("relu", name=f"{name}_relu")(x)


def tiny_graph(input_image: Any, train_bn: bool | None = False) -> list:
    """A small, fast conv net with the ResNet strides: C1 /2, C2 /4, C3 /8, C4 /16, C5 /32.

    The input is scaled to about unit range (a weightless layer), then C1 is one strided 3x3 conv and C2..C5 are
    each a strided 3x3 conv followed by a 3x3 conv, every conv with group norm and relu. Meant for tests and CPU
    demos. ``train_bn`` is accepted for signature compatibility (group norm has no batch statistics to freeze).
    """
    del train_bn
    x = KL.Rescaling(TINY_INPUT_SCALE, name=f"{TINY_PREFIX}input_scale")(input_image)
    outputs = []
    for level, channels in enumerate(TINY_CHANNELS, start=1):
        if level > 1:
            x = _tiny_conv(x, channels, 2, tiny_layer_name(level, "a"))
            x = _tiny_conv(x, channels, 1, tiny_layer_name(level))
        else:
            x = _tiny_conv(x, channels, 2, tiny_layer_name(level))
        outputs.append(x)
    return outputs


def _plain_callable(backbone: Callable) -> Callable:
    """A function stored as a Config class attribute comes back bound to the config; call the function itself.

    Only unwrapped when the function does not take ``self`` (a deliberate method keeps its binding).
    """
    func = getattr(backbone, "__func__", None)
    owner = getattr(backbone, "__self__", None)
    if func is None or owner is None or not hasattr(owner, "BACKBONE"):
        return backbone
    params = list(inspect.signature(func).parameters)
    return backbone if params and params[0] == "self" else func


def build_backbone(input_image: Any, backbone: str | Callable, train_bn: bool | None = False) -> list:
    """C2..C5 for a named backbone or a matterport-style callable ``backbone(input_image, stage5=True, train_bn=...)``.

    A callable must return the five maps [C1, C2, C3, C4, C5] (matterport semantics); C1 is dropped here.
    """
    if callable(backbone):
        maps = _plain_callable(backbone)(input_image, stage5=True, train_bn=train_bn)
    elif backbone == "tiny":
        maps = tiny_graph(input_image, train_bn=train_bn)
    else:
        maps = resnet_graph(input_image, backbone, stage5=True, train_bn=train_bn)
    if len(maps) != 5:
        raise ValueError(f"a backbone must return [C1, C2, C3, C4, C5]; got {len(maps)} maps")
    return list(maps[1:])
