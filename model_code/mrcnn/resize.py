"""Image and mask resizing with matterport's semantics, plus a fast NumPy mask-to-box paste for unmolding.

Shape shorthand:
    H, W, C   image height, width, channels
    N         instances (masks on the last axis, matterport's [H, W, N] layout, unless stated)
    h, w      small mask size (e.g. 28x28 head output or 56x56 mini-mask)

Resizing follows skimage.transform.resize(order=1, mode="constant", cval=0, clip=True, preserve_range=True,
anti_aliasing=False): output pixel i samples input coordinate (i + 0.5) * (n_in / n_out) - 0.5 with linear
weights, and samples between the border pixel and the outside blend with 0. ``paste_masks`` re-implements that
rule with vectorised gathers (one pass per instance, no skimage call) and is checked against skimage in the tests.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import scipy.ndimage
import skimage.transform

from mrcnn.bilinear import resize_bilinear, resize_threshold_into, skimage_float_dtype

logger = logging.getLogger(__name__)

RESIZE_MODES = ("none", "square", "pad64", "crop")
#: Mask probabilities at or above this become foreground when unmolding (matterport's unmold_mask).
MASK_THRESHOLD = 0.5


def resize(
    image: np.ndarray,
    output_shape: Sequence[int],
    order: int = 1,
    mode: str = "constant",
    cval: float = 0,
    clip: bool = True,
    preserve_range: bool = False,
    anti_aliasing: bool = False,
    anti_aliasing_sigma: Any = None,
) -> np.ndarray:
    """skimage.transform.resize with matterport's defaults (no anti-aliasing, constant border)."""
    return skimage.transform.resize(
        image, output_shape, order=order, mode=mode, cval=cval, clip=clip, preserve_range=preserve_range,
        anti_aliasing=anti_aliasing, anti_aliasing_sigma=anti_aliasing_sigma,
    )


def resize_image(
    image: np.ndarray,
    min_dim: int | None = None,
    max_dim: int | None = None,
    min_scale: float | None = None,
    mode: str = "square",
) -> tuple[np.ndarray, tuple[int, int, int, int], float, list[tuple[int, int]], tuple[int, int, int, int] | None]:
    """Resize (and pad or crop) an image as matterport does -> (image, window, scale, padding, crop).

    window is (y1, x1, y2, x2) of the image inside the output, in pixels (y2/x2 exclusive). The result has the
    input's dtype (a float result cast back to uint8 truncates, as matterport's astype does).
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must be [H, W] or [H, W, C] with H, W >= 1, got shape {image.shape}")
    image_dtype = image.dtype
    h, w = image.shape[:2]
    window = (0, 0, h, w)
    scale = 1
    padding = [(0, 0), (0, 0), (0, 0)]
    crop = None
    if mode == "none":
        return image, window, scale, padding, crop

    if min_dim:
        scale = max(1, min_dim / min(h, w))  # never scales down here
    if min_scale and scale < min_scale:
        scale = min_scale
    if mode == "square" and max_dim:
        image_max = max(h, w)
        if round(image_max * scale) > max_dim:
            scale = max_dim / image_max

    if scale != 1:
        # Same values as matterport's resize(image, ..., preserve_range=True) (tested bit for bit), faster.
        image = resize_bilinear(image, (round(h * scale), round(w * scale)))

    if mode == "square":
        if not max_dim:
            raise ValueError("square mode needs max_dim")
        h, w = image.shape[:2]
        top = (max_dim - h) // 2
        left = (max_dim - w) // 2
        padding = [(top, max_dim - h - top), (left, max_dim - w - left), (0, 0)]
        image = np.pad(image, padding[: image.ndim], mode="constant", constant_values=0)
        window = (top, left, h + top, w + left)
    elif mode == "pad64":
        if not min_dim or min_dim % 64 != 0:
            raise ValueError(f"pad64 mode needs min_dim to be a multiple of 64, got {min_dim}")
        h, w = image.shape[:2]
        top, bottom = _pad_to_multiple(h, 64)
        left, right = _pad_to_multiple(w, 64)
        padding = [(top, bottom), (left, right), (0, 0)]
        image = np.pad(image, padding[: image.ndim], mode="constant", constant_values=0)
        window = (top, left, h + top, w + left)
    elif mode == "crop":
        if not min_dim:
            raise ValueError("crop mode needs min_dim")
        h, w = image.shape[:2]
        y = random.randint(0, h - min_dim)  # matterport uses the `random` module: random.seed() controls it
        x = random.randint(0, w - min_dim)
        crop = (y, x, min_dim, min_dim)
        image = image[y:y + min_dim, x:x + min_dim]
        window = (0, 0, min_dim, min_dim)
    return image.astype(image_dtype), window, scale, padding, crop


def _pad_to_multiple(size: int, multiple: int) -> tuple[int, int]:
    if size % multiple == 0:
        return 0, 0
    total = multiple - size % multiple
    return total // 2, total - total // 2


def resize_mask(
    mask: np.ndarray,
    scale: float,
    padding: Sequence[tuple[int, int]],
    crop: Sequence[int] | None = None,
) -> np.ndarray:
    """Resize masks [H, W, N] with the scale/padding/crop that resize_image returned (nearest neighbour)."""
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be [H, W, N], got shape {mask.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about output-shape rounding; matterport silences it too
        mask = scipy.ndimage.zoom(mask, zoom=[scale, scale, 1], order=0)
    if crop is not None:
        y, x, h, w = crop
        return mask[y:y + h, x:x + w]
    return np.pad(mask, padding, mode="constant", constant_values=0)


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional at run time: without it pasting is only slower on a busy CPU
        logger.debug("threadpoolctl not installed; BLAS keeps its thread count while pasting masks")
        return None
    return ThreadpoolController()


_blas_lock = threading.Lock()
_blas_state: dict[str, Any] = {"users": 0, "limiter": None}


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Run the per-instance matmuls on one BLAS thread.

    They are small; OpenBLAS's thread hand-off costs more than it saves, and on a busy CPU made pasting 10-25x
    slower (measured). Reference-counted so that concurrent callers restore the original limit only once.
    """
    controller = _blas_controller()
    if controller is None:
        yield
        return
    with _blas_lock:
        if _blas_state["users"] == 0:
            _blas_state["limiter"] = controller.limit(limits=1, user_api="blas")
        _blas_state["users"] += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_state["users"] -= 1
            if _blas_state["users"] == 0:
                _blas_state["limiter"].restore_original_limits()
                _blas_state["limiter"] = None


