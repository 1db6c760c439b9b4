"""The training Keras model: matterport's inputs, layer names and outputs, trained by one compiled step.

Shape shorthand:
    B  batch      H, W  IMAGE_SHAPE      META  IMAGE_META_SIZE      A  anchors      R  RPN_TRAIN_ANCHORS_PER_IMAGE
    G  MAX_GT_INSTANCES (padded)         T  TRAIN_ROIS_PER_IMAGE    C  NUM_CLASSES  (h, w) gt mask size
Inputs:  input_image [B, H, W, 3] molded; input_image_meta [B, META]; input_rpn_match [B, A, 1] int32;
         input_rpn_bbox [B, R, 4]; input_gt_class_ids [B, G] int32; input_gt_boxes [B, G, 4] pixels;
         input_gt_masks [B, h, w, G] bool.
Outputs: rpn_class_logits, rpn_class, rpn_bbox, mrcnn_class_logits, mrcnn_class, mrcnn_bbox, mrcnn_mask,
         rpn_rois, output_rois, then the five scalar losses named as ``LOSS_NAMES``. Unlike matterport,
         mrcnn_mask covers only the first int(T * ROI_POSITIVE_RATIO) ROIs (where all positives are): the mask
         loss ignores the others, so this saves two thirds of the mask head's work and changes no gradient.

``TrainingModel.train_step`` sums the five losses weighted by LOSS_WEIGHTS plus matterport's L2 weight decay
(WEIGHT_DECAY * sum(w^2) / size(w) over trainable weights that are not BatchNorm gamma/beta), and reports
each loss as a metric. BatchNorm layers are called with ``training=config.TRAIN_BN`` by the graph builders,
so with TRAIN_BN False they use their moving statistics while training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from mrcnn import losses
from mrcnn.anchors import get_anchors
from mrcnn.boxes import norm_boxes_graph
from mrcnn.config import LOSS_NAMES, Config
from mrcnn.distribute import first_replica, global_sum, num_replicas, split_batch
from mrcnn.graph import INPUT_IMAGE, INPUT_IMAGE_META, build_feature_maps, build_rpn_outputs, check_image_shape
from mrcnn.image_meta import parse_image_meta_graph
from mrcnn.layers.detection_targets import DetectionTargetLayer
from mrcnn.layers.heads import build_fpn_mask_graph, fpn_classifier_graph
from mrcnn.layers.proposal import ProposalLayer

KL = keras.layers

TRAINING_MODEL_NAME = "mask_rcnn"
INPUT_RPN_MATCH = "input_rpn_match"
INPUT_RPN_BBOX = "input_rpn_bbox"
INPUT_GT_CLASS_IDS = "input_gt_class_ids"
INPUT_GT_BOXES = "input_gt_boxes"
INPUT_GT_MASKS = "input_gt_masks"
ANCHORS_LAYER = "anchors"
PROPOSAL_TARGETS_LAYER = "proposal_targets"
OUTPUT_ROIS = "output_rois"
#: Substrings of the weight names that L2 weight decay skips (BatchNorm scale and offset), as matterport.
NO_DECAY_NAME_PARTS = ("gamma", "beta")


class TrainingModel(keras.Model):
    """Functional training model with matterport's loss sum, weight decay and per-loss metrics."""

    def configure_losses(self, loss_weights: dict[str, float], weight_decay: float) -> None:
        """Set the weights of the five losses and the L2 factor (called by ``build_training_model``)."""
        unknown = set(loss_weights) - set(LOSS_NAMES)
        if unknown:
            raise ValueError(f"unknown loss names {sorted(unknown)}; known: {LOSS_NAMES}")
        self.loss_weights_by_name = {name: float(loss_weights.get(name, 1.0)) for name in LOSS_NAMES}
        self.weight_decay = float(weight_decay)
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", *LOSS_NAMES)}

    @property
    def metrics(self) -> list:
        # Keras resets these at each epoch; before configure_losses there are none.
        return list(getattr(self, "loss_trackers", {}).values())

    def l2_loss(self) -> tf.Tensor:
        """matterport's weight decay over the currently trainable weights."""
        terms = [
            tf.reduce_sum(tf.square(w)) / tf.cast(tf.size(w), tf.float32)
            for w in self.trainable_weights
            if not any(part in w.name for part in NO_DECAY_NAME_PARTS)
        ]
        if not terms or self.weight_decay == 0.0:
            return tf.constant(0.0)
        return self.weight_decay * tf.add_n(terms)

    def _compute_losses(self, data: Any, training: bool) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """This replica's share of the total loss and of each loss (the whole batch's on one device)."""
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        outputs = self(inputs, training=training)
        named = dict(zip(self.output_names, outputs, strict=True))
        parts = {name: tf.reduce_mean(named[name]) for name in LOSS_NAMES}
        total = tf.add_n([parts[name] * self.loss_weights_by_name[name] for name in LOSS_NAMES])
        return total + self.l2_loss() / num_replicas(), parts

    def _report(self, total: tf.Tensor, parts: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        # The replicas' shares add up to the whole batch's losses; every replica's tracker records those.
        self.loss_trackers["loss"].update_state(global_sum(total))
        for name, value in parts.items():
            self.loss_trackers[name].update_state(global_sum(value))
        return {name: tracker.result() for name, tracker in self.loss_trackers.items()}

    def _gradients(self, data: Any) -> tuple[tf.Tensor, dict[str, tf.Tensor], list, list]:
        with tf.GradientTape() as tape:
            total, parts = self._compute_losses(data, training=True)
        variables = self.trainable_variables
        return total, parts, tape.gradient(total, variables), variables

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        total, parts, gradients, variables = self._gradients(data)
        pairs = [(g, v) for g, v in zip(gradients, variables, strict=True) if g is not None]
        # In a multi-device step apply_gradients sums the replicas' gradients before clipping and updating.
        self.optimizer.apply_gradients(pairs)
        return self._report(total, parts)

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        total, parts = self._compute_losses(data, training=False)
        return self._report(total, parts)

    def batch_gradients(self, batch: tuple) -> tuple[dict[str, float], list[np.ndarray | None]]:
        """Losses (``loss`` + LOSS_NAMES) and gradients of the trainable variables on one global batch, without
        updating anything: on several devices the replicas' gradients summed, as the optimizer applies them.
        For checks and benchmarks; ``None`` for a variable the loss does not reach."""
        strategy = self.distribute_strategy

        def replica_step(data: Any) -> tuple:
            total, parts, gradients, _ = self._gradients(data)
            losses_ = {"loss": global_sum(total), **{k: global_sum(v) for k, v in parts.items()}}
            return losses_, [tf.zeros(()) if g is None else g for g in gradients]

        if strategy.num_replicas_in_sync == 1:
            losses_, gradients = tf.function(replica_step)((tuple(tf.convert_to_tensor(a) for a in batch),))
        else:
            data = (split_batch(strategy, tuple(batch), self.images_per_replica),)

            @tf.function
            def distributed() -> tuple:
                per_replica_losses, per_replica_gradients = strategy.run(replica_step, args=(data,))
                summed = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in per_replica_gradients]
                return first_replica(strategy, per_replica_losses), summed

            losses_, gradients = distributed()
        # A scalar zero stands for "no gradient" (every variable of the model is at least 1-D).
        return ({k: float(v) for k, v in losses_.items()},
                [np.asarray(g) if np.ndim(g) else None for g in gradients])

    # Batch feeds: Keras' fit/evaluate iterate a placeholder dataset while the step takes its batch from a
    # ``BatchFeed`` (Python-built batches passed in as tensors). tf.data's from_generator doubled the step time.
    def use_batch_feeds(self, train: Any = None, validation: Any = None) -> None:
        """Feed ``fit``'s steps from ``train`` and its validation from ``validation`` (``BatchFeed`` objects
        with ``next_batch()``); ``use_batch_feeds()`` goes back to the iterated dataset."""
        self._batch_feeds = {"train": train, "validation": validation}
        self.train_function = None
        self.test_function = None

    def _feed(self, name: str) -> Any:
        return getattr(self, "_batch_feeds", {}).get(name)

    def make_train_function(self, force: bool = False) -> Any:
        feed = self._feed("train")
        if feed is None:
            return super().make_train_function(force)
        if self.train_function is None or force:
            self.train_function = self._fed_function(self.train_step, feed, self._train_counter)
        return self.train_function

    def make_test_function(self, force: bool = False) -> Any:
        feed = self._feed("validation")
        if feed is None:
            return super().make_test_function(force)
        if self.test_function is None or force:
            self.test_function = self._fed_function(self.test_step, feed, self._test_counter)
        return self.test_function

    def _fed_function(self, step_method: Any, feed: Any, counter: tf.Variable) -> Any:
        """What Keras calls once per step: ``step_method`` compiled, run on the feed's next batch (split over the
        replicas when the model was built for several devices)."""
        strategy = self.distribute_strategy
        if strategy.num_replicas_in_sync == 1:
            step = tf.function(step_method, reduce_retracing=True)

            def batch_of(arrays: tuple) -> tuple:
                return tuple(tf.convert_to_tensor(array) for array in arrays)
        else:
            def distributed(data: Any) -> dict[str, tf.Tensor]:
                return first_replica(strategy, strategy.run(step_method, args=(data,)))

            step = tf.function(distributed, reduce_retracing=True)

            def batch_of(arrays: tuple) -> Any:
                return split_batch(strategy, arrays, self.images_per_replica)

        def run_one_step(iterator: Any) -> dict[str, tf.Tensor]:
            del iterator  # the placeholder stream only counts the steps
            logs = step((batch_of(feed.next_batch()),))
            counter.assign_add(1)
            return logs

        return run_one_step


