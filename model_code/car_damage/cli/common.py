"""What the ``car-damage`` commands share: argument types, the model arguments, and which errors are the user's."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: Errors that mean "bad input", reported as one line and exit status 2 (anything else is a bug: traceback).
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError)


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


def csv_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", type=Path, required=True, help="mask_cnn_<type>.h5 (its sidecar .json is used)")
    p.add_argument("--card", type=Path, help="model card JSON when it is not next to the weights")


def explicit_card(args: argparse.Namespace):  # -> ModelCard | None
    """``--card`` if given; otherwise None, so each consumer applies its own sidecar rules (the service's for
    detect and splash, so they answer exactly as the endpoint would)."""
    from car_damage.model.card import ModelCard

    return ModelCard.load(args.card) if args.card else None