def paste_masks(
    masks: np.ndarray,
    boxes: np.ndarray,
    image_shape: Sequence[int],
    threshold: float = MASK_THRESHOLD,
) -> np.ndarray:
    """Resize each small mask [N, h, w] to its pixel box [N, (y1, x1, y2, x2)] and paste -> bool [N, H, W].

    Pixel-identical to matterport's unmold_mask per instance (skimage bilinear, clip, >= threshold); parts of a
    box outside the image are cut off. Boxes must have positive height and width.
    """
    masks = np.asarray(masks)
    boxes = np.asarray(boxes).astype(np.int64).reshape(-1, 4)
    if masks.ndim != 3 or masks.shape[0] != boxes.shape[0]:
        raise ValueError(f"masks [N, h, w] and boxes [N, 4] must agree, got {masks.shape} and {boxes.shape}")
    height, width = int(image_shape[0]), int(image_shape[1])
    count = boxes.shape[0]
    canvas = np.zeros((count, height, width), dtype=bool)
    if count == 0:
        return canvas
    sizes = boxes[:, 2:] - boxes[:, :2]
    if np.any(sizes <= 0):
        raise ValueError(f"boxes must have positive height and width, got {boxes[np.any(sizes <= 0, axis=1)]}")
    out_type = skimage_float_dtype(masks.dtype)
    # With clip=True the resized values stay within [min, max] of the input, so a mask whose minimum is at or
    # above the threshold fills its whole box and one whose maximum is below it stays empty; in between, clipping
    # cannot move a value across the threshold, so it is skipped.
    lows = masks.min(axis=(1, 2)).astype(out_type)
    highs = masks.max(axis=(1, 2)).astype(out_type)
    padded = np.pad(masks.astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    padded32 = padded.astype(np.float32)
    with _single_threaded_blas():
        for i in range(count):
            y1, x1, y2, x2 = (int(v) for v in boxes[i])
            # Visible part of the box (boxes from the model lie inside the image; user boxes may not).
            vy1, vx1, vy2, vx2 = max(y1, 0), max(x1, 0), min(y2, height), min(x2, width)
            if vy1 >= vy2 or vx1 >= vx2 or highs[i] < threshold:
                continue
            if lows[i] >= threshold:
                canvas[i, vy1:vy2, vx1:vx2] = True
                continue
            resize_threshold_into(
                canvas[i, vy1:vy2, vx1:vx2], padded[i], padded32[i], (y2 - y1, x2 - x1),
                (vy1 - y1, vx1 - x1, vy2 - y1, vx2 - x1), threshold, out_type,
            )
    return canvas


def unmold_mask(mask: np.ndarray, bbox: Sequence[int], image_shape: Sequence[int]) -> np.ndarray:
    """One mask [h, w] of probabilities -> bool [H, W] full-image mask inside ``bbox`` (matterport's signature)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [h, w], got shape {mask.shape}")
    return paste_masks(mask[None], np.asarray(bbox).reshape(1, 4), image_shape)[0]


def minimize_mask(bbox: np.ndarray, mask: np.ndarray, mini_shape: Sequence[int]) -> np.ndarray:
    """Crop each mask [H, W, N] to its box [N, 4] and resize to mini_shape -> bool [h, w, N] (rounded at 0.5)."""
    mask = np.asarray(mask)
    mini_mask = np.zeros(tuple(mini_shape) + (mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = (int(v) for v in bbox[i][:4])
        cropped = mask[y1:y2, x1:x2, i].astype(np.float64)  # skimage refuses to interpolate bool arrays
        if cropped.size == 0:
            raise ValueError(f"invalid bounding box with area of zero: {(y1, x1, y2, x2)} for instance {i}")
        mini_mask[:, :, i] = np.around(resize_bilinear(cropped, mini_shape)).astype(bool)
    return mini_mask


def expand_mask(bbox: np.ndarray, mini_mask: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """Inverse of minimize_mask: mini masks [h, w, N] resized into their boxes -> bool [H, W, N]."""
    mini_mask = np.asarray(mini_mask)
    mask = np.zeros(tuple(image_shape[:2]) + (mini_mask.shape[-1],), dtype=bool)
    for i in range(mini_mask.shape[-1]):
        y1, x1, y2, x2 = (int(v) for v in bbox[i][:4])
        if y2 <= y1 or x2 <= x1:
            raise ValueError(f"invalid bounding box with area of zero: {(y1, x1, y2, x2)} for instance {i}")
        resized = resize_bilinear(mini_mask[:, :, i].astype(np.float64), (y2 - y1, x2 - x1))
        mask[y1:y2, x1:x2, i] = np.around(resized).astype(bool)
    return mask
