"""Bilinear resizing exactly as ``skimage.transform.resize(order=1, mode="constant", cval=0, clip=True,
preserve_range=True, anti_aliasing=False)`` computes it, with separable per-axis taps.

Shape shorthand:
    H, W, C   image height, width, channels
    n_in      samples along one input axis; n_out along the output axis

Output sample i of an axis reads input coordinate (i + 0.5) * (n_in / n_out) - 0.5 with linear weights; samples
between the border pixel and the outside blend with 0 (the axis is padded with one zero on each side).
``mrcnn.resize.paste_masks`` thresholds these values for mask unmolding, so they must match skimage's bit for bit.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

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


def skimage_float_dtype(dtype: np.dtype) -> type:
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
    out = values.astype(skimage_float_dtype(image.dtype), copy=False)
    # clip=True: skimage keeps the output within the input's value range (over all channels).
    return np.clip(out, image.min(), image.max(), out=out)


def resize_threshold_into(
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
