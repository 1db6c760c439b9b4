"""Training loop of ``MaskRCNN(mode="training")``: layer presets, compile, fit, checkpoints, logs and plots.

``MaskRCNN.train(...)`` and ``MaskRCNN.compile(...)`` delegate here with the MaskRCNN instance as ``model``
(this module uses its ``keras_model``, ``config``, ``epoch``, ``log_dir``, ``checkpoint_path`` and
``set_log_dir()``). Behaviour follows matterport:

* ``layers``: a preset name of ``LAYER_PRESETS`` or a regex matched with ``re.fullmatch`` against layer
  names, recursing into nested models (``rpn_model``) and into the layer a TimeDistributed wraps;
* SGD with momentum, gradient clipping at GRADIENT_CLIP_NORM over the global gradient norm (Keras 2.1's
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
from dataclasses import dataclass, field
from typing import Any

import tf_keras as keras

from mrcnn.config import LOSS_NAMES
from mrcnn.data.augment import AugmentFn
from mrcnn.data.pipeline import make_dataset

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


def compile_model(model: Any, learning_rate: float, momentum: float) -> None:
    """Compile the training model with SGD(momentum) and global-norm clipping (matterport's compile)."""
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    optimizer = keras.optimizers.SGD(
        learning_rate=learning_rate, momentum=momentum, global_clipnorm=model.config.GRADIENT_CLIP_NORM
    )
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
        save_weights(self.keras_model, path)
        self.saved.append(path)
        logger.info("saved checkpoint %s", path)


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

    train_data = make_dataset(train_dataset, config, shuffle=True, augmentation=augmentation,
                              no_augmentation_sources=no_augmentation_sources, seed=seed)
    val_data = None
    if val_dataset is not None:
        val_data = make_dataset(val_dataset, config, shuffle=True, seed=None if seed is None else seed + 1)

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
    compile_model(model, learning_rate, config.LEARNING_MOMENTUM)

    try:
        model.keras_model.fit(
            train_data,
            initial_epoch=model.epoch,
            epochs=int(epochs),
            steps_per_epoch=config.STEPS_PER_EPOCH,
            validation_data=val_data,
            validation_steps=config.VALIDATION_STEPS if val_data is not None else None,
            callbacks=callbacks,
            verbose=verbose,
        )
    finally:
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


def _epoch_of(checkpoint_path: str) -> int:
    match = re.search(r"_(\d{4})\.h5$", checkpoint_path)
    return int(match.group(1)) if match else 0
