"""``python -m car_damage {train,evaluate,splash,detect,synth}`` (console script ``car-damage``): the dispatcher.

    car-damage train --dataset data/ --weights coco            # the old `python maskR_CNN.py train ...`
    car-damage evaluate --weights logs/.../mask_cnn_scratch.h5 --dataset data/ --subset val
    car-damage splash --weights mask_cnn_scratch.h5 --image car.jpg
    car-damage detect --weights mask_cnn_scratch.h5 --image car.jpg

One module per command (``car_damage.cli.<command>``: ``add_parser`` + ``run``); the training itself lives in
``car_damage.training.train``. Human output goes to stderr (logging); stdout carries only results (JSON for
evaluate and detect).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from car_damage.cli import detect, evaluate, splash, synth, train
from car_damage.cli.common import USER_ERRORS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="car-damage",
        description="Car-damage Mask R-CNN: train on VIA/COCO annotations, evaluate, splash and detect.",
        epilog="Run `car-damage COMMAND --help` for a command's options.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (train, evaluate, splash, detect, synth):
        command.add_parser(subparsers)
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
    except (*USER_ERRORS, ServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
