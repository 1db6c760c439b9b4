"""Detection quality on an annotated split: mAP (matterport and COCO style), recall, F1, per-class AP, PR plot.

Definitions (masks are compared at the original image resolution, predictions as the model returns them, i.e.
already filtered by DETECTION_MIN_CONFIDENCE):
- ``map50`` / ``map50_95``: mean over images of ``mrcnn.utils.compute_ap`` at mask IoU 0.5 / of
  ``compute_ap_range`` over IoU 0.5:0.05:0.95 (what matterport's samples report);
- ``coco``: pycocotools COCOeval with ``iouType="segm"`` (AP, AP50, AP75, AR@100 over the whole split);
- ``mean_recall``: mean over images of the fraction of ground-truth instances matched at IoU 0.5;
- ``precision`` / ``recall`` / ``f1``: pooled over the split at IoU 0.5 (matched predictions / predictions,
  matched ground truth / ground truth, their harmonic mean);
- ``per_class_ap``: per class, all-points AP of the pooled precision-recall curve at IoU 0.5 (VOC style);
- ``pr_curve``: that pooled curve over all classes, also drawn by ``plot_precision_recall``;
- ``counts``: the number of damages per image, as the service answers it, against the true number:
  ``exact_rate`` (images counted exactly), ``mae`` (mean absolute count error), ``over_images`` /
  ``under_images`` (images counted too high / too low), ``over_damages`` / ``under_damages`` (the surplus and
  the deficit summed over images) and ``per_image`` (``{image, true, predicted}``). Every image counts here,
  those without ground truth too (their true count is 0).
Images without ground truth are left out of the per-image means (their AP is undefined).

The scoring only: ``car_damage.training.evaluate`` runs a model on a split and calls it, and
``car_damage.training.calibrate`` calls it for every point of its sweep.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from car_damage.data.rle import mask_to_rle
from car_damage.training.counts import count_metrics
from mrcnn import utils

logger = logging.getLogger(__name__)

IOU_THRESHOLD = 0.5


@dataclass
class ImageDetections:
    """Ground truth and predictions of one image (boxes int32 [N, (y1, x1, y2, x2)] pixels, masks bool [H, W, N])."""

    image_id: str
    gt_boxes: np.ndarray
    gt_class_ids: np.ndarray
    gt_masks: np.ndarray
    pred_boxes: np.ndarray
    pred_class_ids: np.ndarray
    pred_scores: np.ndarray
    pred_masks: np.ndarray

    def __post_init__(self) -> None:
        if self.gt_masks.shape[:2] != self.pred_masks.shape[:2]:
            raise ValueError(f"{self.image_id}: GT masks {self.gt_masks.shape[:2]} and predicted masks "
                             f"{self.pred_masks.shape[:2]} differ in size")
        if not (len(self.gt_boxes) == len(self.gt_class_ids) == self.gt_masks.shape[-1]):
            raise ValueError(f"{self.image_id}: GT boxes, class ids and masks disagree in count")
        if not (len(self.pred_boxes) == len(self.pred_class_ids) == len(self.pred_scores) == self.pred_masks.shape[-1]):
            raise ValueError(f"{self.image_id}: predicted boxes, class ids, scores and masks disagree in count")


@dataclass
class EvaluationReport:
    num_images: int
    num_gt: int
    num_predictions: int
    map50: float
    map50_95: float
    mean_recall: float
    precision: float
    recall: float
    f1: float
    per_class_ap: dict[str, float]
    coco: dict[str, float] = field(default_factory=dict)
    pr_curve: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary_lines(self) -> list[str]:
        lines = [
            f"images {self.num_images}  ground truth {self.num_gt}  predictions {self.num_predictions}",
            f"mAP@0.5 {self.map50:.4f}  mAP@[0.5:0.95] {self.map50_95:.4f}",
            f"mean recall {self.mean_recall:.4f}  precision {self.precision:.4f}  recall {self.recall:.4f}  "
            f"F1 {self.f1:.4f}",
        ]
        if self.counts:
            c = self.counts
            lines.append(f"count exact {c['exact_rate']:.4f} ({c['exact_images']}/{c['images']} images)  "
                         f"count MAE {c['mae']:.4f}  over-counted {c['over_images']} images (+{c['over_damages']})  "
                         f"under-counted {c['under_images']} images (-{c['under_damages']})")
        if self.coco:
            lines.append("COCO segm " + "  ".join(f"{k} {v:.4f}" for k, v in self.coco.items()))
        lines += [f"AP@0.5 {name}: {ap:.4f}" for name, ap in self.per_class_ap.items()]
        return lines


def pooled_f1(items: Sequence[ImageDetections]) -> float:
    """F1 at mask IoU 0.5, predictions and ground truth pooled over the split (0 when either side is empty)."""
    return f1_from_counts([match_counts(item) for item in items])


def match_counts(item: ImageDetections) -> tuple[int, int, int, int]:
    """(matched predictions, matched ground truth, predictions, ground truth) of one image at mask IoU 0.5."""
    if not (len(item.pred_scores) and len(item.gt_class_ids)):
        return 0, 0, len(item.pred_scores), len(item.gt_class_ids)
    gt_match, pred_match, _ = _matches(item)
    return int(np.sum(pred_match > -1)), int(np.sum(gt_match > -1)), len(item.pred_scores), len(item.gt_class_ids)


def f1_from_counts(counts: Sequence[tuple[int, int, int, int]]) -> float:
    """Pooled F1 from per-image ``match_counts``."""
    totals = np.asarray(counts, dtype=np.int64).reshape(-1, 4).sum(axis=0)
    matched_predictions, matched_gt, predictions, gt = (int(v) for v in totals)
    precision = matched_predictions / predictions if predictions else 0.0
    recall = matched_gt / gt if gt else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _matches(item: ImageDetections, class_id: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gt_match, pred_match, scores in pred_match's order) at IoU 0.5, optionally for one class only.

    Matching is class-aware, so restricting both sides to one class gives that class's matches exactly.
    """
    gt_keep = slice(None) if class_id is None else item.gt_class_ids == class_id
    pred_keep = slice(None) if class_id is None else item.pred_class_ids == class_id
    gt_match, pred_match, _ = utils.compute_matches(
        item.gt_boxes[gt_keep], item.gt_class_ids[gt_keep], item.gt_masks[..., gt_keep],
        item.pred_boxes[pred_keep], item.pred_class_ids[pred_keep], item.pred_scores[pred_keep],
        item.pred_masks[..., pred_keep], iou_threshold=IOU_THRESHOLD,
    )
    # compute_matches sorts predictions by descending score; equal scores are interchangeable for the curve.
    return np.asarray(gt_match), np.asarray(pred_match), np.sort(item.pred_scores[pred_keep])[::-1]


