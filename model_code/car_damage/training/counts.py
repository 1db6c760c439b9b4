"""Damage counts per image: what the service's headline says against what is really there.

``count_metrics`` takes per-image predictions already post-processed as the service does (score threshold, then
damage grouping) and their ground truth; definitions in ``car_damage.training.evaluate``'s docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class CountMetrics:
    """Predicted against true damage counts per image (module docstring)."""

    images: int
    exact_images: int
    exact_rate: float
    mae: float
    over_images: int
    under_images: int
    over_damages: int
    under_damages: int
    per_image: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def count_metrics(items: Sequence[Any]) -> CountMetrics:
    """Exact-count rate, count MAE and over/under counts of ``evaluate.ImageDetections`` (gt_class_ids, pred_scores)."""
    if not items:
        raise ValueError("no images to count on")
    true = np.array([len(item.gt_class_ids) for item in items])
    predicted = np.array([len(item.pred_scores) for item in items])
    error = predicted - true
    return CountMetrics(
        images=len(items), exact_images=int(np.sum(error == 0)), exact_rate=float(np.mean(error == 0)),
        mae=float(np.mean(np.abs(error))), over_images=int(np.sum(error > 0)), under_images=int(np.sum(error < 0)),
        over_damages=int(error[error > 0].sum()), under_damages=int(-error[error < 0].sum()),
        per_image=[{"image": item.image_id, "true": int(t), "predicted": int(p)}
                   for item, t, p in zip(items, true, predicted, strict=True)])
