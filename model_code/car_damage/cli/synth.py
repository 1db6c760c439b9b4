"""``car-damage synth`` (or ``python -m car_damage.cli.synth``): write a synthetic scratch/dent dataset (VIA 2.x)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from car_damage.data.synth import SynthSettings, generate

DESCRIPTION = "Write a synthetic car-paint dataset with scratches and dents, annotated as VIA 2.x (train/ and val/)."


def _int_range(text: str) -> tuple[int, int]:
    """``"2"`` -> (2, 2); ``"1-3"`` -> (1, 3)."""
    try:
        low, _, high = text.partition("-")
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or LOW-HIGH, got {text!r}") from None


def _image_size(text: str) -> tuple[int, int]:
    """``"256"`` -> (256, 256); ``"320x256"`` (width x height) -> (256, 320) as (height, width)."""
    try:
        width, _, height = text.lower().partition("x")
        return int(height or width), int(width)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIZE or WIDTHxHEIGHT, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SynthSettings()
    parser.add_argument("--out", required=True, type=Path, help="output folder (gets train/ and val/)")
    parser.add_argument("--n", type=int, default=defaults.n, help="total number of images (train + val)")
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    parser.add_argument("--size", type=_image_size, default=(defaults.height, defaults.width),
                        help="image size: SIZE (square) or WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--scratches", type=_int_range, default=defaults.scratches, help="per image: N or LOW-HIGH")
    parser.add_argument("--dents", type=_int_range, default=defaults.dents, help="per image: N or LOW-HIGH")
    parser.add_argument("--attribute", default=defaults.attribute,
                        help="region attribute naming the damage type (its value is scratch or dent)")


def settings_from_args(args: argparse.Namespace) -> SynthSettings:
    height, width = args.size
    return SynthSettings(n=args.n, val_fraction=args.val_fraction, height=height, width=width, seed=args.seed,
                         scratches=args.scratches, dents=args.dents, attribute=args.attribute)


def run(args: argparse.Namespace) -> int:
    """Entry point shared by ``python -m car_damage synth`` and ``python -m car_damage.cli.synth``."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    report = generate(args.out, settings)
    print(f"wrote {report.images['train']} train + {report.images['val']} val images "
          f"({report.damages['scratch']} scratches, {report.damages['dent']} dents) to {report.out} "
          f"in {report.seconds:.1f}s")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``synth`` on the ``car-damage`` CLI; the parser's ``func`` default is ``run``."""
    parser = subparsers.add_parser("synth", help="write a synthetic scratch/dent dataset (VIA 2.x)",
                                   description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m car_damage.cli.synth", description=DESCRIPTION)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
