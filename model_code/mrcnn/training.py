"""Training loop of ``MaskRCNN(mode="training")``: layer presets, compile, fit, checkpoints, logs and plots.

``MaskRCNN.train(...)`` and ``MaskRCNN.compile(...)`` delegate here with the MaskRCNN instance as ``model``
(this module uses its ``keras_model``, ``config``, ``epoch``, ``log_dir``, ``checkpoint_path`` and
``set_log_dir()``). Behaviour follows matterport:

* ``layers``: a preset name of ``LAYER_PRESETS`` or a regex matched with ``re.fullmatch`` against layer
  names, recursing into nested models (``rpn_model``) and into the layer a TimeDistributed wraps;
* SGD with momentum (or Adam, ``OPTIMIZER``; a constant rate or a cosine decay over the run,
  ``LEARNING_RATE_SCHEDULE``), gradient clipping at GRADIENT_CLIP_NORM over the global gradient norm (Keras 2.1's
  ``clipnorm``, which matterport used, clipped the global norm), L2 weight decay in the training model;
* after every epoch ``<log_dir>/mask_rcnn_<name>_<epoch:04d>.h5`` in matterport's layout;
* ``epochs`` is the absolute final epoch; training resumes from ``model.epoch`` and sets it afterwards.
Extras: TensorBoard scalars in ``log_dir``, ``loss_curve.png`` and ``loss_history.json`` at the end.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf
import tf_keras as keras

from mrcnn.config import LOSS_NAMES, OPTIMIZERS
from mrcnn.data.augment import AugmentFn
from mrcnn.data.pipeline import BatchFeed, TrainingBatches

logger = logging.getLogger(__name__)

#: matterport's shortcuts for ``layers``.
_HEADS = r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)"
LAYER_PRESETS: dict[str, str] = {
    "heads": _HEADS,
    "3+": r"(res3.*)|(bn3.*)|(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|" + _HEADS,
    "4+": r"(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|" + _HEADS,
    "5+": r"(res5.*)|(bn5.*)|" + _HEADS,
    "all": ".*",
}
LOSS_CURVE_FILE = "loss_curve.png"
LOSS_HISTORY_FILE = "loss_history.json"


@dataclass
class TrainingRun:
    """What one ``train()`` call produced."""

    log_dir: str
    checkpoints: list[str]
    history: dict[str, list[float]]
    step_losses: list[dict[str, float]] = field(default_factory=list)
    loss_curve: str | None = None


def resolve_layers(layers: str) -> str:
    """Preset name -> regex; anything else must be a valid regex."""
    if not isinstance(layers, str) or not layers:
        raise ValueError(f"layers must be one of {sorted(LAYER_PRESETS)} or a regex, got {layers!r}")
    pattern = LAYER_PRESETS.get(layers, layers)
    try:
        re.compile(pattern)
    except re.error as exc:
        presets = sorted(LAYER_PRESETS)
        raise ValueError(f"layers {layers!r} is neither a preset {presets} nor a valid regex: {exc}") from exc
    return pattern


def set_trainable(keras_model: keras.Model, layer_regex: str) -> list[str]:
    """Make the layers whose names fully match ``layer_regex`` trainable, freeze the rest.

    Recurses into nested models; a TimeDistributed wrapper's inner layer follows the wrapper's name.
    Layers without weights are skipped. Returns the names of the trainable layers (nested ones included).
    """
    pattern = re.compile(resolve_layers(layer_regex))
    trainable_names: list[str] = []
    for layer in keras_model.layers:
        if isinstance(layer, keras.Model):
            logger.debug("In model: %s", layer.name)
            # Setting a model's flag propagates to all its layers, so set it first and refine inside.
            layer.trainable = True
            trainable_names += set_trainable(layer, layer_regex)
            continue
        if not layer.weights:
            continue
        trainable = pattern.fullmatch(layer.name) is not None
        # A wrapper's flag propagates to the wrapped layer (TimeDistributed: the inner layer follows).
        layer.trainable = trainable
        if isinstance(layer, keras.layers.TimeDistributed):
            layer.layer.trainable = trainable
        if trainable:
            trainable_names.append(layer.name)
    return trainable_names


def seed_everything(seed: int) -> None:
    """Make a training run repeatable: seed Python, NumPy and TensorFlow, and use TensorFlow's deterministic
    kernels (without them multi-threaded CPU reductions differ in the last bits from run to run, and a
    long run drifts apart). Call it before the model is built so the initial weights repeat too; pass the
    same ``seed`` to ``train()`` for the image order and sampling. Deterministic kernels stay on for the
    rest of the process (TensorFlow has no public switch back)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def make_optimizer(name: str, learning_rate: float, momentum: float, clip_norm: float,
                   decay_steps: int | None = None) -> keras.optimizers.Optimizer:
    """``OPTIMIZER`` -> a Keras optimizer clipping the global gradient norm at ``clip_norm``.

    "SGD" is matterport's (momentum ``momentum``); "ADAM" uses ``momentum`` as beta_1 (0.9 is Adam's default).
    ``decay_steps``: decay the rate from ``learning_rate`` to 0 along a cosine over that many steps.
    """
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    rate: float | keras.optimizers.schedules.LearningRateSchedule = learning_rate
    if decay_steps is not None:
        if decay_steps < 1:
            raise ValueError(f"decay_steps must be >= 1, got {decay_steps}")
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    if name == "SGD":
        return keras.optimizers.SGD(learning_rate=rate, momentum=momentum, global_clipnorm=clip_norm)
    if name == "ADAM":
        return keras.optimizers.Adam(learning_rate=rate, beta_1=momentum, global_clipnorm=clip_norm)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")


