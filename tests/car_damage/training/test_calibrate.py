"""The operating-point sweep on a tiny hand-made split: it picks what a hand computation picks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from car_damage.answer.grouping import GroupingSettings
from car_damage.model.card import ModelCard, OperatingPoint
from car_damage.training.calibrate import OPTIMISES, RULES_VERSION, plot_sweep, postprocess, sweep
from car_damage.training.counts import count_metrics
from car_damage.training.metrics import ImageDetections, evaluate_detections, pooled_f1

CLASSES = ["BG", "scratch"]


def _masks(boxes, size=20):
    masks = np.zeros((size, size, len(boxes)), bool)
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        masks[y1:y2, x1:x2, k] = True
    return masks


def _item(name, gt, pred, scores):
    return ImageDetections(
        image_id=name, gt_boxes=np.asarray(gt, np.int32).reshape(-1, 4), gt_class_ids=np.ones(len(gt), np.int32),
        gt_masks=_masks(gt), pred_boxes=np.asarray(pred, np.int32).reshape(-1, 4),
        pred_class_ids=np.ones(len(pred), np.int32), pred_scores=np.asarray(scores, np.float32),
        pred_masks=_masks(pred))


HIT_A, HIT_B1, HIT_B2 = (1, 1, 6, 6), (10, 10, 15, 18), (1, 10, 4, 19)
FAR = (15, 0, 19, 4)


def _split():
    return [
        _item("a", [HIT_A], [HIT_A, FAR], [0.9, 0.6]),              # one damage, a false alarm at 0.6
        _item("b", [HIT_B1, HIT_B2], [HIT_B1, HIT_B2], [0.8, 0.5]),  # two damages, the second scored 0.5
        _item("c", [], [FAR], [0.7]),                                # no damage, a false alarm at 0.7
    ]


def test_count_metrics_by_hand():
    counts = count_metrics(_split())  # predicted 2, 2, 1 against true 1, 2, 0
    assert (counts.images, counts.exact_images, counts.exact_rate) == (3, 1, pytest.approx(1 / 3))
    assert counts.mae == pytest.approx(2 / 3)
    assert (counts.over_images, counts.under_images, counts.over_damages, counts.under_damages) == (2, 0, 2, 0)
    assert counts.per_image[2] == {"image": "c", "true": 0, "predicted": 1}
    report = evaluate_detections(_split(), CLASSES, with_coco=False)
    assert report.counts["exact_rate"] == pytest.approx(1 / 3) and report.counts["images"] == 3
    assert any(line.startswith("count exact 0.3333 (1/3 images)  count MAE 0.6667") for line in report.summary_lines())
    assert pooled_f1(_split()) == pytest.approx(0.75)  # 3 of 5 predictions hit, all 3 damages found


def test_sweep_picks_the_hand_computed_threshold(tmp_path):
    # exact counts (a, b, c) per threshold: 0.40 -> 1/3 (F1 0.75), 0.55 -> 0/3, 0.65 -> 1/3, 0.75 -> 2/3 (F1 0.8),
    # 0.85 -> 2/3 (F1 0.5), 0.95 -> 1/3. Best exact rate 2/3 at 0.75 and 0.85; F1 decides: 0.75.
    grid = (0.4, 0.55, 0.65, 0.75, 0.85, 0.95)
    calibration = sweep(_split(), CLASSES, OperatingPoint(), "scratch", scores=grid, containments=(None,))
    exact = [round(p.count_exact_rate, 4) for p in calibration.points]
    assert exact == [0.3333, 0.0, 0.3333, 0.6667, 0.6667, 0.3333]
    assert [round(p.f1, 4) for p in calibration.points][3:5] == [0.8, 0.5]
    chosen = calibration.chosen
    assert (chosen.min_score, chosen.merge, chosen.count_exact_rate) == (0.75, "none", pytest.approx(2 / 3))
    point = calibration.operating_point(OperatingPoint())
    assert (point.min_score, point.merge) == (0.75, "none") and OPTIMISES in point.chosen_by
    assert point.validation == {"count_exact_rate": pytest.approx(2 / 3), "count_mae": pytest.approx(1 / 3),
                                "f1_iou50": pytest.approx(0.8), "images": 3, "rules": RULES_VERSION}
    png = plot_sweep(calibration, tmp_path / "sweep.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (600, 400)
    json.dumps(calibration.to_json())


def test_sweep_prefers_grouping_when_fragments_double_count():
    # image d: one damage found twice (a duplicate mostly inside the first detection)
    items = [_item("d", [(2, 2, 12, 12)], [(2, 2, 12, 12), (3, 3, 11, 10)], [0.9, 0.8])]
    calibration = sweep(items, CLASSES, OperatingPoint(), "scratch", scores=(0.5,), containments=(None, 0.5))
    none, overlap = calibration.points
    assert (none.count_exact_rate, overlap.count_exact_rate) == (0.0, 1.0)
    assert (calibration.chosen.merge, calibration.chosen.containment) == ("overlap", 0.5)
    merged = postprocess(items[0], 0.5, GroupingSettings("overlap", 0.5), CLASSES, "scratch")
    assert merged.pred_masks.shape[-1] == 1 and merged.pred_masks[..., 0].sum() == 100
    assert merged.pred_scores.tolist() == [pytest.approx(0.9)] and merged.pred_boxes.tolist() == [[2, 2, 12, 12]]


def test_operating_point_round_trips_through_the_card(tmp_path):
    card = ModelCard("scratch", ["BG", "scratch"], {"DETECTION_MIN_CONFIDENCE": 0.5})
    assert card.default_min_score == 0.5  # no chosen point: DETECTION_MIN_CONFIDENCE
    card.operating_point = OperatingPoint(min_score=0.56, merge_containment=0.3, chosen_by="test")
    loaded = ModelCard.load(card.save(tmp_path / "mask_cnn_scratch.json"))
    assert loaded.operating_point == card.operating_point and loaded.default_min_score == 0.56
    assert ModelCard("scratch", ["BG", "scratch"]).default_min_score == 0.9  # the old system's default
    data = json.loads((tmp_path / "mask_cnn_scratch.json").read_text())
    data["operating_point"]["merge"] = "boxes"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="merge"):
        ModelCard.load(tmp_path / "bad.json")
