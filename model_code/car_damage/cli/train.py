"""``car-damage train``: fine-tune on a VIA/COCO dataset folder (the old ``python maskR_CNN.py train``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from car_damage.cli.common import csv_list, parse_config_override
from car_damage.training.train import TrainOptions, train_model


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    d = TrainOptions(dataset=Path("."))
    p = subparsers.add_parser("train", help="fine-tune on a VIA/COCO dataset folder (train/ and val/)")
    p.add_argument("--dataset", type=Path, required=True, help="folder holding train/ and val/")
    p.add_argument("--weights", required=True, help="coco | last | imagenet | none | PATH to an .h5 file")
    p.add_argument("--label", default=d.label, help="damage type: names the model file mask_cnn_<label>.h5")
    p.add_argument("--classes", type=csv_list, help="class names, comma-separated (default: the label)")
    p.add_argument("--attribute", type=csv_list, help="region attribute name(s) holding the class (default: class, "
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
    p.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=d.calibrate,
                   help="choose the service's operating point (min_score, damage grouping) on val after training "
                   "and write it into the card (default on)")
    p.add_argument("--config", dest="config_overrides", type=parse_config_override, action="append", default=[],
                   metavar="KEY=VALUE", help="set a Mask R-CNN config attribute (repeatable), e.g. "
                   "--config TRAIN_ROIS_PER_IMAGE=64 --config RPN_ANCHOR_SCALES='(16, 32, 64, 128, 256)'")
    p.add_argument("--seed", type=int, help="seed initial weights, sampling and augmentation (a repeatable run)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = TrainOptions(
        dataset=args.dataset, weights=args.weights, label=args.label, classes=args.classes,
        attributes=args.attribute, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        validation_steps=args.val_steps, layers=args.layers, logs=args.logs, backbone=args.backbone,
        image_size=args.image_size, learning_rate=args.learning_rate, augment=args.augment,
        min_confidence=args.min_confidence, images_per_gpu=args.images_per_gpu, gpu_count=args.gpu_count,
        out=args.out,
        coco_path=args.coco_path, drop_leaked_val=args.drop_leaked_val, evaluate=args.evaluate,
        calibrate=args.calibrate,
        config_overrides=dict(args.config_overrides), seed=args.seed,
    )
    outcome = train_model(options)
    print(f"weights: {outcome.weights_path}")
    print(f"model card: {outcome.card_path}")
    if outcome.evaluation is not None and options.evaluate:
        print("\n".join(outcome.evaluation.summary_lines()))
    return 0