def compile_model(model: Any, learning_rate: float, momentum: float, total_steps: int | None = None) -> None:
    """Compile the training model with ``config.OPTIMIZER`` and global-norm clipping (matterport's compile).

    ``total_steps`` (the steps this run will take) is where a "cosine" ``LEARNING_RATE_SCHEDULE`` reaches 0.
    """
    config = model.config
    decay_steps = total_steps if config.LEARNING_RATE_SCHEDULE == "cosine" else None
    if config.LEARNING_RATE_SCHEDULE == "cosine" and total_steps is None:
        raise ValueError("a cosine LEARNING_RATE_SCHEDULE needs the run's total_steps")
    # The optimizer's slots must live where the weights do (mirrored over the devices when GPU_COUNT > 1).
    with model.keras_model.distribute_strategy.scope():
        optimizer = make_optimizer(config.OPTIMIZER, learning_rate, momentum, config.GRADIENT_CLIP_NORM,
                                   decay_steps)
        model.keras_model.compile(optimizer=optimizer)


class MatterportCheckpoint(keras.callbacks.Callback):
    """Save the weights in matterport's layout after every epoch (Keras epochs are 0-based, names 1-based)."""

    def __init__(self, keras_model: keras.Model, path_template: str) -> None:
        super().__init__()
        self.keras_model = keras_model
        self.path_template = path_template
        self.saved: list[str] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from mrcnn.weights import save_weights

        path = self.path_template.format(epoch=epoch + 1)
        started = time.perf_counter()
        save_weights(self.keras_model, path)
        self.saved.append(path)
        logger.info("saved checkpoint %s in %.2fs", path, time.perf_counter() - started)


