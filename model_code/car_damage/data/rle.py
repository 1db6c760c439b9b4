"""COCO run-length encoding of binary masks: the one codec that annotation files, evaluation and the service use.

The compressed form is COCO's (``{"size": [H, W], "counts": str}``, column-major runs starting with background),
so masks written here are readable by ``pycocotools.mask.decode`` and COCO files' RLE segmentations read back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from car_damage.data.annotations import AnnotationFormatError


def mask_to_rle(mask: np.ndarray) -> dict[str, object]:
    """COCO compressed RLE of a boolean mask: ``{"size": [H, W], "counts": str}`` (column-major runs).

    Readable by ``pycocotools.mask.decode``. Runs alternate 0s and 1s starting with 0s; each count (minus
    the count two places back, from the fourth on) is written as 5-bit groups, low first, offset by 48
    with a continuation bit, as in the COCO API.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    flat = mask.astype(bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts.insert(0, 0)  # runs start with background
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": _encode_counts(counts)}


def rle_to_mask(rle: dict[str, object]) -> np.ndarray:
    """Inverse of ``mask_to_rle`` (also accepts uncompressed ``counts`` lists)."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = _decode_counts(counts)
    counts = [int(c) for c in counts]
    if sum(counts) != height * width or any(c < 0 for c in counts):
        raise ValueError(f"RLE counts sum to {sum(counts)}, expected {height * width} for {height}x{width}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((width, height)).T.copy()


def _encode_counts(counts: list[int]) -> str:
    """COCO's string form of run counts, vectorised over counts (one pass per 5-bit group)."""
    values = np.asarray(counts, dtype=np.int64)
    if values.size == 0:
        return ""
    deltas = values.copy()
    deltas[3:] -= values[1:-2]  # from the fourth count on, store the difference to the count two back
    groups = np.zeros((values.size, 13), dtype=np.uint8)  # 13 x 5 bits cover any int64
    used = np.zeros_like(groups, dtype=bool)
    active = np.ones(values.size, dtype=bool)
    for position in range(groups.shape[1]):
        chunk = deltas & 0x1F
        deltas >>= 5  # arithmetic shift: negative deltas terminate at -1
        more = np.where(chunk & 0x10, deltas != -1, deltas != 0)
        groups[:, position] = (chunk | np.where(more, 0x20, 0)) + 48
        used[:, position] = active
        active &= more
        if not active.any():
            break
    return groups[used].tobytes().decode("ascii")


def _decode_counts(text: str) -> list[int]:
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise ValueError("RLE string ends inside a count")
            chunk = ord(text[position]) - 48
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift  # sign-extend
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def decode_rle(rle: Mapping[str, Any], height: int, width: int) -> np.ndarray:
    """Boolean [height, width] mask from a COCO RLE (compressed string or uncompressed count list)."""
    rle_height, rle_width = (int(v) for v in rle["size"])
    if (rle_height, rle_width) != (height, width):
        raise AnnotationFormatError(
            f"RLE size {rle_height}x{rle_width} does not match the image size {height}x{width}"
        )
    try:
        return rle_to_mask(dict(rle))
    except ValueError as exc:
        raise AnnotationFormatError(f"bad RLE segmentation: {exc}") from exc
