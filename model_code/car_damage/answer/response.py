"""The JSON response: built from raw detections, checked against THE schema (``response_schema.json``).

``build_response`` turns per-model detections (boxes, class ids, scores and full-size masks, as
``mrcnn`` unmolds them) into the documented response: one entry per damage with its polygons and areas,
union totals per type and overall, the models used, the effective options and the timings. It is pure
(no TensorFlow), so its numbers are tested on hand-made masks.

Rules applied here, in this order:
1. ``options.types`` drops other types; ``options.min_score`` drops lower scores (the models have already
   applied their own DETECTION_MIN_CONFIDENCE, see ``inference``).
2. Detections whose mask is empty (possible after mask thresholding) are dropped: a damage without
   pixels has no polygon and no area.
3. Detections of one damage are grouped (``grouping``; each model's thresholds, ``options.merge`` may turn it
   off): a group is one damage with the union mask, the best score and ``parts``.
4. Damages are sorted by score, highest first (ties keep model order), then cut to ``max_instances``.
5. Totals are unions of the kept masks, so overlapping damages (e.g. a scratch inside a dent) count once.
6. Each damage is measured (``measure``): its oriented box, and for scratches the length along the stroke and
   the mean width, in pixels and, with a calibration, in the unit.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from car_damage.answer.geometry import AreaCalibration, mask_to_polygons, tight_crops
from car_damage.answer.grouping import GroupingSettings, Piece, grouped_pieces, is_stroke_name, union_crop
from car_damage.answer.measure import Stroke, box_sides_in_units, oriented_box, stroke_length_in_units
from car_damage.answer.options import InferenceOptions
from car_damage.data.rle import mask_to_rle

logger = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).with_name("response_schema.json")
#: The version the schema pins (one place: the schema file).
SCHEMA_VERSION: str = json.loads(SCHEMA_PATH.read_text())["properties"]["schema_version"]["const"]
#: Digits kept for scores and timings (more is noise in JSON).
SCORE_DIGITS = 4
TIMING_DIGITS = 3


class InvalidResponse(ValueError):
    """A response that does not match the schema or is inconsistent with itself."""


@dataclass
class ModelDetections:
    """One model's detections on one image, in original pixels.

    boxes: [N, (y1, x1, y2, x2)] int, y2/x2 exclusive; class_ids: [N] int; scores: [N] float;
    masks: [H, W, N] bool (full image size).
    """

    damage_type: str
    class_names: Sequence[str]
    boxes: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    masks: np.ndarray
    #: How this model's detections are grouped into damages (the model card's thresholds).
    grouping: GroupingSettings = GroupingSettings()

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes).reshape(-1, 4)
        self.class_ids = np.asarray(self.class_ids).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.masks = np.asarray(self.masks)
        count = self.boxes.shape[0]
        if self.masks.ndim != 3 or not (len(self.class_ids) == len(self.scores) == self.masks.shape[2] == count):
            raise ValueError(
                f"inconsistent detections: {count} boxes, {len(self.class_ids)} class ids, "
                f"{len(self.scores)} scores, masks of shape {self.masks.shape} (expected [H, W, {count}])"
            )


@dataclass(frozen=True)
class ModelInfo:
    """What the response says about a model that ran."""

    damage_type: str
    name: str
    version: str
    backbone: str
    min_score: float
    grouping: GroupingSettings | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"type": self.damage_type, "name": self.name, "version": self.version,
                "backbone": self.backbone, "min_score": float(self.min_score)}
        if self.grouping is not None:
            data["merge"] = self.grouping.to_json()
        return data


@dataclass
class _Kept:
    damage_type: str
    class_name: str
    score: float
    box: np.ndarray
    crop: np.ndarray  # tight crop of the mask: polygons and unions work on it, not on the whole image
    top: int
    left: int
    area_px: int
    parts: int = 1
    stroke: Stroke | None = None  # measured already while grouping

    def full_mask(self, image_size: tuple[int, int]) -> np.ndarray:
        mask = np.zeros(image_size, dtype=bool)
        self.paste_into(mask)
        return mask

    def paste_into(self, union: np.ndarray) -> None:
        height, width = self.crop.shape
        union[self.top: self.top + height, self.left: self.left + width] |= self.crop


def build_response(
    image_size: tuple[int, int],
    detections: Sequence[ModelDetections],
    models: Sequence[ModelInfo],
    options: InferenceOptions,
    timings_ms: Mapping[str, float],
) -> dict[str, Any]:
    """Assemble the response for an image of ``image_size`` = (height, width); see the module docstring."""
    height, width = (int(v) for v in image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {image_size}")
    for model_detections in detections:
        if model_detections.masks.shape[:2] != (height, width):
            raise ValueError(f"{model_detections.damage_type} masks are {model_detections.masks.shape[:2]}, "
                             f"image is {(height, width)}")
    kept = _select(detections, options)
    pixels = height * width
    calibration = options.calibration

    damages = []
    for index, item in enumerate(kept):
        y1, x1, y2, x2 = (int(v) for v in item.box)
        y1, x1 = min(max(y1, 0), height), min(max(x1, 0), width)
        y2, x2 = min(max(y2, y1), height), min(max(x2, x1), width)
        damage: dict[str, Any] = {
            "id": index,
            "type": item.damage_type,
            "class_name": item.class_name,
            "score": round(item.score, SCORE_DIGITS),
            "bbox": {"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1},
            "polygons": mask_to_polygons(item.crop, options.polygon_tolerance, origin=(item.left, item.top)),
            "area_px": item.area_px,
            "area_fraction": item.area_px / pixels,
            "parts": item.parts,
        }
        if calibration is not None:
            damage["area"] = _area(calibration, item.area_px, width, height)
        damage.update(_measurements(item, calibration, (height, width)))
        if options.masks == "rle":
            damage["mask"] = mask_to_rle(item.full_mask((height, width)))
        damages.append(damage)

    response: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "image": {"width": width, "height": height},
        "damage_count": len(damages),
        "damages": damages,
        "totals": _totals(kept, _types_run(detections, options), (height, width), calibration),
        "models": [model.to_json() for model in models],
        "options": options.to_json(),
        "timings_ms": {key: round(float(value), TIMING_DIGITS) for key, value in timings_ms.items()},
    }
    if calibration is not None:
        response["calibration"] = calibration.to_json(width, height)
    return response


def _types_run(detections: Sequence[ModelDetections], options: InferenceOptions) -> list[str]:
    names = [d.damage_type for d in detections]
    return [t for t in dict.fromkeys(names) if options.types is None or t in options.types]


def _select(detections: Sequence[ModelDetections], options: InferenceOptions) -> list[_Kept]:
    kept = []
    for model_detections in detections:
        if options.types is not None and model_detections.damage_type not in options.types:
            continue
        kept += _grouped(_model_kept(model_detections, options), model_detections, options)
    kept.sort(key=lambda item: -item.score)  # stable: ties keep model order
    if options.max_instances is not None:
        kept = kept[: options.max_instances]
    return kept


def _grouped(items: list[_Kept], model_detections: ModelDetections, options: InferenceOptions) -> list[_Kept]:
    """Detections of one model grouped into damages (rule 3); the best-scored member names the group."""
    settings = model_detections.grouping
    mode = options.merge or settings.mode
    if mode == "none" or len(items) < 2:
        return items
    items = sorted(items, key=lambda item: -item.score)
    pieces = [Piece(item.crop, item.top, item.left, item.area_px,
                    is_stroke_name(item.damage_type, item.class_name)) for item in items]
    groups: list[tuple[list[int], Piece]] = []
    for class_name in dict.fromkeys(item.class_name for item in items):  # classes of one model never merge either
        members = [i for i, item in enumerate(items) if item.class_name == class_name]
        groups += [([members[k] for k in group], union) for group, union in
                   grouped_pieces([pieces[i] for i in members], dataclasses.replace(settings, mode=mode))]
    merged = []
    for members, union in groups:
        best = items[members[0]]
        if len(members) == 1 and union is pieces[members[0]]:
            best.stroke = union.measured_stroke
            merged.append(best)
            continue
        boxes = np.array([items[m].box for m in members])
        box = np.r_[boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)]
        # A detection split into blobs (grouping rule 3) lends each damage only part of its box.
        box = np.r_[np.maximum(box[:2], (union.top, union.left)), np.minimum(box[2:], (union.bottom, union.right))]
        merged.append(_Kept(best.damage_type, best.class_name, best.score, box, union.crop, union.top, union.left,
                            union.area_px, sum(items[m].parts for m in members), union.measured_stroke))
    return merged


def _model_kept(model_detections: ModelDetections, options: InferenceOptions) -> list[_Kept]:
    kept = []
    scores = model_detections.scores
    wanted = np.flatnonzero(scores >= options.min_score) if options.min_score is not None else \
        np.arange(len(scores))
    masks = model_detections.masks
    if len(wanted) < masks.shape[2]:  # (the predictor has applied min_score already: no copy of the stack there)
        masks = masks[:, :, wanted]
    crops = tight_crops(masks, model_detections.boxes[wanted])
    for i, cropped in zip(wanted, crops, strict=True):
        score = scores[i]
        if cropped is None:
            logger.debug("dropping a %s detection (score %.3f) with an empty mask",
                         model_detections.damage_type, score)
            continue
        class_id = int(model_detections.class_ids[i])
        names = model_detections.class_names
        class_name = names[class_id] if 0 <= class_id < len(names) else f"class_{class_id}"
        crop, top, left = cropped
        kept.append(_Kept(model_detections.damage_type, class_name, float(score), model_detections.boxes[i],
                          crop, top, left, int(np.count_nonzero(crop))))
    return kept


def _measurements(item: _Kept, calibration: AreaCalibration | None, image_size: tuple[int, int]
                  ) -> dict[str, Any]:
    """``oriented_box`` for every damage and ``stroke`` for scratches (rule 6)."""
    height, width = image_size
    box = item.stroke.box if item.stroke is not None and item.stroke.box is not None else \
        oriented_box(item.crop, (item.left, item.top))
    oriented: dict[str, Any] = {"center": [round(box.center_x, 3), round(box.center_y, 3)],
                                "length_px": round(box.length, 3), "width_px": round(box.width, 3),
                                "angle_deg": round(box.angle_deg, 3)}
    scale = calibration.unit_per_pixel(width, height) if calibration is not None else None
    if scale is not None:
        length, side = box_sides_in_units(box, scale)
        oriented["length"] = {"value": length, "unit": calibration.unit}
        oriented["width"] = {"value": side, "unit": calibration.unit}
    result: dict[str, Any] = {"oriented_box": oriented}
    if is_stroke_name(item.damage_type, item.class_name):
        from car_damage.answer.measure import stroke

        measured = item.stroke or stroke(item.crop, (item.left, item.top), box)
        entry: dict[str, Any] = {"length_px": round(measured.length_px, 3), "width_px": round(measured.width_px, 3)}
        if scale is not None:
            length = stroke_length_in_units(measured, scale)
            area = calibration.area(item.area_px, width, height)
            entry["length"] = {"value": length, "unit": calibration.unit}
            entry["width"] = {"value": area / length if length > 0 else 0.0, "unit": calibration.unit}
        result["stroke"] = entry
    return result


def _totals(kept: Sequence[_Kept], types_run: Sequence[str], image_size: tuple[int, int],
            calibration: AreaCalibration | None) -> dict[str, Any]:
    height, width = image_size
    pixels = height * width
    # Unions are drawn on the window that holds their damages (grouping's union_crop), not on the whole image.
    pieces = [Piece(item.crop, item.top, item.left, item.area_px) for item in kept]
    counts = dict.fromkeys(types_run, 0)
    for item in kept:
        counts[item.damage_type] += 1

    def summary(members: list[Piece]) -> dict[str, Any]:
        area_px = int(np.count_nonzero(union_crop(members)[0])) if members else 0
        entry: dict[str, Any] = {"area_px": area_px, "area_fraction": area_px / pixels}
        if calibration is not None:
            entry["area"] = _area(calibration, area_px, width, height)
        return entry

    totals = summary(pieces)
    totals["by_type"] = {t: {"count": counts[t], **summary([p for p, item in zip(pieces, kept, strict=True)
                                                             if item.damage_type == t])} for t in counts}
    return totals


def _area(calibration: AreaCalibration, area_px: int, width: int, height: int) -> dict[str, Any]:
    return {"value": calibration.area(area_px, width, height), "unit": calibration.area_unit}


# -------------------------------------------------------------------------------------------- schema
@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema  # the serve extra; only needed to validate

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def load_schema() -> dict[str, Any]:
    """The response JSON schema (draft 2020-12)."""
    return json.loads(SCHEMA_PATH.read_text())


def validate_response(response: Mapping[str, Any]) -> None:
    """Raise InvalidResponse unless ``response`` matches the schema and is internally consistent."""
    errors = sorted(_validator().iter_errors(response), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "<root>"
        raise InvalidResponse(f"response does not match {SCHEMA_PATH.name} at {where}: {first.message}")
    damages = response["damages"]
    if response["damage_count"] != len(damages):
        raise InvalidResponse(f"damage_count {response['damage_count']} != {len(damages)} damages")
    if [d["id"] for d in damages] != list(range(len(damages))):
        raise InvalidResponse("damage ids must be 0, 1, 2, ... in order")
    scores = [d["score"] for d in damages]
    if scores != sorted(scores, reverse=True):
        raise InvalidResponse("damages must be sorted by score, highest first")
    width, height = response["image"]["width"], response["image"]["height"]
    for damage in damages:
        box = damage["bbox"]
        if box["x"] + box["width"] > width or box["y"] + box["height"] > height:
            raise InvalidResponse(f"damage {damage['id']} bbox {box} leaves the {width}x{height} image")
    totals = response["totals"]
    if sum(entry["count"] for entry in totals["by_type"].values()) != len(damages):
        raise InvalidResponse("totals.by_type counts do not add up to damage_count")
    largest = max((d["area_px"] for d in damages), default=0)
    if not largest <= totals["area_px"] <= sum(d["area_px"] for d in damages):
        raise InvalidResponse(f"totals.area_px {totals['area_px']} is not a union of the damage areas")
    calibrated = "calibration" in response
    if any(("area" in d) != calibrated for d in damages) or ("area" in totals) != calibrated:
        raise InvalidResponse("calibrated 'area' fields must be present exactly when 'calibration' is")
    for damage in damages:
        sized = [damage["oriented_box"]] + ([damage["stroke"]] if "stroke" in damage else [])
        if any(("length" in entry) != calibrated or ("width" in entry) != calibrated for entry in sized):
            raise InvalidResponse(f"damage {damage['id']}: calibrated lengths must be present exactly when "
                                  f"'calibration' is")
