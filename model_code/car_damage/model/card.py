"""The JSON sidecar that travels with a weights file: ``mask_cnn_<type>.h5`` + ``mask_cnn_<type>.json``.

It holds what the service needs to rebuild the exact model: class names, damage type and the Config
overrides (backbone, image size, thresholds, anchors...). Training writes it; the service reads it; when it
is missing the service infers backbone and NUM_CLASSES from the weights file instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from car_damage.model.config import jsonable_overrides, make_config
from mrcnn.config import Config

CARD_FORMAT = "car-damage-model/1"
#: ``merge`` option values: ``overlap`` joins detections of one damage (answer/grouping.py), ``none`` does not.
MERGE_MODES = ("none", "overlap")
#: mask_cnn_<type>.h5 (the old system's name) or mask_rcnn_<type>.h5 (matterport's).
WEIGHTS_NAME_PATTERN = re.compile(r"^mask_r?cnn_(?P<type>[A-Za-z0-9][\w-]*)\.h5$")


@dataclass
class OperatingPoint:
    """How the service turns this model's detections into damages by default: the score threshold and the
    grouping thresholds (``car_damage.answer.grouping``). ``min_score`` None means DETECTION_MIN_CONFIDENCE.
    Calibration (``car_damage evaluate --calibrate``, and training) chooses them on validation data and records
    what they optimise (``chosen_by``) and the validation figures at that point (``validation``)."""

    min_score: float | None = None
    merge: str = "overlap"
    #: Intersection over the smaller mask above which two detections of one type are one damage.
    merge_containment: float = 0.3
    #: Largest gap (px) bridged between two pieces of one stroke running in the same direction.
    merge_gap_px: float = 12.0
    #: Largest angle (degrees) between the directions of two pieces of one stroke.
    merge_angle_deg: float = 15.0
    #: Longest side branch (in stroke widths) a group of stroke pieces may have: more is two scratches meeting.
    merge_branch_widths: float = 2.0
    #: A stroke group with this fraction of its pixels inside other groups spans them: it is dropped.
    merge_spanning_cover: float = 0.8
    chosen_by: str = "defaults"
    validation: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.min_score is not None and not 0.0 <= float(self.min_score) <= 1.0:
            raise ValueError(f"operating_point.min_score must be in [0, 1], got {self.min_score}")
        if self.merge not in MERGE_MODES:
            raise ValueError(f"operating_point.merge must be one of {MERGE_MODES}, got {self.merge!r}")
        if not 0.0 < float(self.merge_containment) <= 1.0:
            raise ValueError(f"operating_point.merge_containment must be in (0, 1], got {self.merge_containment}")
        if float(self.merge_gap_px) < 0 or not 0.0 <= float(self.merge_angle_deg) <= 90.0:
            raise ValueError("operating_point.merge_gap_px must be >= 0 and merge_angle_deg in [0, 90]")
        if float(self.merge_branch_widths) < 0 or not 0.0 < float(self.merge_spanning_cover) <= 1.0:
            raise ValueError("operating_point.merge_branch_widths must be >= 0 and merge_spanning_cover in (0, 1]")

    def to_json(self) -> dict[str, Any]:
        return {"min_score": self.min_score, "merge": self.merge, "merge_containment": self.merge_containment,
                "merge_gap_px": self.merge_gap_px, "merge_angle_deg": self.merge_angle_deg,
                "merge_branch_widths": self.merge_branch_widths, "merge_spanning_cover": self.merge_spanning_cover,
                "chosen_by": self.chosen_by, "validation": self.validation}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OperatingPoint:
        known = {"min_score", "merge", "merge_containment", "merge_gap_px", "merge_angle_deg",
                 "merge_branch_widths", "merge_spanning_cover", "chosen_by", "validation"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"operating_point: unknown key {unknown[0]!r}")
        return cls(**data)


@dataclass
class ModelCard:
    """Everything needed to rebuild an inference model for one weights file."""

    damage_type: str
    class_names: list[str]
    config_overrides: dict[str, Any] = field(default_factory=dict)
    version: str = "unversioned"
    metrics: dict[str, Any] = field(default_factory=dict)
    operating_point: OperatingPoint = field(default_factory=OperatingPoint)
    format: str = CARD_FORMAT

    def __post_init__(self) -> None:
        if not self.class_names or self.class_names[0] != "BG":
            raise ValueError(f"class_names must start with 'BG', got {self.class_names!r}")
        expected = self.config_overrides.get("NUM_CLASSES", len(self.class_names))
        if expected != len(self.class_names):
            raise ValueError(
                f"NUM_CLASSES={expected} contradicts {len(self.class_names)} class names {self.class_names}"
            )

    @property
    def default_min_score(self) -> float:
        """The service's default score threshold: the operating point's, else DETECTION_MIN_CONFIDENCE."""
        if self.operating_point.min_score is not None:
            return float(self.operating_point.min_score)
        return float(self.to_config().DETECTION_MIN_CONFIDENCE)

    def to_config(self, **extra: Any) -> Config:
        """An inference-ready config (1 image per batch) with this card's overrides and ``extra`` on top."""
        overrides = dict(self.config_overrides)
        overrides.update(NUM_CLASSES=len(self.class_names), NAME=self.damage_type)
        overrides.setdefault("IMAGES_PER_GPU", 1)
        overrides.setdefault("GPU_COUNT", 1)
        overrides.update(extra)
        return make_config(**overrides)

    @classmethod
    def from_config(cls, config: Config, class_names: list[str], damage_type: str, **kwargs: Any) -> ModelCard:
        overrides = jsonable_overrides(config)
        for key in ("IMAGES_PER_GPU", "GPU_COUNT", "NAME", "STEPS_PER_EPOCH", "VALIDATION_STEPS"):
            overrides.pop(key, None)  # training-time settings, not part of the model
        return cls(damage_type=damage_type, class_names=list(class_names), config_overrides=overrides, **kwargs)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "damage_type": self.damage_type,
            "class_names": self.class_names,
            "version": self.version,
            "config_overrides": self.config_overrides,
            "metrics": self.metrics,
            "operating_point": self.operating_point.to_json(),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
            raise ValueError(f"{path}: not a model card (expected format {CARD_FORMAT!r})")
        try:
            return cls(
                damage_type=str(data["damage_type"]),
                class_names=list(data["class_names"]),
                config_overrides=dict(data.get("config_overrides", {})),
                version=str(data.get("version", "unversioned")),
                metrics=dict(data.get("metrics", {})),
                operating_point=OperatingPoint.from_json(dict(data.get("operating_point") or {})),
            )
        except KeyError as exc:
            raise ValueError(f"{path}: model card lacks {exc.args[0]!r}") from exc
        except TypeError as exc:
            raise ValueError(f"{path}: invalid operating_point ({exc})") from exc


def card_path_for(weights_path: str | Path) -> Path:
    """``mask_cnn_scratch.h5`` -> ``mask_cnn_scratch.json`` (same folder)."""
    return Path(weights_path).with_suffix(".json")


def damage_type_from_filename(weights_path: str | Path) -> str | None:
    """``mask_cnn_dent.h5`` -> ``"dent"``; None when the name does not follow the convention."""
    match = WEIGHTS_NAME_PATTERN.match(Path(weights_path).name)
    return match.group("type").lower() if match else None
