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


# ---------------------------------------------------------------------- bilinear resize as skimage does


Taps = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@functools.lru_cache(maxsize=4096)
def _axis_taps(n_in: int, n_out: int) -> Taps:
    """For resizing one axis n_in -> n_out: indices of the two input samples (into the axis padded with one zero
    on each side) and their linear weights, per output sample."""
    zoom = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * zoom - 0.5  # in [-0.5, n_in - 0.5)
    base = np.floor(src)
    frac = src - base
    first = base.astype(np.intp) + 1  # +1: index into the zero-padded axis
    taps = (first, first + 1, 1.0 - frac, frac)
    for array in taps:
        array.setflags(write=False)
    return taps


def _axis_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The same taps as a dense [n_out, n_in + 2] interpolation matrix (for a BLAS matmul)."""
    first, second, w_first, w_second = _axis_taps(n_in, n_out)
    matrix = np.zeros((n_out, n_in + 2))
    rows = np.arange(n_out)
    matrix[rows, first] = w_first
    matrix[rows, second] += w_second
    matrix.setflags(write=False)
    return matrix


#: Box sides whose matrices are kept. One matrix per distinct box side (boxes of every size on photos of every
#: size): 4096 of them grew a serving worker by hundreds of MB; building one again costs microseconds.
AXIS_MATRIX_CACHE_SIZE = 64


@functools.lru_cache(maxsize=AXIS_MATRIX_CACHE_SIZE)
def _axis_matrix32(n_in: int, n_out: int) -> np.ndarray:
    matrix = _axis_matrix(n_in, n_out).astype(np.float32)
    matrix.setflags(write=False)
    return matrix


def _interpolate_exact(padded: np.ndarray, ty: Taps, tx: Taps, rows=slice(None), cols=slice(None)) -> np.ndarray:
    """Bilinear values in float64, summed term by term in scipy.ndimage.zoom's order (so bit-identical to it).

    ``rows``/``cols`` pick output samples: slices for the full grid, or equal-length index arrays for points.
    """
    y0, y1, wy0, wy1 = (a[rows] for a in ty)
    x0, x1, wx0, wx1 = (a[cols] for a in tx)
    if isinstance(rows, slice):  # full grid: broadcast rows against columns
        y0, y1, wy0, wy1 = (a[:, None] for a in (y0, y1, wy0, wy1))
    values = (padded[y0, x0] * wy0) * wx0
    values += (padded[y0, x1] * wy0) * wx1
    values += (padded[y1, x0] * wy1) * wx0
    values += (padded[y1, x1] * wy1) * wx1
    return values


def _skimage_float_dtype(dtype: np.dtype) -> type:
    """The float type skimage's resize returns for an input dtype (float32/float16 -> float32, else float64)."""
    return np.float32 if dtype in (np.float32, np.float16) else np.float64


def _zero_padded_index(index: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into a zero-padded axis -> (clipped indices into the unpadded axis, mask of the padding ones)."""
    index = index - 1
    return np.clip(index, 0, size - 1), (index < 0) | (index >= size)


def _interpolate_grid_exact(image: np.ndarray, ty: Taps, tx: Taps) -> np.ndarray:
    """Full-grid version of _interpolate_exact for an unpadded [H, W] or [H, W, C] image (channels not resized);
    same products and summation order.

    Rows, then columns, are gathered in the input dtype and only the output-sized samples become float64, so a
    large photo is never converted whole.
    """
    height, width = image.shape[:2]
    y0, y1, wy0, wy1 = ty
    x0, x1, wx0, wx1 = tx
    trailing = (None,) * (image.ndim - 2)
    wy0, wy1 = (w[(slice(None), None) + trailing] for w in (wy0, wy1))
    wx0, wx1 = (w[(None, slice(None)) + trailing] for w in (wx0, wx1))
    cols0, outside_x0 = _zero_padded_index(x0, width)
    cols1, outside_x1 = _zero_padded_index(x1, width)
    values = None
    for row_index, wy in ((y0, wy0), (y1, wy1)):
        rows, outside_y = _zero_padded_index(row_index, height)
        row_block = image[rows]
        for cols, outside_x, wx in ((cols0, outside_x0, wx0), (cols1, outside_x1, wx1)):
            term = np.multiply(np.take(row_block, cols, axis=1), wy, dtype=np.float64)  # v * wy
            if outside_y.any():
                term[outside_y] = 0.0
            if outside_x.any():
                term[:, outside_x] = 0.0
            term *= wx
            if values is None:
                values = term
            else:
                values += term
    return values


def resize_bilinear(image: np.ndarray, output_shape: Sequence[int]) -> np.ndarray:
    """Bilinear resize of [H, W] or [H, W, C] to output_shape[:2], equal to matterport's
    ``resize(image, output_shape, preserve_range=True)`` bit for bit, without skimage (and several times faster).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"resize_bilinear takes [H, W] or [H, W, C], got shape {image.shape}")
    out_h, out_w = int(output_shape[0]), int(output_shape[1])
    if out_h < 1 or out_w < 1 or image.size == 0:
        raise ValueError(f"cannot resize an array of shape {image.shape} to {(out_h, out_w)}")
    if image.dtype == np.float16:
        image = image.astype(np.float32)  # as skimage does before interpolating
    values = _interpolate_grid_exact(image, _axis_taps(image.shape[0], out_h), _axis_taps(image.shape[1], out_w))
    out = values.astype(_skimage_float_dtype(image.dtype), copy=False)
    # clip=True: skimage keeps the output within the input's value range (over all channels).
    return np.clip(out, image.min(), image.max(), out=out)


def _resize_threshold_into(
    out: np.ndarray, padded: np.ndarray, padded32: np.ndarray, box_hw: tuple[int, int],
    visible: tuple[int, int, int, int], threshold: float, out_type: type,
) -> None:
    """Write (resized value >= threshold) into ``out`` for the visible part (r1, c1, r2, c2) of a box_hw box.

    The value is the one skimage returns (rounded to out_type). A float32 BLAS matmul gives every value to
    within ~1e-6 of it; pixels inside a safety band around the threshold, where that error could decide, are
    recomputed in scipy.ndimage.zoom's exact float64 order, so the result is pixel-identical to skimage.
    """
    out_h, out_w = box_hw
    r1, c1, r2, c2 = visible
    n_in_y, n_in_x = padded.shape[0] - 2, padded.shape[1] - 2
    wy = _axis_matrix32(n_in_y, out_h)[r1:r2]
    wx = _axis_matrix32(n_in_x, out_w)[c1:c2]
    values = (wy @ padded32) @ wx.T
    band = np.float32(1e-5 * max(1.0, abs(threshold), float(np.abs(padded32).max())))
    np.greater_equal(values, np.float32(threshold) + band, out=out)
    maybe = values >= np.float32(threshold) - band
    if np.count_nonzero(maybe) == np.count_nonzero(out):
        return
    flat = np.flatnonzero(np.not_equal(maybe, out))  # out implies maybe, so these are the band pixels
    rows, cols = np.divmod(flat, out.shape[1])
    ty = tuple(a[r1:r2] for a in _axis_taps(n_in_y, out_h))
    tx = tuple(a[c1:c2] for a in _axis_taps(n_in_x, out_w))
    exact = _interpolate_exact(padded, ty, tx, rows, cols)
    out[rows, cols] = exact.astype(out_type) >= threshold


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
    out_type = _skimage_float_dtype(masks.dtype)
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
            _resize_threshold_into(
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
