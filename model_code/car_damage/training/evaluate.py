"""Evaluate one weights file on an annotated split: detect, post-process as the service does, score, report.

``evaluate_weights`` evaluates what the service returns: the card's operating point (score threshold and damage
grouping, ``car_damage.training.calibrate.postprocess``) unless overridden; with ``calibrate`` it first chooses
that operating point on the split and writes it into the card. The metrics themselves are defined in
``car_damage.training.metrics``; the JSON it writes is ``EvaluationRun.to_json``.
"""


from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from car_damage.training.metrics import EvaluationReport, ImageDetections, evaluate_detections, plot_precision_recall
from mrcnn import utils

logger = logging.getLogger(__name__)


def detect_split(model: Any, dataset: Any, limit: int | None = None) -> list[ImageDetections]:
    """Run ``model.detect`` (an inference MaskRCNN) on every image of a prepared dataset, GT from its masks."""
    items = []
    for image_id in list(dataset.image_ids)[:limit]:
        image = dataset.load_image(image_id)
        gt_masks, gt_class_ids = dataset.load_mask(image_id)
        result = model.detect([image], verbose=0)[0]
        items.append(ImageDetections(
            image_id=str(dataset.image_info[image_id]["id"]),
            gt_boxes=utils.extract_bboxes(gt_masks), gt_class_ids=gt_class_ids, gt_masks=gt_masks,
            pred_boxes=result["rois"], pred_class_ids=result["class_ids"], pred_scores=result["scores"],
            pred_masks=result["masks"],
        ))
    return items


@dataclass
class EvaluationRun:
    """An evaluation of one weights file on one annotated folder, and the files it wrote."""

    weights: Path
    split_dir: Path
    class_names: list[str]
    json_path: Path
    plot_path: Path
    report: EvaluationReport
    #: What post-processing the predictions had: {min_score, merge, containment}.
    postprocess: dict[str, Any] = field(default_factory=dict)
    calibration: Any = None  # calibrate.Calibration when the operating point was chosen here
    calibration_plot: Path | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"weights": str(self.weights), "split": str(self.split_dir), "class_names": self.class_names,
                "plot": str(self.plot_path), "postprocess": self.postprocess, **self.report.to_json()}
        if self.calibration is not None:
            data["calibration"] = {**self.calibration.to_json(), "plot": str(self.calibration_plot)}
        return data


def evaluate_weights(
    weights: str | Path,
    split_dir: str | Path,
    out_json: str | Path,
    card: Any = None,
    attributes: Sequence[str] | None = None,
    min_confidence: float | None = None,
    limit: int | None = None,
    exclude: Sequence[str] = (),
    merge: str | None = None,
    calibrate: bool = False,
    card_path: str | Path | None = None,
) -> EvaluationRun:
    """Load ``weights`` (config from ``card`` or its sidecar), detect on ``split_dir`` (minus the file names in
    ``exclude``), post-process as the service does, write JSON + PR plot.

    ``min_confidence`` replaces both the graph's DETECTION_MIN_CONFIDENCE and the card's operating threshold;
    ``merge`` the card's grouping mode. ``calibrate`` detects once at the sweep floor, chooses the operating
    point (``calibrate.sweep``), writes it into the card (``card_path``, default the weights' sidecar) with the
    sweep's plot ``<name>_operating_point.png``, and evaluates at that point."""
    import json

    from car_damage.answer.grouping import GroupingSettings
    from car_damage.data.dataset import DamageDataset, load_split
    from car_damage.model.card import card_path_for
    from car_damage.training.calibrate import SWEEP_FLOOR, plot_sweep, postprocess, sweep
    from car_damage.training.weights import card_for_weights, check_weights_file, inference_model

    weights, split_dir, out_json = Path(weights), Path(split_dir), Path(out_json)
    info = check_weights_file(weights)  # once: the card (when inferred) and the model load both use it
    card = card or card_for_weights(weights, info=info)
    classes = list(card.class_names[1:])
    dataset = DamageDataset.from_split(load_split(split_dir, classes, attributes), classes, exclude=exclude)
    if not len(dataset.image_ids):
        raise ValueError(f"{split_dir}: no annotated image to evaluate")
    detect_floor = card.default_min_score if min_confidence is None else float(min_confidence)
    graph_floor = min(float(card.to_config().DETECTION_MIN_CONFIDENCE), detect_floor)
    if calibrate:
        graph_floor = min(graph_floor, SWEEP_FLOOR)
    model, _ = inference_model(weights, card=card, info=info, DETECTION_MIN_CONFIDENCE=graph_floor)
    raw = detect_split(model, dataset, limit)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    calibration = calibration_plot = None
    if calibrate:
        calibration = sweep(raw, card.class_names, card.operating_point, card.damage_type)
        card.operating_point = calibration.operating_point(card.operating_point)
        saved = card.save(card_path or card_path_for(weights))
        calibration_plot = plot_sweep(calibration, out_json.with_name(out_json.stem + "_operating_point.png"))
        logger.info("operating point written to %s (curve: %s)", saved, calibration_plot)
        detect_floor = card.default_min_score if min_confidence is None else float(min_confidence)
    grouping = GroupingSettings.from_operating_point(card.operating_point, merge)
    items = [postprocess(item, detect_floor, grouping, card.class_names, card.damage_type) for item in raw]
    report = evaluate_detections(items, card.class_names)
    plot = plot_precision_recall(report, out_json.with_name(out_json.stem + "_pr.png"))
    applied = {"min_score": detect_floor, **grouping.to_json()}
    run = EvaluationRun(weights, split_dir, list(card.class_names), out_json, plot, report, applied, calibration,
                        calibration_plot)
    out_json.write_text(json.dumps(run.to_json(), indent=2) + "\n")
    logger.info("evaluation of %s on %s written to %s", weights, split_dir, out_json)
    return run
