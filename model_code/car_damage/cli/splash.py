"""``car-damage splash``: a colour splash (grey except the damage) and an outline image per photo."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from car_damage.cli.common import add_model_arguments, explicit_card

logger = logging.getLogger(__name__)

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("splash", help="colour splash (grey except damage) and an outline image")
    add_model_arguments(p)
    p.add_argument("--image", type=Path, required=True, nargs="+")
    p.add_argument("--out", type=Path, default=Path("."), help="output folder")
    p.set_defaults(func=run)


def splash_images(weights: Path, images: Sequence[Path], out_dir: Path, card: Any = None) -> list[tuple[Path, Path]]:
    """For each image: ``<stem>_splash.png`` (grey except the damage) and ``<stem>_outlines.png`` (polygons,
    boxes, labels, scores as the service draws them). Detection runs once per image, through the service code."""
    from car_damage.answer import render
    from car_damage.answer.options import InferenceOptions
    from car_damage.answer.predictor import DamagePredictor
    from car_damage.data.images import decode_image, encode_image

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


def run(args: argparse.Namespace) -> int:
    for splash, outline in splash_images(args.weights, args.image, args.out, card=explicit_card(args)):
        print(f"splash: {splash}")
        print(f"outlines: {outline}")
    return 0