def pooled_ap(scores: np.ndarray, matched: np.ndarray, num_gt: int) -> tuple[float, np.ndarray, np.ndarray]:
    """All-points AP of predictions pooled over images: (ap, precisions, recalls) along descending score."""
    if num_gt == 0:
        return float("nan"), np.zeros(0), np.zeros(0)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.asarray(matched, dtype=bool)[order]
    true_positives = np.cumsum(hits)
    precisions = true_positives / np.arange(1, len(hits) + 1)
    recalls = true_positives / num_gt
    # Same interpolation as compute_ap: pad, then make precision non-increasing from the right.
    padded_p = np.concatenate([[0.0], precisions, [0.0]])
    padded_r = np.concatenate([[0.0], recalls, [1.0]])
    padded_p = np.maximum.accumulate(padded_p[::-1])[::-1]
    steps = np.where(padded_r[1:] != padded_r[:-1])[0] + 1
    ap = float(np.sum((padded_r[steps] - padded_r[steps - 1]) * padded_p[steps]))
    return ap, precisions, recalls


def coco_segm_metrics(items: Sequence[ImageDetections], class_names: Sequence[str]) -> dict[str, float]:
    """pycocotools COCOeval (segm) over the split; {} when there are no predictions or no ground truth, or
    when pycocotools (the ``eval`` extra) is not installed."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        logger.warning("pycocotools is not installed (pip install '.[eval]'): COCO-style metrics skipped")
        return {}

    images, gts, dets = [], [], []
    for index, item in enumerate(items, start=1):
        height, width = item.gt_masks.shape[:2]
        images.append({"id": index, "width": int(width), "height": int(height)})
        for k in range(item.gt_masks.shape[-1]):
            y1, x1, y2, x2 = (int(v) for v in item.gt_boxes[k])
            gts.append({"id": len(gts) + 1, "image_id": index, "category_id": int(item.gt_class_ids[k]),
                        "segmentation": mask_to_rle(item.gt_masks[..., k]), "area": float(item.gt_masks[..., k].sum()),
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0})
        for k in range(item.pred_masks.shape[-1]):
            dets.append({"image_id": index, "category_id": int(item.pred_class_ids[k]),
                         "segmentation": mask_to_rle(item.pred_masks[..., k]), "score": float(item.pred_scores[k])})
    if not gts or not dets:
        return {}
    ground_truth = COCO()
    ground_truth.dataset = {"images": images, "annotations": gts,
                            "categories": [{"id": i, "name": n} for i, n in enumerate(class_names) if i > 0]}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # pycocotools prints its tables; keep stdout for the CLI's JSON
        ground_truth.createIndex()
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(dets), iouType="segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    logger.debug("pycocotools:\n%s", printed.getvalue())
    stats = evaluation.stats
    return {"AP": float(stats[0]), "AP50": float(stats[1]), "AP75": float(stats[2]), "AR100": float(stats[8])}


def evaluate_detections(
    items: Sequence[ImageDetections], class_names: Sequence[str], with_coco: bool = True
) -> EvaluationReport:
    """Every metric of the module docstring. ``class_names[0]`` is "BG"; class ids index ``class_names``."""
    if not items:
        raise ValueError("nothing to evaluate: no images")
    scored = [item for item in items if len(item.gt_class_ids)]
    if not scored:
        raise ValueError("nothing to evaluate: no image has ground truth")
    aps, aps_range, recalls_per_image = [], [], []
    pooled_scores, pooled_hits = [], []
    matched_gt = 0
    for item in scored:
        ap, _, _, _ = utils.compute_ap(
            item.gt_boxes, item.gt_class_ids, item.gt_masks,
            item.pred_boxes, item.pred_class_ids, item.pred_scores, item.pred_masks, iou_threshold=IOU_THRESHOLD,
        )
        aps.append(float(ap))
        with contextlib.redirect_stdout(io.StringIO()):  # compute_ap_range prints one line per threshold
            aps_range.append(float(utils.compute_ap_range(
                item.gt_boxes, item.gt_class_ids, item.gt_masks,
                item.pred_boxes, item.pred_class_ids, item.pred_scores, item.pred_masks, verbose=0,
            )))
        gt_match, pred_match, sorted_scores = _matches(item)
        recalls_per_image.append(float(np.mean(gt_match > -1)))
        matched_gt += int(np.sum(gt_match > -1))
        pooled_scores.append(sorted_scores)
        pooled_hits.append(pred_match > -1)
    scores = np.concatenate(pooled_scores)
    hits = np.concatenate(pooled_hits).astype(bool)
    gt_classes = np.concatenate([np.asarray(item.gt_class_ids) for item in scored])
    num_gt = int(len(gt_classes))
    precision = float(hits.sum() / len(hits)) if len(hits) else 0.0
    recall = matched_gt / num_gt
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    per_class = {}
    for class_id, name in enumerate(class_names):
        if class_id == 0:
            continue
        count = int(np.sum(gt_classes == class_id))
        if count:
            class_scores, class_hits = [], []
            for item in scored:
                _, pred_match, sorted_scores = _matches(item, class_id)
                class_scores.append(sorted_scores)
                class_hits.append(pred_match > -1)
            per_class[name] = pooled_ap(np.concatenate(class_scores), np.concatenate(class_hits), count)[0]
    _, curve_p, curve_r = pooled_ap(scores, hits, num_gt)
    return EvaluationReport(
        num_images=len(scored),
        num_gt=num_gt,
        num_predictions=int(sum(len(item.pred_scores) for item in scored)),
        map50=float(np.mean(aps)),
        map50_95=float(np.mean(aps_range)),
        mean_recall=float(np.mean(recalls_per_image)),
        precision=precision,
        recall=float(recall),
        f1=float(f1),
        per_class_ap=per_class,
        coco=coco_segm_metrics(scored, class_names) if with_coco else {},
        pr_curve={"precision": [float(v) for v in curve_p], "recall": [float(v) for v in curve_r]},
        counts=count_metrics(items).to_json(),
    )


def plot_precision_recall(report: EvaluationReport, path: str | Path) -> Path:
    """PNG of the pooled precision-recall curve at IoU 0.5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    figure, axes = plt.subplots(figsize=(5, 5), dpi=100)
    recalls, precisions = report.pr_curve.get("recall", []), report.pr_curve.get("precision", [])
    if recalls:
        axes.step([0.0, *recalls], [precisions[0], *precisions], where="post", color="tab:red")
    axes.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="recall", ylabel="precision",
             title=f"IoU 0.5: mAP {report.map50:.3f}, F1 {report.f1:.3f}")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
