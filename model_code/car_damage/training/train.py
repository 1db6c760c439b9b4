"""One training run, end to end: datasets -> initial weights -> ``MaskRCNN.train`` -> ``mask_cnn_<label>.h5`` + card.

Training defaults are the old system's: ResNet-101, COCO start, heads only, 30 epochs of 100 steps, 1 image per
GPU, NUM_CLASSES = 1 + number of labels, DETECTION_MIN_CONFIDENCE 0.9. The run ends by writing the deliverable
``mask_cnn_<label>.h5`` (matterport layout) and its sidecar ``mask_cnn_<label>.json`` into the run's log folder or
``--out``. ``car_damage.cli.train`` and the SageMaker job (``car_damage.training.job``) both call ``train_model``.
With ``calibrate`` (the default) the run then chooses the service's operating point on the val split (one
detection pass, ``car_damage.training.calibrate``) and writes it into the sidecar, with ``evaluation_val.json``
and the curve ``evaluation_val_operating_point.png`` next to the loss curve.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Settings that make the "tiny" backbone a fast smoke-test model (small heads, few anchors and ROIs).
TINY_PRESET: dict[str, Any] = dict(
    TOP_DOWN_PYRAMID_SIZE=32, FPN_CLASSIF_FC_LAYERS_SIZE=64, RPN_CONV_CHANNELS=64, MASK_HEAD_CHANNELS=32,
    RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128), PRE_NMS_LIMIT=500, POST_NMS_ROIS_INFERENCE=100,
    POST_NMS_ROIS_TRAINING=200, TRAIN_ROIS_PER_IMAGE=32, DETECTION_MAX_INSTANCES=20,
)
#: The old system's IMAGE_MIN_DIM (with IMAGE_MAX_DIM 1024); smaller image sizes use the size itself.
OLD_MIN_DIM = 800
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][\w-]*$")
DELIVERABLE_TEMPLATE = "mask_cnn_{label}.h5"


@dataclass
class TrainOptions:
    """One training run; defaults are the old system's. ``dataset`` holds train/ and val/ unless the split
    folders are given directly (``train_dir``/``val_dir``, as the SageMaker channels do)."""

    dataset: Path | None = None
    weights: str = "coco"
    label: str = "scratch"
    classes: list[str] | None = None
    attributes: list[str] | None = None
    epochs: int = 30
    steps_per_epoch: int = 100
    validation_steps: int = 50
    layers: str = "heads"
    logs: Path = Path("logs")
    backbone: str = "resnet101"
    image_size: int = 1024
    learning_rate: float = 0.001
    augment: bool = False
    min_confidence: float = 0.9
    images_per_gpu: int = 1
    #: Devices to train on (Config.GPU_COUNT; > 1 is MirroredStrategy data parallelism, mrcnn.distribute).
    gpu_count: int = 1
    out: Path | None = None
    coco_path: Path | None = None
    drop_leaked_val: bool = False
    evaluate: bool = False
    #: Choose the operating point (min_score, grouping) on val after training and write it into the card.
    calibrate: bool = True
    train_dir: Path | None = None
    val_dir: Path | None = None
    #: Where evaluation JSON/plot and the loss curve are copied (default: next to the deliverable).
    report_dir: Path | None = None
    #: Config attributes set last (``--config KEY=VALUE``), over the preset and the options above.
    config_overrides: dict[str, Any] = field(default_factory=dict)
    #: Seeds Python, NumPy and TensorFlow (initial weights, sampling, augmentation): a repeatable run.
    seed: int | None = None

    def __post_init__(self) -> None:
        if not LABEL_PATTERN.match(self.label):
            raise ValueError(f"label {self.label!r} must be letters, digits, '_' or '-' (it names the model file)")
        if self.image_size < 64 or self.image_size % 64:
            raise ValueError(f"image size must be a positive multiple of 64, got {self.image_size}")
        for name in ("epochs", "steps_per_epoch", "validation_steps", "images_per_gpu", "gpu_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min confidence must be in [0, 1], got {self.min_confidence}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning rate must be > 0, got {self.learning_rate}")
        if self.dataset is None and (self.train_dir is None or self.val_dir is None):
            raise ValueError("give a dataset folder or both split folders")

    @property
    def class_names(self) -> list[str]:
        return list(self.classes) if self.classes else [self.label]

    @property
    def split_dirs(self) -> tuple[Path, Path]:
        if self.train_dir is not None and self.val_dir is not None:
            return self.train_dir, self.val_dir
        return Path(self.dataset) / "train", Path(self.dataset) / "val"

    def config(self):  # -> DamageConfig
        from car_damage.model.config import make_config

        values: dict[str, Any] = TINY_PRESET.copy() if self.backbone == "tiny" else {}
        values.update(
            NAME=self.label, NUM_CLASSES=1 + len(self.class_names), BACKBONE=self.backbone,
            IMAGE_MAX_DIM=self.image_size, IMAGE_MIN_DIM=min(OLD_MIN_DIM, self.image_size),
            STEPS_PER_EPOCH=self.steps_per_epoch, VALIDATION_STEPS=self.validation_steps,
            LEARNING_RATE=self.learning_rate, DETECTION_MIN_CONFIDENCE=self.min_confidence,
            IMAGES_PER_GPU=self.images_per_gpu, GPU_COUNT=self.gpu_count,
        )
        values.update(self.config_overrides)
        return make_config(**values)


class TrainingStopped(Exception):
    """Training was asked to stop (SIGTERM in the container) before or while it ran; no deliverable written."""


@dataclass
class TrainOutcome:
    weights_path: Path
    card_path: Path
    log_dir: Path
    epoch: int
    evaluation: Any = None
    duplicates: list[str] = field(default_factory=list)


def load_training_data(options: TrainOptions) -> tuple[Any, Any, Any, list[str]]:
    """(train dataset, val dataset, duplicate report, val images left out); duplicates are logged as warnings."""
    from car_damage.data.dataset import DamageDataset, load_split
    from car_damage.data.duplicates import find_duplicates

    train_dir, val_dir = options.split_dirs
    classes = options.class_names
    train_split = load_split(train_dir, classes, options.attributes)
    val_split = load_split(val_dir, classes, options.attributes)
    if not train_split.images:
        raise ValueError(f"{train_dir}: no usable annotated image")
    if not val_split.images:
        raise ValueError(f"{val_dir}: no usable annotated image")
    report = find_duplicates({"train": [i.path for i in train_split.images],
                              "val": [i.path for i in val_split.images]})
    for line in report.lines():
        logger.warning("%s", line)
    leaked = report.leaked("val") if options.drop_leaked_val else []
    if leaked:
        logger.warning("leaving %d leaked val images out of validation: %s", len(leaked), ", ".join(leaked))
    if len(leaked) == len(val_split.images):
        raise ValueError(f"{val_dir}: every val image is also a train image; nothing left to validate on")
    return (DamageDataset.from_split(train_split, classes),
            DamageDataset.from_split(val_split, classes, exclude=leaked), report, leaked)


def train_model(options: TrainOptions, callbacks_for: Callable[[Any], list] | None = None,
                stop_requested: Callable[[], bool] | None = None) -> TrainOutcome:
    """Train (or resume, with ``weights="last"``) and write ``mask_cnn_<label>.h5`` + sidecar.

    ``callbacks_for(model)`` returns extra Keras callbacks for the MaskRCNN being trained; ``stop_requested()``
    True before training starts raises TrainingStopped (the SIGTERM path of the container).
    """
    import shutil

    from car_damage.model.card import ModelCard, card_path_for

    config = options.config()
    train_set, val_set, duplicates, leaked = load_training_data(options)  # before TensorFlow: fail fast

    from car_damage.training.weights import initialise_weights
    from mrcnn.model import MaskRCNN
    from mrcnn.weights import save_weights

    options.logs.mkdir(parents=True, exist_ok=True)
    if options.seed is not None:
        from mrcnn.training import seed_everything

        seed_everything(options.seed)  # before the model exists, so its initial weights repeat
    model = MaskRCNN(mode="training", config=config, model_dir=str(options.logs))
    initialise_weights(model, options.weights, coco_path=options.coco_path)
    if stop_requested is not None and stop_requested():
        raise TrainingStopped("stop requested before training started")
    if model.epoch >= options.epochs:
        logger.info("already at epoch %d of %d: nothing to train", model.epoch, options.epochs)
    else:
        augmentation = None
        if options.augment:
            from mrcnn.data.augment import Augmenter

            augmentation = Augmenter(seed=options.seed)
        model.train(train_set, val_set, learning_rate=options.learning_rate, epochs=options.epochs,
                    layers=options.layers, augmentation=augmentation,
                    custom_callbacks=callbacks_for(model) if callbacks_for else None, seed=options.seed)
    out_dir = Path(options.out) if options.out else Path(model.log_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report_dir = Path(options.report_dir) if options.report_dir else out_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    for name in ("loss_curve.png", "loss_history.json"):  # written by mrcnn.training into the log folder
        produced = Path(model.log_dir) / name
        if produced.is_file() and produced.parent.resolve() != report_dir.resolve():
            shutil.copy2(produced, report_dir / name)
    weights_path = out_dir / DELIVERABLE_TEMPLATE.format(label=options.label)
    save_weights(model.keras_model, str(weights_path))
    metrics: dict[str, Any] = {"epochs": int(model.epoch), "train_images": len(train_set.image_ids),
                               "val_images": len(val_set.image_ids)}
    card = ModelCard.from_config(config, ["BG", *options.class_names], options.label,
                                 version=Path(model.log_dir).name, metrics=metrics)
    card_path = card.save(card_path_for(weights_path))
    evaluation = None
    if options.evaluate or options.calibrate:
        from car_damage.training.evaluate import evaluate_weights

        # One detection pass: calibration (when asked) picks the operating point, evaluation is made at it.
        evaluation = evaluate_weights(weights_path, options.split_dirs[1], report_dir / "evaluation_val.json",
                                      card=card, attributes=options.attributes, exclude=leaked,
                                      calibrate=options.calibrate, card_path=card_path).report
        if options.evaluate:
            card.metrics.update(map50=evaluation.map50, map50_95=evaluation.map50_95, f1=evaluation.f1,
                                count_exact_rate=evaluation.counts["exact_rate"], count_mae=evaluation.counts["mae"])
        card.save(card_path)
    logger.info("wrote %s and %s", weights_path, card_path)
    return TrainOutcome(weights_path, card_path, Path(model.log_dir), int(model.epoch), evaluation,
                        duplicates.lines())