class LossHistory(keras.callbacks.Callback):
    """Per-step training losses and per-epoch logs (validation included), for the curve and the JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[dict[str, float]] = []
        self.epochs: dict[str, list[float]] = {}

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps.append({key: float(value) for key, value in (logs or {}).items()})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            self.epochs.setdefault(key, []).append(float(value))


def plot_loss_curve(steps: list[dict[str, float]], epochs: dict[str, list[float]], path: str) -> str:
    """Write a PNG of the running training losses per step (and validation loss per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 5))
    for name in ("loss", *LOSS_NAMES):
        values = [step[name] for step in steps if name in step]
        if values:
            axis.plot(range(1, len(values) + 1), values, label=name, linewidth=2 if name == "loss" else 1)
    validation = epochs.get("val_loss")
    if validation and steps:
        steps_per_epoch = max(len(steps) // max(len(validation), 1), 1)
        axis.plot([steps_per_epoch * (i + 1) for i in range(len(validation))], validation, "ko--", label="val_loss")
    axis.set_xlabel("step (running mean within each epoch)")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def train(
    model: Any,
    train_dataset: Any,
    val_dataset: Any,
    learning_rate: float,
    epochs: int,
    layers: str,
    augmentation: AugmentFn | None = None,
    custom_callbacks: list[keras.callbacks.Callback] | None = None,
    no_augmentation_sources: list[str] | None = None,
    verbose: int = 1,
    seed: int | None = None,
) -> TrainingRun:
    """Train ``model`` (a MaskRCNN in training mode) up to epoch ``epochs``; see the module docstring."""
    if getattr(model, "mode", "training") != "training":
        raise ValueError("Create the model in training mode: MaskRCNN(mode='training', ...)")
    config = model.config
    layer_regex = resolve_layers(layers)
    if model.log_dir is None:
        model.set_log_dir()
    if int(epochs) <= model.epoch:
        # matterport's fit() does nothing then; say so instead of silently returning.
        logger.warning("nothing to train: epochs=%d is the final epoch and the model is at epoch %d",
                       int(epochs), model.epoch)
        return TrainingRun(model.log_dir, [], {})
    os.makedirs(model.log_dir, exist_ok=True)

    # Batches are built by background threads (BatchFeed) and handed to the compiled steps; fit() iterates a
    # placeholder stream that only counts the steps.
    train_batches = TrainingBatches(train_dataset, config, shuffle=True, augmentation=augmentation,
                                    no_augmentation_sources=no_augmentation_sources, seed=seed)
    val_batches = None
    if val_dataset is not None:
        val_batches = TrainingBatches(val_dataset, config, shuffle=True, seed=None if seed is None else seed + 1)
    placeholder = _placeholder_stream(model.keras_model.distribute_strategy.num_replicas_in_sync)

    checkpoint = MatterportCheckpoint(model.keras_model, model.checkpoint_path)
    history = LossHistory()
    callbacks = [
        keras.callbacks.TensorBoard(log_dir=model.log_dir, histogram_freq=0, write_graph=False),
        checkpoint,
        history,
        *(custom_callbacks or []),
    ]
    logger.info("Starting at epoch %d. LR=%s", model.epoch, learning_rate)
    logger.info("Checkpoint Path: %s", model.checkpoint_path)
    trainable = set_trainable(model.keras_model, layer_regex)
    logger.info("%d trainable layers for layers=%r", len(trainable), layers)
    total_steps = (int(epochs) - model.epoch) * config.STEPS_PER_EPOCH
    compile_model(model, learning_rate, config.LEARNING_MOMENTUM, total_steps)

    train_feed = BatchFeed(train_batches)
    val_feed = BatchFeed(val_batches) if val_batches is not None else None
    model.keras_model.use_batch_feeds(train_feed, val_feed)
    try:
        model.keras_model.fit(
            placeholder,
            initial_epoch=model.epoch,
            epochs=int(epochs),
            steps_per_epoch=config.STEPS_PER_EPOCH,
            validation_data=placeholder if val_feed is not None else None,
            validation_steps=config.VALIDATION_STEPS if val_feed is not None else None,
            callbacks=callbacks,
            verbose=verbose,
        )
    finally:
        model.keras_model.use_batch_feeds()
        train_feed.close()
        if val_feed is not None:
            val_feed.close()
        # Whatever happened, keep the epochs that completed and write the record of the run.
        if checkpoint.saved:
            model.epoch = max(model.epoch, _epoch_of(checkpoint.saved[-1]))
        run = TrainingRun(model.log_dir, list(checkpoint.saved), dict(history.epochs), list(history.steps))
        if history.steps:
            run.loss_curve = plot_loss_curve(history.steps, history.epochs,
                                             os.path.join(model.log_dir, LOSS_CURVE_FILE))
            with open(os.path.join(model.log_dir, LOSS_HISTORY_FILE), "w", encoding="utf-8") as handle:
                json.dump({"epochs": history.epochs, "steps": history.steps}, handle)
    model.epoch = max(model.epoch, int(epochs))
    return run


def _placeholder_stream(replicas: int) -> tf.data.Dataset:
    """What fit() iterates to count steps: one element per replica (a distributed fit splits its batch
    dimension over the replicas), never sharded."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return tf.data.Dataset.from_tensors(tf.zeros([replicas], tf.int32)).repeat().with_options(options)


def _epoch_of(checkpoint_path: str) -> int:
    match = re.search(r"_(\d{4})\.h5$", checkpoint_path)
    return int(match.group(1)) if match else 0
