"""Builders of the Mask R-CNN graph, shared by the inference and the training models, and the fast inference path.

Shape shorthand:
    B  batch     H, W  molded image size     META  IMAGE_META_SIZE     A  anchors per image
    P  POST_NMS_ROIS_INFERENCE     Dmax  DETECTION_MAX_INSTANCES     C  NUM_CLASSES     m  MASK_SHAPE side
    input_image [B, H, W, 3]   input_image_meta [B, META]   input_anchors [B, A, 4] normalised

``build_inference_model`` builds matterport's inference Keras model (same layers, names and outputs;
``keras_model.predict`` reproduces matterport's tensors, padding rows included). ``InferenceRunner`` runs the
same weights along a faster path inside ONE tf.function: backbone/FPN/RPN once, proposals, then the box
head only on the proposals that survived NMS and the mask head only on real detections; the outputs keep
matterport's padded shapes ([B, Dmax, 6] detections, [B, Dmax, m, m, C] masks; padding rows are zero).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from mrcnn.layers.backbone import build_backbone
from mrcnn.layers.detection import DetectionLayer, normalized_windows, refine_detections_flat
from mrcnn.layers.fpn import fpn_graph
from mrcnn.layers.heads import HeadLayers, build_fpn_mask_graph, fpn_classifier_graph
from mrcnn.layers.proposal import ProposalLayer, generate_proposals
from mrcnn.layers.roi_align import first_image_area, roi_align_flat
from mrcnn.layers.rpn import RPN_BBOX, RPN_CLASS, RPN_CLASS_LOGITS, build_rpn_model

KL = keras.layers

INPUT_IMAGE = "input_image"
INPUT_IMAGE_META = "input_image_meta"
INPUT_ANCHORS = "input_anchors"
INFERENCE_MODEL_NAME = "mask_rcnn"
#: Molded sides must be divisible by 2**6 (strides up to P6).
SIZE_MULTIPLE = 64


def check_image_shape(config: Any) -> None:
    """Matterport's build-time check: molded H and W divisible by 64."""
    h, w = (int(v) for v in config.IMAGE_SHAPE[:2])
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise ValueError(f"Image size must be dividable by 2 at least 6 times to avoid fractions when downscaling "
                         f"and upscaling (e.g. 256, 320, 384, 448, 512, ...); got IMAGE_SHAPE "
                         f"{list(config.IMAGE_SHAPE)}")


def build_feature_maps(input_image: Any, config: Any) -> tuple[list, list]:
    """Backbone + FPN: returns (rpn_feature_maps [P2..P6], mrcnn_feature_maps [P2..P5])."""
    c2, c3, c4, c5 = build_backbone(input_image, config.BACKBONE, train_bn=config.TRAIN_BN)
    return fpn_graph(c2, c3, c4, c5, config.TOP_DOWN_PYRAMID_SIZE)


def build_rpn_outputs(rpn_feature_maps: list, config: Any) -> tuple:
    """Apply the shared ``rpn_model`` to every level; returns (rpn_class_logits, rpn_class, rpn_bbox) over P2..P6."""
    rpn = build_rpn_model(config.RPN_ANCHOR_STRIDE, len(config.RPN_ANCHOR_RATIOS), config.TOP_DOWN_PYRAMID_SIZE,
                          config.RPN_CONV_CHANNELS)
    per_level = [rpn([p]) for p in rpn_feature_maps]
    names = (RPN_CLASS_LOGITS, RPN_CLASS, RPN_BBOX)
    return tuple(KL.Concatenate(axis=1, name=name)([level[i] for level in per_level]) for i, name in enumerate(names))


#: Keras dtype policy of the backbone/FPN/RPN when ``MIXED_PRECISION`` is on: fp16 compute, fp32 weights.
MIXED_POLICY = "mixed_float16"


@contextlib.contextmanager
def feature_policy(config: Any) -> Iterator[None]:
    """Build the layers inside under ``MIXED_POLICY`` when ``config.MIXED_PRECISION`` (else as they are).

    Only the backbone, FPN and RPN (over 80 % of the FLOPs at 1024 px) compute in fp16; proposals, ROIAlign,
    the heads and detection stay fp32 (box coordinates and NMS need the precision), and every layer after
    them casts its fp16 inputs up by itself (Keras autocasting), so all outputs are float32.
    """
    if not getattr(config, "MIXED_PRECISION", False):
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(MIXED_POLICY)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def select_boxes(detections: Any) -> Any:
    """The box columns of detection rows (module-level so the Lambda layer stays serialisable)."""
    return detections[..., :4]


@dataclass
class InferenceGraphs:
    """matterport's inference Keras model, plus the sub-model image -> (rpn_class, rpn_bbox, P2..P5) it contains."""

    keras_model: keras.Model
    feature_model: keras.Model


