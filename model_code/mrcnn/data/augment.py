"""Augmentation of an image and its instance masks together (our own small NumPy/skimage code).

Any callable ``augmentation(image, masks) -> (image, masks)`` can be given to training; ``Augmenter`` is the
built-in one: horizontal flip, a small affine warp (rotation, scale, translation about the image centre) and a
brightness change. Geometry is applied identically to image and masks (bilinear for the image, nearest for the
masks, zeros outside), so instances stay aligned; brightness touches the image only.

Shapes: image [H, W, C] (uint8 or float), masks [H, W, N] bool. Outputs keep the input shapes and dtypes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from skimage import transform

#: The signature training accepts for user augmentation.
AugmentFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _check_pair(image: np.ndarray, masks: np.ndarray) -> None:
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W, C], got shape {image.shape}")
    if masks.ndim != 3 or masks.shape[:2] != image.shape[:2]:
        raise ValueError(f"masks must be [H, W, N] matching image {image.shape[:2]}, got shape {masks.shape}")


def hflip(image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image and masks left-right."""
    _check_pair(image, masks)
    return image[:, ::-1].copy(), masks[:, ::-1].copy()


def affine(
    image: np.ndarray,
    masks: np.ndarray,
    rotation_deg: float = 0.0,
    scale: float = 1.0,
    translate_yx: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate (counter-clockwise, degrees) and scale about the image centre, then shift by translate_yx pixels."""
    _check_pair(image, masks)
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    height, width = image.shape[:2]
    centre_xy = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    # skimage transforms are in (x, y); compose: move centre to origin, rotate+scale, move back, translate.
    to_origin = transform.AffineTransform(translation=-centre_xy)
    rotate_scale = transform.AffineTransform(scale=(scale, scale), rotation=np.deg2rad(-rotation_deg))
    back = transform.AffineTransform(translation=centre_xy + np.array([translate_yx[1], translate_yx[0]]))
    forward = to_origin + rotate_scale + back
    # warp() wants the map from output to input coordinates.
    warped_image = transform.warp(
        image, forward.inverse, order=1, mode="constant", cval=0, preserve_range=True
    ).astype(image.dtype)
    if masks.shape[2]:
        warped_masks = transform.warp(
            masks.astype(np.uint8), forward.inverse, order=0, mode="constant", cval=0, preserve_range=True
        ).astype(bool)
    else:
        warped_masks = masks.copy()
    return warped_image, warped_masks


def brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """Multiply intensities by factor, clipped to the dtype's range (0..255 for uint8)."""
    if factor < 0:
        raise ValueError(f"brightness factor must be >= 0, got {factor}")
    scaled = image.astype(np.float32) * factor
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        scaled = np.clip(np.rint(scaled), info.min, info.max)
    return scaled.astype(image.dtype)


@dataclass
class Augmenter:
    """Random flip / affine / brightness, each applied with its own probability.

    ``seed`` makes the sequence reproducible. Defaults are deliberately mild (car-damage photos are upright).
    """

    flip_prob: float = 0.5
    affine_prob: float = 0.5
    max_rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_translate_frac: float = 0.05
    brightness_prob: float = 0.5
    brightness_range: tuple[float, float] = (0.8, 1.2)
    seed: int | None = None
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("flip_prob", "affine_prob", "brightness_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, got {self.scale_range}")
        if not 0 <= self.brightness_range[0] <= self.brightness_range[1]:
            raise ValueError(f"brightness_range must be 0 <= low <= high, got {self.brightness_range}")
        if self.max_rotation_deg < 0 or not 0 <= self.max_translate_frac < 1:
            raise ValueError("max_rotation_deg must be >= 0 and max_translate_frac in [0, 1)")
        self._rng = np.random.default_rng(self.seed)

    def __call__(self, image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _check_pair(image, masks)
        rng = self._rng
        if rng.random() < self.flip_prob:
            image, masks = hflip(image, masks)
        if rng.random() < self.affine_prob:
            height, width = image.shape[:2]
            image, masks = affine(
                image,
                masks,
                rotation_deg=rng.uniform(-self.max_rotation_deg, self.max_rotation_deg),
                scale=rng.uniform(*self.scale_range),
                translate_yx=(
                    rng.uniform(-1, 1) * self.max_translate_frac * height,
                    rng.uniform(-1, 1) * self.max_translate_frac * width,
                ),
            )
        if rng.random() < self.brightness_prob:
            image = brightness(image, rng.uniform(*self.brightness_range))
        return image, masks
