"""Domain configuration: the old system's Mask R-CNN settings and a builder for config overrides.

Every Config value still lives in ``mrcnn.config.Config``; this module only names the car-damage defaults
(the old system: ResNet-101, 1 image per GPU, min confidence 0.9) and builds configs from plain overrides,
which is how the CLI, the model sidecar and the service all create their configs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mrcnn.config import Config

#: Attributes that are numpy arrays in matterport's Config (JSON stores them as lists).
_ARRAY_ATTRIBUTES = ("MEAN_PIXEL", "RPN_BBOX_STD_DEV", "BBOX_STD_DEV")


class DamageConfig(Config):
    """The old system's training/inference settings for one damage type (background + classes)."""

    NAME = "damage"
    IMAGES_PER_GPU = 1
    NUM_CLASSES = 1 + 1
    STEPS_PER_EPOCH = 100
    DETECTION_MIN_CONFIDENCE = 0.9


def make_config(base: type[Config] = DamageConfig, **overrides: Any) -> Config:
    """Return an instance of a subclass of ``base`` with ``overrides`` as class attributes.

    Keys are Config attribute names (``NUM_CLASSES``, ``BACKBONE``, ...). Unknown keys raise ValueError so a
    typo in a sidecar or a hyperparameter never passes silently.
    """
    attributes: dict[str, Any] = {}
    for key, value in overrides.items():
        if not hasattr(base, key):
            raise ValueError(f"unknown Mask R-CNN config attribute {key!r}")
        if key in _ARRAY_ATTRIBUTES:
            value = np.asarray(value, dtype=np.float64)
        elif callable(value) and not isinstance(value, type):
            # A plain function stored on a class would become a bound method (BACKBONE, COMPUTE_BACKBONE_SHAPE).
            value = staticmethod(value)
        attributes[key] = value
    subclass = type(f"{base.__name__}Custom", (base,), attributes)
    return subclass()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def jsonable_overrides(config: Config) -> dict[str, Any]:
    """The config values that differ from DamageConfig, as JSON types (what a sidecar stores)."""
    values = {}
    for key, value in config.to_dict().items():
        if key in ("BATCH_SIZE", "IMAGE_SHAPE", "IMAGE_META_SIZE"):
            continue  # derived in Config.__init__
        value = _jsonable(value)
        if value != _jsonable(getattr(DamageConfig, key, None)):
            values[key] = value
    return values