def build_inference_graphs(config: Any) -> InferenceGraphs:
    """Build the inference model with matterport's inputs, outputs and layer names."""
    check_image_shape(config)
    input_image = KL.Input(shape=[None, None, int(config.IMAGE_SHAPE[2])], name=INPUT_IMAGE)
    input_image_meta = KL.Input(shape=[config.IMAGE_META_SIZE], name=INPUT_IMAGE_META)
    input_anchors = KL.Input(shape=[None, 4], name=INPUT_ANCHORS)

    with feature_policy(config):
        rpn_feature_maps, mrcnn_feature_maps = build_feature_maps(input_image, config)
        _, rpn_class, rpn_bbox = build_rpn_outputs(rpn_feature_maps, config)
    if getattr(config, "MIXED_PRECISION", False):  # the model's outputs are float32 whatever it computes in
        rpn_class = KL.Activation("linear", dtype="float32", name="rpn_class_float32")(rpn_class)
        rpn_bbox = KL.Activation("linear", dtype="float32", name="rpn_bbox_float32")(rpn_bbox)
    rpn_rois = ProposalLayer(config.POST_NMS_ROIS_INFERENCE, config.RPN_NMS_THRESHOLD, config)(
        [rpn_class, rpn_bbox, input_anchors])
    _, mrcnn_class, mrcnn_bbox = fpn_classifier_graph(
        rpn_rois, mrcnn_feature_maps, input_image_meta, config.POOL_SIZE, config.NUM_CLASSES,
        train_bn=config.TRAIN_BN, fc_layers_size=config.FPN_CLASSIF_FC_LAYERS_SIZE)
    detections = DetectionLayer(config)([rpn_rois, mrcnn_class, mrcnn_bbox, input_image_meta])
    detection_boxes = KL.Lambda(select_boxes)(detections)
    mrcnn_mask = build_fpn_mask_graph(detection_boxes, mrcnn_feature_maps, input_image_meta, config.MASK_POOL_SIZE,
                                      config.NUM_CLASSES, train_bn=config.TRAIN_BN,
                                      channels=config.MASK_HEAD_CHANNELS)
    keras_model = keras.Model(
        [input_image, input_image_meta, input_anchors],
        [detections, mrcnn_class, mrcnn_bbox, mrcnn_mask, rpn_rois, rpn_class, rpn_bbox],
        name=INFERENCE_MODEL_NAME)
    feature_model = keras.Model(input_image, [rpn_class, rpn_bbox] + list(mrcnn_feature_maps), name="features")
    return InferenceGraphs(keras_model, feature_model)


def build_inference_model(config: Any) -> keras.Model:
    """matterport's inference Keras model (inputs input_image, input_image_meta, input_anchors)."""
    return build_inference_graphs(config).keras_model


def _is_linear_conv(layer: Any) -> bool:
    return isinstance(layer, KL.Conv2D) and not isinstance(layer, KL.Conv2DTranspose) \
        and layer.activation is keras.activations.linear


def fold_batchnorm(model: keras.Model) -> Any:
    """Inference function of a functional model with every Conv2D -> BatchNormalization pair folded into one conv.

    Batch-norm with moving statistics is an affine map per channel, so it merges into the conv before it:
    kernel * s and (bias - mean) * s + beta with s = gamma / sqrt(var + eps). The folded weights are computed
    from the variables at every call (cheap next to the convs), so later weight loads are always seen. The
    conv + bias + relu (+ residual add) that remain are what TF's CPU/GPU kernels fuse. Other layers run as
    they are. Walks the model's nodes in the order tf-keras's own Functional call uses.
    """
    nodes = [node for depth in sorted(model._nodes_by_depth, reverse=True) for node in model._nodes_by_depth[depth]]
    consumers: dict[str, list] = {}
    for node in nodes:
        for tensor_id in node.flat_input_ids:
            consumers.setdefault(tensor_id, []).append(node)
    usage = model._tensor_usage_count
    folded_bn: dict[int, Any] = {}  # id(conv node) -> the batch-norm node it absorbs
    for node in nodes:
        if node.is_input or not _is_linear_conv(node.layer) or len(node.flat_output_ids) != 1:
            continue
        users = consumers.get(node.flat_output_ids[0], [])
        if (len(users) == 1 and usage.get(node.flat_output_ids[0]) == 1
                and isinstance(users[0].layer, KL.BatchNormalization) and users[0].layer.axis in ([-1], [3])):
            folded_bn[id(node)] = users[0]
    skipped = {id(bn) for bn in folded_bn.values()}

    def conv_with_bn(conv: Any, bn: Any, x: tf.Tensor) -> tf.Tensor:
        scale = bn.gamma * tf.math.rsqrt(bn.moving_variance + bn.epsilon) if bn.scale else \
            tf.math.rsqrt(bn.moving_variance + bn.epsilon)
        bias = conv.bias if conv.use_bias else 0.0
        shift = (bias - bn.moving_mean) * scale + (bn.beta if bn.center else 0.0)
        # Folded in fp32 from the fp32 variables, then cast to the compute dtype (fp16 with MIXED_PRECISION).
        kernel = tf.cast(tf.convert_to_tensor(conv.kernel) * scale, x.dtype)
        return tf.nn.bias_add(conv.convolution_op(x, kernel), tf.cast(shift, x.dtype))

    def call(inputs: Any) -> list:
        values: dict[str, list] = {}
        for ref, value in zip(model.inputs, tf.nest.flatten(inputs), strict=True):
            values[str(id(ref))] = [value] * usage[str(id(ref))]
        for node in nodes:
            if node.is_input or id(node) in skipped:
                continue
            args, kwargs = node.map_arguments(values)
            bn = folded_bn.get(id(node))
            if bn is not None:
                out_ids, outputs = bn.flat_output_ids, [conv_with_bn(node.layer, bn.layer, args[0])]
            else:
                out_ids, outputs = node.flat_output_ids, tf.nest.flatten(node.layer(*args, **kwargs))
            for tensor_id, value in zip(out_ids, outputs, strict=True):
                values[tensor_id] = [value] * usage.get(tensor_id, 1)
        return [values[str(id(ref))].pop() for ref in model.outputs]

    call.num_folded = len(folded_bn)
    return call


