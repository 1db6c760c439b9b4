"""The image_meta vector fed to the graph next to each molded image (matterport's layout).

Shape shorthand:
    META = 12 + NUM_CLASSES
    vector layout: [image_id | original H, W, C | molded H, W, C | window y1, x1, y2, x2 (pixels) | scale |
                    active_class_ids x NUM_CLASSES]
    slices:          0         1:4                 4:7               7:11                             11
                     12:
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

#: Number of fixed entries before active_class_ids.
META_FIXED_SIZE = 12
_ORIGINAL_SHAPE = slice(1, 4)
_IMAGE_SHAPE = slice(4, 7)
_WINDOW = slice(7, 11)
_SCALE = slice(11, 12)
_ACTIVE = slice(12, None)


def meta_size(num_classes: int) -> int:
    """Length of an image_meta vector for ``num_classes`` (background included)."""
    return META_FIXED_SIZE + int(num_classes)


@dataclass
class ImageMeta:
    """One image's meta data; ``to_vector``/``from_vector`` convert to and from the graph's float vector."""

    image_id: int
    original_image_shape: tuple[int, int, int]
    image_shape: tuple[int, int, int]
    window: tuple[int, int, int, int]
    scale: float
    active_class_ids: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int32))

    def to_vector(self) -> np.ndarray:
        return compose_image_meta(
            self.image_id, self.original_image_shape, self.image_shape, self.window, self.scale, self.active_class_ids
        )

    @classmethod
    def from_vector(cls, vector: np.ndarray) -> ImageMeta:
        vector = np.asarray(vector)
        if vector.ndim != 1 or vector.shape[0] < META_FIXED_SIZE + 1:
            raise ValueError(f"an image_meta vector is 1-D with at least {META_FIXED_SIZE + 1} entries, "
                             f"got shape {vector.shape}")
        parsed = parse_image_meta(vector[None, :])
        return cls(
            image_id=int(parsed["image_id"][0]),
            original_image_shape=tuple(int(v) for v in parsed["original_image_shape"][0]),
            image_shape=tuple(int(v) for v in parsed["image_shape"][0]),
            window=tuple(int(v) for v in parsed["window"][0]),
            scale=float(vector[_SCALE][0]),
            active_class_ids=parsed["active_class_ids"][0],
        )


def compose_image_meta(
    image_id: int,
    original_image_shape: Sequence[int],
    image_shape: Sequence[int],
    window: Sequence[float],
    scale: float,
    active_class_ids: Sequence[int] | np.ndarray,
) -> np.ndarray:
    """Build one image_meta vector (float64, as matterport's np.array of mixed numbers)."""
    if len(original_image_shape) != 3 or len(image_shape) != 3:
        raise ValueError(f"image shapes must be (H, W, C), got {tuple(original_image_shape)} and {tuple(image_shape)}")
    window = list(np.asarray(window).reshape(-1))
    if len(window) != 4:
        raise ValueError(f"window must be (y1, x1, y2, x2), got {window}")
    active = np.asarray(active_class_ids).reshape(-1)
    if active.size < 1:
        raise ValueError("active_class_ids needs one entry per class (NUM_CLASSES >= 1)")
    return np.array(
        [image_id] + list(original_image_shape) + list(image_shape) + window + [scale] + list(active),
        dtype=np.float64,
    )


def parse_image_meta(meta: np.ndarray) -> dict[str, np.ndarray]:
    """Split a batch of meta vectors [batch, META] into its fields (int32, scale float32), as matterport."""
    meta = np.asarray(meta)
    if meta.ndim != 2 or meta.shape[1] < META_FIXED_SIZE + 1:
        raise ValueError(f"image_meta must be [batch, {META_FIXED_SIZE} + NUM_CLASSES], got shape {meta.shape}")
    return {
        "image_id": meta[:, 0].astype(np.int32),
        "original_image_shape": meta[:, _ORIGINAL_SHAPE].astype(np.int32),
        "image_shape": meta[:, _IMAGE_SHAPE].astype(np.int32),
        "window": meta[:, _WINDOW].astype(np.int32),
        "scale": meta[:, 11].astype(np.float32),
        "active_class_ids": meta[:, _ACTIVE].astype(np.int32),
    }


def parse_image_meta_graph(meta: tf.Tensor) -> dict[str, tf.Tensor]:
    """TF version: meta [batch, META] -> dict of float tensors (image_id and scale are [batch])."""
    return {
        "image_id": meta[:, 0],
        "original_image_shape": meta[:, _ORIGINAL_SHAPE],
        "image_shape": meta[:, _IMAGE_SHAPE],
        "window": meta[:, _WINDOW],
        "scale": meta[:, 11],
        "active_class_ids": meta[:, _ACTIVE],
    }