def _norm_gt_boxes(tensors: list) -> tf.Tensor:
    gt_boxes, image = tensors
    return norm_boxes_graph(gt_boxes, tf.shape(image)[1:3])


def _active_class_ids(image_meta: tf.Tensor) -> tf.Tensor:
    return parse_image_meta_graph(image_meta)["active_class_ids"]


def _identity(tensor: tf.Tensor) -> tf.Tensor:
    return tensor * 1


class BatchAnchors(KL.Layer):
    """The training anchors as a constant broadcast over the batch (no weights, like matterport's 'anchors')."""

    def __init__(self, anchors: np.ndarray | list, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.anchors = np.asarray(anchors, np.float32).reshape(-1, 4)

    def call(self, image: tf.Tensor) -> tf.Tensor:
        anchors = tf.constant(self.anchors)
        return tf.broadcast_to(anchors[None], [tf.shape(image)[0], *self.anchors.shape])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(anchors=self.anchors.tolist())
        return config


class FirstSlots(KL.Layer):
    """x[:, :count]: the first ``count`` ROI slots of a [B, T, ...] tensor."""

    def __init__(self, count: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = int(count)

    def call(self, tensor: tf.Tensor) -> tf.Tensor:
        return tensor[:, : self.count]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(count=self.count)
        return config


def _loss_layer(loss_fn) -> KL.Lambda:
    """A Lambda layer applying a function of ``mrcnn.losses``; the layer is named after the function."""
    if loss_fn.__name__ not in LOSS_NAMES:
        raise ValueError(f"{loss_fn.__name__} is not one of {LOSS_NAMES}")
    return KL.Lambda(lambda tensors: loss_fn(*tensors), name=loss_fn.__name__)


def build_training_model(config: Config) -> TrainingModel:
    """Build matterport's training graph for ``config`` (needs IMAGE_RESIZE_MODE 'square' or 'crop')."""
    check_image_shape(config)
    if not config.USE_RPN_ROIS:
        raise ValueError("USE_RPN_ROIS = False (externally generated ROIs) is not supported; set it to True")
    height, width, channels = (int(v) for v in config.IMAGE_SHAPE)
    if config.USE_MINI_MASK:
        gt_mask_hw = [int(config.MINI_MASK_SHAPE[0]), int(config.MINI_MASK_SHAPE[1])]
    else:
        gt_mask_hw = [height, width]

    input_image = KL.Input(shape=[None, None, channels], name=INPUT_IMAGE)
    input_image_meta = KL.Input(shape=[config.IMAGE_META_SIZE], name=INPUT_IMAGE_META)
    input_rpn_match = KL.Input(shape=[None, 1], name=INPUT_RPN_MATCH, dtype=tf.int32)
    input_rpn_bbox = KL.Input(shape=[None, 4], name=INPUT_RPN_BBOX, dtype=tf.float32)
    input_gt_class_ids = KL.Input(shape=[None], name=INPUT_GT_CLASS_IDS, dtype=tf.int32)
    input_gt_boxes = KL.Input(shape=[None, 4], name=INPUT_GT_BOXES, dtype=tf.float32)
    input_gt_masks = KL.Input(shape=[*gt_mask_hw, None], name=INPUT_GT_MASKS, dtype=tf.bool)
    inputs = [input_image, input_image_meta, input_rpn_match, input_rpn_bbox,
              input_gt_class_ids, input_gt_boxes, input_gt_masks]

    gt_boxes = KL.Lambda(_norm_gt_boxes, name="norm_gt_boxes")([input_gt_boxes, input_image])
    rpn_feature_maps, mrcnn_feature_maps = build_feature_maps(input_image, config)
    rpn_class_logits, rpn_class, rpn_bbox = build_rpn_outputs(rpn_feature_maps, config)
    anchors = BatchAnchors(get_anchors(config, (height, width)), name=ANCHORS_LAYER)(input_image)
    rpn_rois = ProposalLayer(config.POST_NMS_ROIS_TRAINING, config.RPN_NMS_THRESHOLD, config)(
        [rpn_class, rpn_bbox, anchors])
    active_class_ids = KL.Lambda(_active_class_ids, name="active_class_ids")(input_image_meta)

    detection_targets = DetectionTargetLayer(
        config.TRAIN_ROIS_PER_IMAGE, config.ROI_POSITIVE_RATIO, config.BBOX_STD_DEV, config.MASK_SHAPE,
        config.USE_MINI_MASK, name=PROPOSAL_TARGETS_LAYER,
    )
    rois, target_class_ids, target_bbox, target_mask = detection_targets(
        [rpn_rois, input_gt_class_ids, gt_boxes, input_gt_masks])
    # The mask loss only looks at positive ROIs, which fill the first max_positive_rois slots; running the mask
    # head on those slots alone gives the same loss and gradients as matterport's 200 ROIs at a third of the cost.
    positive_slots = detection_targets.max_positive_rois
    first_slots = FirstSlots(positive_slots, name="positive_roi_slots")
    mask_rois, mask_class_ids, mask_targets = (
        first_slots(rois), first_slots(target_class_ids), first_slots(target_mask))

    mrcnn_class_logits, mrcnn_class, mrcnn_bbox = fpn_classifier_graph(
        rois, mrcnn_feature_maps, input_image_meta, config.POOL_SIZE, config.NUM_CLASSES,
        train_bn=config.TRAIN_BN, fc_layers_size=config.FPN_CLASSIF_FC_LAYERS_SIZE)
    mrcnn_mask = build_fpn_mask_graph(
        mask_rois, mrcnn_feature_maps, input_image_meta, config.MASK_POOL_SIZE, config.NUM_CLASSES,
        train_bn=config.TRAIN_BN, channels=config.MASK_HEAD_CHANNELS)
    output_rois = KL.Lambda(_identity, name=OUTPUT_ROIS)(rois)

    loss_outputs = [
        _loss_layer(losses.rpn_class_loss)([input_rpn_match, rpn_class_logits]),
        _loss_layer(losses.rpn_bbox_loss)([input_rpn_bbox, input_rpn_match, rpn_bbox]),
        _loss_layer(losses.mrcnn_class_loss)(
            [target_class_ids, mrcnn_class_logits, active_class_ids]),
        _loss_layer(losses.mrcnn_bbox_loss)([target_bbox, target_class_ids, mrcnn_bbox]),
        _loss_layer(losses.mrcnn_mask_loss)([mask_targets, mask_class_ids, mrcnn_mask]),
    ]
    outputs = [rpn_class_logits, rpn_class, rpn_bbox, mrcnn_class_logits, mrcnn_class, mrcnn_bbox, mrcnn_mask,
               rpn_rois, output_rois, *loss_outputs]
    model = TrainingModel(inputs, outputs, name=TRAINING_MODEL_NAME)
    model.configure_losses(config.LOSS_WEIGHTS, config.WEIGHT_DECAY)
    model.images_per_replica = int(config.IMAGES_PER_GPU)
    return model
