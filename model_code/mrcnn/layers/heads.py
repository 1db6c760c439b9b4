"""Classifier/box head and mask head on ROIAlign crops (matterport layer names).

Shape shorthand:
    B  batch     R  ROIs per image     C  NUM_CLASSES     F  FPN_CLASSIF_FC_LAYERS_SIZE     K  MASK_HEAD_CHANNELS
    rois [B, R, 4] normalised
    mrcnn_class_logits / mrcnn_class [B, R, C]     mrcnn_bbox [B, R, C, 4]     mrcnn_mask [B, R, 2p, 2p, C]

The Keras graph wraps every layer in TimeDistributed, so weights are saved under the wrapper's name
(``mrcnn_class_conv1/kernel:0``) exactly as matterport's files hold them. ``HeadLayers`` gives the fast
inference path access to the same layers applied to a flat list of crops (no time axis, no padding rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tensorflow as tf
import tf_keras as keras

from mrcnn.layers.backbone import BN_EPSILON
from mrcnn.layers.roi_align import ROI_ALIGN_CLASSIFIER_NAME, ROI_ALIGN_MASK_NAME, PyramidROIAlign

KL = keras.layers

CLASS_CONV1 = "mrcnn_class_conv1"
CLASS_BN1 = "mrcnn_class_bn1"
CLASS_CONV2 = "mrcnn_class_conv2"
CLASS_BN2 = "mrcnn_class_bn2"
POOL_SQUEEZE = "pool_squeeze"
CLASS_LOGITS = "mrcnn_class_logits"
CLASS_PROBS = "mrcnn_class"
BBOX_FC = "mrcnn_bbox_fc"
BBOX = "mrcnn_bbox"
MASK_DECONV = "mrcnn_mask_deconv"
MASK = "mrcnn_mask"
#: Mask-head conv/bn pairs.
NUM_MASK_CONVS = 4
#: Layers whose shapes depend on NUM_CLASSES: matterport's exclude list for fine-tuning from COCO.
NUM_CLASSES_LAYERS = (CLASS_LOGITS, BBOX_FC, BBOX, MASK)


def mask_conv_name(i: int) -> str:
    return f"mrcnn_mask_conv{i}"


def mask_bn_name(i: int) -> str:
    return f"mrcnn_mask_bn{i}"


def _bn() -> KL.BatchNormalization:
    return KL.BatchNormalization(epsilon=BN_EPSILON)


def fpn_classifier_graph(rois: Any, feature_maps: list, image_meta: Any, pool_size: int, num_classes: int,
                         train_bn: bool | None = False, fc_layers_size: int = 1024) -> tuple:
    """Box head: returns (mrcnn_class_logits, mrcnn_class, mrcnn_bbox)."""
    x = PyramidROIAlign([pool_size, pool_size], name=ROI_ALIGN_CLASSIFIER_NAME)([rois, image_meta] + list(feature_maps))
    x = KL.TimeDistributed(KL.Conv2D(fc_layers_size, (pool_size, pool_size), padding="valid"), name=CLASS_CONV1)(x)
    x = KL.TimeDistributed(_bn(), name=CLASS_BN1)(x, training=train_bn)
    x = KL.Activation("relu")(x)
    x = KL.TimeDistributed(KL.Conv2D(fc_layers_size, (1, 1)), name=CLASS_CONV2)(x)
    x = KL.TimeDistributed(_bn(), name=CLASS_BN2)(x, training=train_bn)
    x = KL.Activation("relu")(x)
    shared = KL.Reshape((-1, fc_layers_size), name=POOL_SQUEEZE)(x)
    mrcnn_class_logits = KL.TimeDistributed(KL.Dense(num_classes), name=CLASS_LOGITS)(shared)
    mrcnn_probs = KL.TimeDistributed(KL.Activation("softmax"), name=CLASS_PROBS)(mrcnn_class_logits)
    x = KL.TimeDistributed(KL.Dense(num_classes * 4, activation="linear"), name=BBOX_FC)(shared)
    mrcnn_bbox = KL.Reshape((-1, num_classes, 4), name=BBOX)(x)
    return mrcnn_class_logits, mrcnn_probs, mrcnn_bbox


def build_fpn_mask_graph(rois: Any, feature_maps: list, image_meta: Any, pool_size: int, num_classes: int,
                         train_bn: bool | None = False, channels: int = 256) -> Any:
    """Mask head: returns mrcnn_mask [B, R, 2*pool, 2*pool, C] (sigmoid)."""
    x = PyramidROIAlign([pool_size, pool_size], name=ROI_ALIGN_MASK_NAME)([rois, image_meta] + list(feature_maps))
    for i in range(1, NUM_MASK_CONVS + 1):
        x = KL.TimeDistributed(KL.Conv2D(channels, (3, 3), padding="same"), name=mask_conv_name(i))(x)
        x = KL.TimeDistributed(_bn(), name=mask_bn_name(i))(x, training=train_bn)
        x = KL.Activation("relu")(x)
    x = KL.TimeDistributed(KL.Conv2DTranspose(channels, (2, 2), strides=2, activation="relu"), name=MASK_DECONV)(x)
    return KL.TimeDistributed(KL.Conv2D(num_classes, (1, 1), strides=1, activation="sigmoid"), name=MASK)(x)


def _batchnorm_inference(bn: KL.BatchNormalization, x: tf.Tensor) -> tf.Tensor:
    """A batch-norm layer's inference transform (moving statistics) on a tensor of any rank, channels last."""
    return tf.nn.batch_normalization(x, bn.moving_mean, bn.moving_variance, bn.beta if bn.center else None,
                                     bn.gamma if bn.scale else None, bn.epsilon)


