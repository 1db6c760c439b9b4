"""The operating point from validation data: which score threshold and grouping make the count right.

The service's headline is the number of damages. ``sweep`` takes ONE detection pass over the validation split at
the lowest threshold of the grid (``SWEEP_FLOOR``; detecting at a higher threshold keeps exactly the detections
scoring above it, because NMS only lets higher scores suppress lower ones) and, for every (min_score, merge)
pair of the grid, applies the service's post-processing (``postprocess``: the score filter, then grouping as in
``car_damage.answer.grouping``) and scores the result:

- ``count_exact_rate``: fraction of images whose predicted damage count equals the true count;
- ``f1``: pooled F1 at mask IoU 0.5 (``evaluate.IOU_THRESHOLD``).

The chosen point maximises the exact-count rate, then F1, then prefers the higher threshold (fewer false alarms
at equal quality) and grouping over none. ``plot_sweep`` draws both against the threshold.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from car_damage.answer.grouping import GroupingSettings, Piece, grouped_pieces, is_stroke_name, pieces_from_masks
from car_damage.model.card import OperatingPoint
from car_damage.training.counts import count_metrics
from car_damage.training.metrics import ImageDetections, f1_from_counts, match_counts

logger = logging.getLogger(__name__)

#: The lowest threshold swept: detection runs once at it.
SWEEP_FLOOR = 0.3
SCORE_GRID: tuple[float, ...] = tuple(round(SWEEP_FLOOR + 0.02 * i, 2) for i in range(35))  # 0.30 .. 0.98
#: Grouping settings swept: None is merge=none, numbers are the containment threshold of merge=overlap.
CONTAINMENT_GRID: tuple[float | None, ...] = (None, 0.3, 0.5, 0.7)
OPTIMISES = "count exact-rate on the validation split, then F1 at mask IoU 0.5"
#: Bump when the post-processing a sweep scores changes (grouping rules), so points chosen under older rules are
#: recognised (``operating_point.validation["rules"]``) and chosen again.
RULES_VERSION = 2


@dataclass(frozen=True)
class SweepPoint:
    min_score: float
    merge: str
    containment: float | None
    count_exact_rate: float
    count_mae: float
    f1: float

    def key(self) -> tuple:
        return (round(self.count_exact_rate, 9), round(self.f1, 9), self.min_score, self.merge == "overlap",
                -(self.containment or 0.0))


@dataclass
class Calibration:
    points: list[SweepPoint]
    chosen: SweepPoint
    images: int

    def operating_point(self, base: OperatingPoint) -> OperatingPoint:
        """``base`` (the card's current point: gap and angle) with the chosen threshold and grouping."""
        chosen = self.chosen
        containment = base.merge_containment if chosen.containment is None else chosen.containment
        return dataclasses.replace(
            base, min_score=chosen.min_score, merge=chosen.merge, merge_containment=containment,
            chosen_by=f"validation sweep ({self.images} images): {OPTIMISES}",
            validation={"count_exact_rate": chosen.count_exact_rate, "count_mae": chosen.count_mae,
                        "f1_iou50": chosen.f1, "images": self.images, "rules": RULES_VERSION})

    def to_json(self) -> dict[str, Any]:
        return {"optimises": OPTIMISES, "images": self.images, "chosen": dataclasses.asdict(self.chosen),
                "points": [dataclasses.asdict(p) for p in self.points]}


class _ImagePieces:
    """One image's detections at the sweep floor, with their grouping pieces built once (strokes cached)."""

    def __init__(self, item: ImageDetections, class_names: Sequence[str], damage_type: str) -> None:
        self.item = item
        self.pieces: list[Piece] = []
        for k in range(len(item.pred_scores)):
            class_id = int(item.pred_class_ids[k])
            name = class_names[class_id] if 0 <= class_id < len(class_names) else ""
            self.pieces.append(pieces_from_masks(item.pred_masks[..., k: k + 1],
                                                 is_stroke_name(damage_type, name))[0])
        #: Groups per (members, settings): neighbouring thresholds of a sweep often keep the same detections.
        self.groups: dict[tuple, list[tuple[list[int], Piece]]] = {}
        #: The post-processed image per grouping outcome, and its F1 match counts by the processed image's id (the
        #: same damages score the same; ``outcomes`` keeps each processed image alive, so ids stay unique).
        self.outcomes: dict[tuple, ImageDetections] = {}
        self.match_counts: dict[int, tuple[int, int, int, int]] = {}

    def group(self, members: list[int], settings: GroupingSettings) -> list[tuple[list[int], Piece]]:
        """(detection indices, union piece) per damage, as the service groups them."""
        key = (tuple(members), settings)
        if key not in self.groups:
            self.groups[key] = [([members[i] for i in g], union) for g, union in
                                grouped_pieces([self.pieces[k] for k in members], settings)]
        return self.groups[key]


def postprocess(item: ImageDetections, min_score: float, settings: GroupingSettings,
                class_names: Sequence[str], damage_type: str = "", _cache: _ImagePieces | None = None
                ) -> ImageDetections:
    """The service's post-processing of one image's raw predictions: drop scores below ``min_score`` and empty
    masks, then group per class (``settings``); a group has the union mask, the best score and its class."""
    cache = _cache or _ImagePieces(item, class_names, damage_type)
    order = np.argsort(-np.asarray(item.pred_scores), kind="stable")
    kept = [int(k) for k in order if item.pred_scores[k] >= min_score and cache.pieces[k].area_px > 0]
    groups: list[tuple[list[int], Piece]] = []
    for class_id in dict.fromkeys(int(item.pred_class_ids[k]) for k in kept):
        members = [k for k in kept if int(item.pred_class_ids[k]) == class_id]
        if settings.mode == "none":
            groups += [([k], cache.pieces[k]) for k in members]
        else:
            groups += cache.group(members, settings)
    groups.sort(key=lambda g: -float(item.pred_scores[g[0][0]]))
    # The same members can hold different pixels (a detection split in blobs, a dropped spanning group), so the
    # outcome is named by its unions too: ``group`` memoises them, so equal groupings share the union objects.
    outcome = tuple((tuple(members), id(union)) for members, union in groups)
    if _cache is not None and outcome in _cache.outcomes:
        return _cache.outcomes[outcome]
    height, width = item.pred_masks.shape[:2]
    masks = np.zeros((height, width, len(groups)), dtype=bool)
    for g, (_, union) in enumerate(groups):  # the union of what was grouped (a detection may be split in blobs)
        masks[union.top: union.bottom, union.left: union.right, g] = union.crop
    boxes = np.array([(u.top, u.left, u.bottom, u.right) for _, u in groups], dtype=np.int32).reshape(-1, 4)
    processed = dataclasses.replace(  # the unions' crops are tight: their extents are the masks' boxes
        item, pred_boxes=boxes,
        pred_class_ids=np.array([item.pred_class_ids[g[0][0]] for g in groups], dtype=np.int32),
        pred_scores=np.array([item.pred_scores[g[0][0]] for g in groups], dtype=np.float32), pred_masks=masks)
    if _cache is not None:
        _cache.outcomes[outcome] = processed
    return processed


def _match_counts(processed: ImageDetections, cache: _ImagePieces) -> tuple[int, int, int, int]:
    if id(processed) not in cache.match_counts:
        cache.match_counts[id(processed)] = match_counts(processed)
    return cache.match_counts[id(processed)]


def sweep(items: Sequence[ImageDetections], class_names: Sequence[str], base: OperatingPoint,
          damage_type: str = "", scores: Sequence[float] = SCORE_GRID,
          containments: Sequence[float | None] = CONTAINMENT_GRID) -> Calibration:
    """Every (min_score, grouping) of the grid on detections made at ``min(scores)`` or lower; the best point."""
    if not items:
        raise ValueError("nothing to calibrate on: no validation images")
    caches = [_ImagePieces(item, class_names, damage_type) for item in items]
    points = []
    for containment in containments:
        settings = dataclasses.replace(
            GroupingSettings.from_operating_point(base), mode="none" if containment is None else "overlap",
            containment=base.merge_containment if containment is None else containment)
        for threshold in scores:
            processed = [postprocess(item, threshold, settings, class_names, damage_type, cache)
                         for item, cache in zip(items, caches, strict=True)]
            counts = count_metrics(processed)
            f1 = f1_from_counts([_match_counts(p, c) for p, c in zip(processed, caches, strict=True)])
            points.append(SweepPoint(float(threshold), settings.mode, containment, counts.exact_rate, counts.mae, f1))
    chosen = max(points, key=SweepPoint.key)
    logger.info("operating point: min_score %.2f, merge %s%s: exact count %.3f, count MAE %.3f, F1 %.3f",
                chosen.min_score, chosen.merge, "" if chosen.containment is None else f" {chosen.containment}",
                chosen.count_exact_rate, chosen.count_mae, chosen.f1)
    return Calibration(points, chosen, len(items))


def plot_sweep(calibration: Calibration, path: str | Path) -> Path:
    """PNG: exact-count rate and F1 against min_score, for the chosen grouping (solid) and without (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    chosen = calibration.chosen
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for containment, style in ((chosen.containment, "-"), (None, "--")):
        line = [p for p in calibration.points if p.containment == containment]
        if not line or (style == "--" and chosen.containment is None):
            continue
        label = "no grouping" if containment is None else f"grouping {containment}"
        axes.plot([p.min_score for p in line], [p.count_exact_rate for p in line], style, color="tab:blue",
                  label=f"exact count, {label}")
        axes.plot([p.min_score for p in line], [p.f1 for p in line], style, color="tab:orange",
                  label=f"F1 @ IoU 0.5, {label}")
    axes.axvline(chosen.min_score, color="grey", lw=0.8)
    axes.set(xlabel="min_score", ylabel="fraction", ylim=(0, 1.02),
             title=f"chosen min_score {chosen.min_score:.2f}: exact {chosen.count_exact_rate:.2f}, "
                   f"F1 {chosen.f1:.2f}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
