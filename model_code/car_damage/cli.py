"""``python -m car_damage {train,evaluate,splash,detect,synth}`` (console script ``car-damage``).

    car-damage train --dataset data/ --weights coco            # the old `python maskR_CNN.py train ...`
    car-damage evaluate --weights logs/.../mask_cnn_scratch.h5 --dataset data/ --subset val
    car-damage splash --weights mask_cnn_scratch.h5 --image car.jpg
    car-damage detect --weights mask_cnn_scratch.h5 --image car.jpg

Training defaults are the old system's: ResNet-101, COCO start, heads only, 30 epochs of 100 steps, 1 image per
GPU, NUM_CLASSES = 1 + number of labels, DETECTION_MIN_CONFIDENCE 0.9. The run ends by writing the deliverable
``mask_cnn_<label>.h5`` (matterport layout) and its sidecar ``mask_cnn_<label>.json`` into the run's log folder or
``--out``. Human output goes to stderr (logging); stdout carries only results (JSON for evaluate and detect).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
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
        from car_damage.config import make_config

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
    from car_damage.dataset import DamageDataset, load_split
    from car_damage.duplicates import find_duplicates

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

    from car_damage.model_card import ModelCard, card_path_for

    config = options.config()
    train_set, val_set, duplicates, leaked = load_training_data(options)  # before TensorFlow: fail fast

    from car_damage.weights_init import initialise_weights
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
    if options.evaluate:
        from car_damage.evaluate import evaluate_weights

        evaluation = evaluate_weights(weights_path, options.split_dirs[1], report_dir / "evaluation_val.json",
                                      card=card, attributes=options.attributes, exclude=leaked).report
        card.metrics.update(map50=evaluation.map50, map50_95=evaluation.map50_95, f1=evaluation.f1)
        card.save(card_path)
    logger.info("wrote %s and %s", weights_path, card_path)
    return TrainOutcome(weights_path, card_path, Path(model.log_dir), int(model.epoch), evaluation,
                        duplicates.lines())


#: Errors that mean "bad input", reported as one line and exit status 2 (anything else is a bug: traceback).
_USER_ERRORS = (ValueError, FileNotFoundError, PermissionError)


def parse_config_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (KEY, value); the value is read as a Python literal (numbers, tuples, True/None, quoted
    strings), an unquoted word stays a string. The key is checked against Config by ``make_config``."""
    import ast

    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key.isidentifier() or not raw:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. TRAIN_ROIS_PER_IMAGE=64), got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key, value


def _csv(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    d = TrainOptions(dataset=Path("."))
    p = subparsers.add_parser("train", help="fine-tune on a VIA/COCO dataset folder (train/ and val/)")
    p.add_argument("--dataset", type=Path, required=True, help="folder holding train/ and val/")
    p.add_argument("--weights", required=True, help="coco | last | imagenet | none | PATH to an .h5 file")
    p.add_argument("--label", default=d.label, help="damage type: names the model file mask_cnn_<label>.h5")
    p.add_argument("--classes", type=_csv, help="class names, comma-separated (default: the label)")
    p.add_argument("--attribute", type=_csv, help="region attribute name(s) holding the class (default: class, "
                   "label, damage, type, name, category and the class names themselves)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="final epoch number (resumed runs continue to it)")
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch)
    p.add_argument("--val-steps", type=int, default=d.validation_steps, help="validation steps per epoch")
    p.add_argument("--layers", default=d.layers, help="heads | 3+ | 4+ | 5+ | all | a regex")
    p.add_argument("--logs", type=Path, default=d.logs, help="log and checkpoint root folder")
    p.add_argument("--backbone", default=d.backbone, choices=("resnet101", "resnet50", "tiny"))
    p.add_argument("--image-size", type=int, default=d.image_size, help="IMAGE_MAX_DIM, a multiple of 64")
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float, default=d.learning_rate)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=d.augment,
                   help="random flip / small affine / brightness (off in the old system)")
    p.add_argument("--min-confidence", type=float, default=d.min_confidence,
                   help="DETECTION_MIN_CONFIDENCE stored in the model card")
    p.add_argument("--images-per-gpu", type=int, default=d.images_per_gpu)
    p.add_argument("--gpu-count", type=int, default=d.gpu_count,
                   help="train on this many GPUs at once (global batch = images per GPU x GPU count)")
    p.add_argument("--out", type=Path, help="where the deliverable goes (default: the run's log folder)")
    p.add_argument("--coco-path", type=Path, help="local mask_rcnn_coco.h5 (default ./mask_rcnn_coco.h5)")
    p.add_argument("--drop-leaked-val", action="store_true",
                   help="leave val images that are byte-identical to train images out of validation")
    p.add_argument("--evaluate", action="store_true", help="evaluate on val at the end; metrics go to the card")
    p.add_argument("--config", dest="config_overrides", type=parse_config_override, action="append", default=[],
                   metavar="KEY=VALUE", help="set a Mask R-CNN config attribute (repeatable), e.g. "
                   "--config TRAIN_ROIS_PER_IMAGE=64 --config RPN_ANCHOR_SCALES='(16, 32, 64, 128, 256)'")
    p.add_argument("--seed", type=int, help="seed initial weights, sampling and augmentation (a repeatable run)")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    options = TrainOptions(
        dataset=args.dataset, weights=args.weights, label=args.label, classes=args.classes,
        attributes=args.attribute, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        validation_steps=args.val_steps, layers=args.layers, logs=args.logs, backbone=args.backbone,
        image_size=args.image_size, learning_rate=args.learning_rate, augment=args.augment,
        min_confidence=args.min_confidence, images_per_gpu=args.images_per_gpu, gpu_count=args.gpu_count,
        out=args.out,
        coco_path=args.coco_path, drop_leaked_val=args.drop_leaked_val, evaluate=args.evaluate,
        config_overrides=dict(args.config_overrides), seed=args.seed,
    )
    outcome = train_model(options)
    print(f"weights: {outcome.weights_path}")
    print(f"model card: {outcome.card_path}")
    if outcome.evaluation is not None:
        print("\n".join(outcome.evaluation.summary_lines()))
    return 0


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", type=Path, required=True, help="mask_cnn_<type>.h5 (its sidecar .json is used)")
    p.add_argument("--card", type=Path, help="model card JSON when it is not next to the weights")


