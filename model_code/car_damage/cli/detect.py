"""``car-damage detect``: print the service's JSON answer for one image, with the service's options."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from car_damage.cli.common import add_model_arguments, explicit_card


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("detect", help="print the service's JSON response for one image")
    add_model_arguments(p)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="an inference option as the service's X-Amzn-SageMaker-Custom-Attributes take them")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from car_damage.answer.options import InferenceOptions
    from car_damage.answer.predictor import DamagePredictor
    from car_damage.data.images import decode_image

    pairs = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option expects KEY=VALUE, got {item!r}")
        pairs[key.strip()] = value.strip()
    predictor = DamagePredictor.from_weights(args.weights, card=explicit_card(args))
    options = InferenceOptions.from_mapping(pairs, known_types=predictor.damage_types)
    response = predictor.predict(decode_image(args.image.read_bytes()), options)
    print(json.dumps(response, indent=2))
    return 0