@dataclass
class HeadLayers:
    """The inner (un-wrapped) head layers of a built model, for running the heads on a flat [M, ...] batch."""

    class_layers: list
    logits: Any
    bbox_fc: Any
    mask_layers: list
    num_classes: int

    @classmethod
    def from_model(cls, model: keras.Model) -> HeadLayers:
        def inner(name: str) -> Any:
            return model.get_layer(name).layer

        mask_layers = []
        for i in range(1, NUM_MASK_CONVS + 1):
            mask_layers += [inner(mask_conv_name(i)), inner(mask_bn_name(i))]
        logits = inner(CLASS_LOGITS)
        return cls(
            class_layers=[inner(CLASS_CONV1), inner(CLASS_BN1), inner(CLASS_CONV2), inner(CLASS_BN2)],
            logits=logits,
            bbox_fc=inner(BBOX_FC),
            mask_layers=mask_layers + [inner(MASK_DECONV), inner(MASK)],
            num_classes=int(logits.units),
        )

    def classify(self, crops: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """crops [M, p, p, D] -> (class probabilities [M, C], box deltas [M, C, 4]); inference mode.

        The p x p "valid" conv on a p x p crop and the 1x1 conv are matrix products; they run as such
        (kernel [p, p, D, F] flattens in the same (y, x, channel) order as the crop).
        """
        conv1, bn1, conv2, bn2 = self.class_layers
        rows = tf.shape(crops)[0]
        x = tf.matmul(tf.reshape(crops, [rows, -1]), tf.reshape(conv1.kernel, [-1, conv1.filters])) + conv1.bias
        x = tf.nn.relu(_batchnorm_inference(bn1, x))
        x = tf.matmul(x, tf.reshape(conv2.kernel, [-1, conv2.filters])) + conv2.bias
        x = tf.nn.relu(_batchnorm_inference(bn2, x))
        probs = tf.nn.softmax(self.logits(x))
        deltas = tf.reshape(self.bbox_fc(x), [-1, self.num_classes, 4])
        return probs, deltas

    def masks(self, crops: tf.Tensor) -> tf.Tensor:
        """crops [M, q, q, D] -> masks [M, 2q, 2q, C]; inference mode."""
        x = crops
        convs = self.mask_layers[: 2 * NUM_MASK_CONVS]
        for conv, bn in zip(convs[0::2], convs[1::2], strict=True):
            x = tf.nn.relu(bn(conv(x), training=False))
        deconv, final = self.mask_layers[2 * NUM_MASK_CONVS:]
        return final(deconv(x))
