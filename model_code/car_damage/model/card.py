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
#: mask_cnn_<type>.h5 (the old system's name) or mask_rcnn_<type>.h5 (matterport's).
WEIGHTS_NAME_PATTERN = re.compile(r"^mask_r?cnn_(?P<type>[A-Za-z0-9][\w-]*)\.h5$")


@dataclass
class ModelCard:
    """Everything needed to rebuild an inference model for one weights file."""

    damage_type: str
    class_names: list[str]
    config_overrides: dict[str, Any] = field(default_factory=dict)
    version: str = "unversioned"
    metrics: dict[str, Any] = field(default_factory=dict)
    format: str = CARD_FORMAT

    def __post_init__(self) -> None:
        if not self.class_names or self.class_names[0] != "BG":
            raise ValueError(f"class_names must start with 'BG', got {self.class_names!r}")
        expected = self.config_overrides.get("NUM_CLASSES", len(self.class_names))
        if expected != len(self.class_names):
            raise ValueError(
                f"NUM_CLASSES={expected} contradicts {len(self.class_names)} class names {self.class_names}"
            )

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
            )
        except KeyError as exc:
            raise ValueError(f"{path}: model card lacks {exc.args[0]!r}") from exc


def card_path_for(weights_path: str | Path) -> Path:
    """``mask_cnn_scratch.h5`` -> ``mask_cnn_scratch.json`` (same folder)."""
    return Path(weights_path).with_suffix(".json")


def damage_type_from_filename(weights_path: str | Path) -> str | None:
    """``mask_cnn_dent.h5`` -> ``"dent"``; None when the name does not follow the convention."""
    match = WEIGHTS_NAME_PATTERN.match(Path(weights_path).name)
    return match.group("type").lower() if match else None