def _explicit_card(args: argparse.Namespace):  # -> ModelCard | None
    """``--card`` if given; otherwise None, so each consumer applies its own sidecar rules (the service's for
    detect and splash, so they answer exactly as the endpoint would)."""
    from car_damage.model_card import ModelCard

    return ModelCard.load(args.card) if args.card else None


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="mAP, recall, F1, per-class AP and a PR plot on an annotated split")
    _add_model_arguments(p)
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--subset", default="val")
    p.add_argument("--attribute", type=_csv, help="region attribute name(s) holding the class")
    p.add_argument("--min-confidence", type=float, help="override the card's DETECTION_MIN_CONFIDENCE")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--out", type=Path, help="JSON file to write (default evaluation_<subset>.json); "
                   "the plot goes next to it as <name>_pr.png")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from car_damage.evaluate import evaluate_weights

    out = args.out or Path(f"evaluation_{args.subset}.json")
    result = evaluate_weights(args.weights, args.dataset / args.subset, out, card=_explicit_card(args),
                              attributes=args.attribute, min_confidence=args.min_confidence, limit=args.limit)
    for line in result.report.summary_lines():
        logger.info("%s", line)
    print(json.dumps(result.to_json(), indent=2))
    return 0


def _add_splash(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("splash", help="colour splash (grey except damage) and an outline image")
    _add_model_arguments(p)
    p.add_argument("--image", type=Path, required=True, nargs="+")
    p.add_argument("--out", type=Path, default=Path("."), help="output folder")
    p.set_defaults(func=_run_splash)


def splash_images(weights: Path, images: Sequence[Path], out_dir: Path, card: Any = None) -> list[tuple[Path, Path]]:
    """For each image: ``<stem>_splash.png`` (grey except the damage) and ``<stem>_outlines.png`` (polygons,
    boxes, labels, scores as the service draws them). Detection runs once per image, through the service code."""
    from car_damage import render
    from car_damage.image_io import decode_image, encode_image
    from car_damage.inference import DamagePredictor
    from car_damage.options import InferenceOptions

    predictor = DamagePredictor.from_weights(weights, card=card)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for image_path in images:
        rgb = decode_image(Path(image_path).read_bytes())
        response = predictor.predict(rgb, InferenceOptions(masks="rle"))  # exact masks for the splash
        splash_path = out_dir / f"{Path(image_path).stem}_splash.png"
        outline_path = out_dir / f"{Path(image_path).stem}_outlines.png"
        splash_path.write_bytes(encode_image(render.color_splash(rgb, render.response_masks(response)), "png"))
        outline_path.write_bytes(encode_image(render.draw_outlines(rgb, response), "png"))
        logger.info("%s: %d damages", image_path, len(response["damages"]))
        written.append((splash_path, outline_path))
    return written


def _run_splash(args: argparse.Namespace) -> int:
    for splash, outline in splash_images(args.weights, args.image, args.out, card=_explicit_card(args)):
        print(f"splash: {splash}")
        print(f"outlines: {outline}")
    return 0


def _add_detect(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("detect", help="print the service's JSON response for one image")
    _add_model_arguments(p)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="an inference option as the service's X-Amzn-SageMaker-Custom-Attributes take them")
    p.set_defaults(func=_run_detect)


def _run_detect(args: argparse.Namespace) -> int:
    from car_damage.image_io import decode_image
    from car_damage.inference import DamagePredictor
    from car_damage.options import InferenceOptions

    pairs = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option expects KEY=VALUE, got {item!r}")
        pairs[key.strip()] = value.strip()
    predictor = DamagePredictor.from_weights(args.weights, card=_explicit_card(args))
    options = InferenceOptions.from_mapping(pairs, known_types=predictor.damage_types)
    response = predictor.predict(decode_image(args.image.read_bytes()), options)
    print(json.dumps(response, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="car-damage",
        description="Car-damage Mask R-CNN: train on VIA/COCO annotations, evaluate, splash and detect.",
        epilog="Run `car-damage COMMAND --help` for a command's options.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(subparsers)
    _add_evaluate(subparsers)
    _add_splash(subparsers)
    _add_detect(subparsers)
    from car_damage import synth

    synth.add_subparser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines drown the output
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from car_damage.errors import ServiceError

    try:
        return int(args.func(args) or 0)
    except (*_USER_ERRORS, ServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
