"""``car-damage evaluate``: mAP, recall, F1, per-class AP and a PR plot on an annotated split (JSON on stdout)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from car_damage.cli.common import add_model_arguments, csv_list, explicit_card
from car_damage.model.card import MERGE_MODES

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="mAP, recall, F1, per-class AP and a PR plot on an annotated split")
    add_model_arguments(p)
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--subset", default="val")
    p.add_argument("--attribute", type=csv_list, help="region attribute name(s) holding the class")
    p.add_argument("--min-confidence", type=float, help="score threshold instead of the card's operating point")
    p.add_argument("--merge", choices=MERGE_MODES, help="damage grouping instead of the card's operating point")
    p.add_argument("--calibrate", action="store_true", help="choose the operating point (min_score, grouping) on "
                   "this split, write it into the card, draw <name>_operating_point.png, then evaluate at it")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--out", type=Path, help="JSON file to write (default evaluation_<subset>.json); "
                   "the plot goes next to it as <name>_pr.png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from car_damage.training.evaluate import evaluate_weights

    out = args.out or Path(f"evaluation_{args.subset}.json")
    result = evaluate_weights(args.weights, args.dataset / args.subset, out, card=explicit_card(args),
                              attributes=args.attribute, min_confidence=args.min_confidence, limit=args.limit,
                              merge=args.merge, calibrate=args.calibrate, card_path=getattr(args, "card", None))
    for line in result.report.summary_lines():
        logger.info("%s", line)
    print(json.dumps(result.to_json(), indent=2))
    return 0