class InferenceRunner:
    """Runs detection for molded batches in one tf.function, skipping padding rows of proposals and detections.

    Call with (molded_images [B, H, W, 3] float32, image_metas [B, META], anchors [B, A, 4]); returns
    numpy (detections [B, Dmax, 6], mrcnn_mask [B, Dmax, m, m, C]). Deterministic: no random ops.
    ``last_counts`` holds (real proposals [B], real detections [B]) of the latest call (for benchmarks).
    """

    def __init__(self, graphs: InferenceGraphs, config: Any) -> None:
        self.config = config
        self.heads = HeadLayers.from_model(graphs.keras_model)
        features = fold_batchnorm(graphs.feature_model)
        if config.USE_XLA:
            # XLA compiles the static-shape part (backbone, FPN, RPN); NMS and crop_and_resize have
            # data-dependent shapes and stay outside the XLA cluster.
            self._features = tf.function(features, jit_compile=True)
        else:
            self._features = features
        self._std = np.asarray(config.RPN_BBOX_STD_DEV, np.float32)
        self._run = tf.function(self._graph, reduce_retracing=True)
        self.last_counts: tuple[np.ndarray, np.ndarray] | None = None

    def _graph(self, images: tf.Tensor, image_meta: tf.Tensor, anchors: tf.Tensor) -> tuple[tf.Tensor, ...]:
        cfg = self.config
        rpn_class, rpn_bbox, *feature_maps = self._features(images)
        # fp16 with MIXED_PRECISION: proposals, ROIAlign and the heads run in fp32.
        rpn_class, rpn_bbox = tf.cast(rpn_class, tf.float32), tf.cast(rpn_bbox, tf.float32)
        feature_maps = [tf.cast(feature_map, tf.float32) for feature_map in feature_maps]
        proposals, counts = generate_proposals(rpn_class, rpn_bbox, anchors, cfg.POST_NMS_ROIS_INFERENCE,
                                               cfg.RPN_NMS_THRESHOLD, self._std, cfg.PRE_NMS_LIMIT)
        batch = tf.shape(images)[0]
        image_area = first_image_area(image_meta)
        # Real proposals only, image-major and in proposal order (that order breaks score ties).
        real = tf.where(tf.sequence_mask(counts, cfg.POST_NMS_ROIS_INFERENCE))
        rois = tf.gather_nd(proposals, real)
        roi_images = tf.cast(real[:, 0], tf.int32)
        crops = roi_align_flat(rois, roi_images, feature_maps, image_area, cfg.POOL_SIZE)
        probs, deltas = self.heads.classify(crops)
        detections, det_counts = refine_detections_flat(
            rois, roi_images, probs, deltas, normalized_windows(image_meta), batch, cfg.BBOX_STD_DEV,
            cfg.DETECTION_MIN_CONFIDENCE, cfg.DETECTION_MAX_INSTANCES, cfg.DETECTION_NMS_THRESHOLD)
        # Mask head on real detections only, scattered back into the padded [B, Dmax, m, m, C] output.
        real_dets = tf.where(tf.sequence_mask(det_counts, cfg.DETECTION_MAX_INSTANCES))
        det_boxes = tf.gather_nd(detections[..., :4], real_dets)
        mask_crops = roi_align_flat(det_boxes, tf.cast(real_dets[:, 0], tf.int32), feature_maps, image_area,
                                    cfg.MASK_POOL_SIZE)
        masks = self.heads.masks(mask_crops)
        mask_shape = tf.shape(masks)[1:]
        full_shape = tf.concat([[batch, cfg.DETECTION_MAX_INSTANCES], mask_shape], axis=0)
        mrcnn_mask = tf.scatter_nd(real_dets, masks, tf.cast(full_shape, tf.int64))
        return detections, mrcnn_mask, counts, det_counts

    def __call__(self, images: np.ndarray, image_metas: np.ndarray,
                 anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        detections, mrcnn_mask, counts, det_counts = self._run(tf.convert_to_tensor(images, tf.float32),
                                                               tf.convert_to_tensor(image_metas, tf.float32),
                                                               tf.convert_to_tensor(anchors, tf.float32))
        self.last_counts = (counts.numpy(), det_counts.numpy())
        return detections.numpy(), mrcnn_mask.numpy()
