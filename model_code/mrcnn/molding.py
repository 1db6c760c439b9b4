"""Preprocessing into the graph's input format (mold) and its inverse on the outputs (unmold), side by side.

Shape shorthand:
    N          images in a batch (mold) or detection rows of one image (unmold)
    H, W       original image size;  MH, MW  molded (network input) size
    META       12 + NUM_CLASSES (see mrcnn.image_meta)
    detections [N, (y1, x1, y2, x2, class_id, score)] normalised to the molded image; zero rows are padding
    mrcnn_mask [N, mask_h, mask_w, NUM_CLASSES] sigmoid probabilities
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mrcnn.boxes import denorm_boxes, window_to_normalized
from mrcnn.image_meta import compose_image_meta
from mrcnn.resize import paste_masks, resize_image


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """[H, W], [H, W, 1], [H, W, 3] or [H, W, 4] -> [H, W, 3] (grey replicated, alpha dropped)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image [H, W] or [H, W, 1|3|4], got shape {image.shape}")
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    return image[..., :3]


def _mold_into(out: np.ndarray, images: np.ndarray, mean_pixel: np.ndarray) -> np.ndarray:
    if images.shape[-1] == 4:
        images = images[..., :3]
    if images.dtype not in (np.uint8, np.float32):
        images = images.astype(np.float32)  # matterport's first step; exact for uint8 and float32 already
    # Subtract in float64 and store float32: what matterport's float64 result becomes when fed to the model.
    # One fused ufunc call avoids materialising the float64 intermediate (about 40% faster at 1024x1024).
    np.subtract(images, np.asarray(mean_pixel, dtype=np.float64), out=out, dtype=np.float64, casting="unsafe")
    return out


def mold_image(images: np.ndarray, config: Any) -> np.ndarray:
    """Subtract the mean pixel -> float32 (a 4th alpha channel is dropped first, as the car-scratch project does)."""
    images = np.asarray(images)
    shape = images.shape[:-1] + (3,) if images.shape[-1] == 4 else images.shape
    return _mold_into(np.empty(shape, dtype=np.float32), images, config.MEAN_PIXEL)


def unmold_image(normalized_images: np.ndarray, config: Any) -> np.ndarray:
    """Inverse of mold_image: add the mean pixel back -> uint8.

    Rounds to the nearest integer and clips to [0, 255] (matterport truncates, so float error turned 167 into 166).
    """
    restored = np.asarray(normalized_images, dtype=np.float64) + np.asarray(config.MEAN_PIXEL)
    return np.clip(np.rint(restored), 0, 255).astype(np.uint8)


def mold_inputs(images: Sequence[np.ndarray], config: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize, pad and normalise a list of images -> (molded float32 [N, MH, MW, 3], metas [N, META], windows [N, 4]).

    The original shape in each image_meta is the shape as given (so 4 channels for RGBA input).
    """
    if len(images) == 0:
        raise ValueError("mold_inputs needs at least one image")
    resized_images, image_metas, windows = [], [], []
    for image in images:
        original_shape = np.asarray(image).shape
        if len(original_shape) == 2:
            original_shape = original_shape + (1,)
        # Alpha/grey are handled before resizing: resizing is per channel, so the RGB result is the same and
        # we skip the work on a channel that mold_image would drop anyway.
        rgb = _as_rgb(image)
        resized, window, scale, _, _ = resize_image(
            rgb,
            min_dim=config.IMAGE_MIN_DIM,
            min_scale=config.IMAGE_MIN_SCALE,
            max_dim=config.IMAGE_MAX_DIM,
            mode=config.IMAGE_RESIZE_MODE,
        )
        meta = compose_image_meta(
            0, original_shape, resized.shape, window, scale, np.zeros([config.NUM_CLASSES], dtype=np.int32)
        )
        resized_images.append(resized)
        windows.append(window)
        image_metas.append(meta)
    shapes = {m.shape for m in resized_images}
    if len(shapes) > 1:
        raise ValueError(
            f"after resizing, images have different shapes {sorted(shapes)}; use a resize mode that gives one "
            f"size (square) or pass images of the same size"
        )
    # Mold straight into the batch array (no per-image float32 copies to stack).
    molded = np.empty((len(resized_images),) + resized_images[0].shape, dtype=np.float32)
    for i, resized in enumerate(resized_images):
        _mold_into(molded[i], resized, config.MEAN_PIXEL)
    return molded, np.stack(image_metas), np.stack(windows)


def unmold_detections(
    detections: np.ndarray,
    mrcnn_mask: np.ndarray,
    original_image_shape: Sequence[int],
    image_shape: Sequence[int],
    window: Sequence[float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image's detections -> (boxes int32 [n, 4] original pixels, class_ids int32 [n], scores float32 [n],
    masks bool [H, W, n]).

    As matterport: the first row with class_id 0 ends the list; boxes are mapped from the molded window to the
    original image and rounded half to even; rows whose box has no area are dropped; each mask is resized
    bilinearly into its box and thresholded at 0.5. ``masks`` is a [H, W, n] view of an [n, H, W] array (each
    instance contiguous); it is bool even when n == 0.
    """
    detections = np.asarray(detections)
    mrcnn_mask = np.asarray(mrcnn_mask)
    if detections.ndim != 2 or detections.shape[1] != 6:
        raise ValueError(f"detections must be [N, 6], got shape {detections.shape}")
    if mrcnn_mask.ndim != 4 or mrcnn_mask.shape[0] < detections.shape[0]:
        raise ValueError(f"mrcnn_mask must be [N, h, w, classes] with N >= {detections.shape[0]}, "
                         f"got shape {mrcnn_mask.shape}")
    height, width = int(original_image_shape[0]), int(original_image_shape[1])

    padding_rows = np.where(detections[:, 4] == 0)[0]
    count = int(padding_rows[0]) if padding_rows.size > 0 else detections.shape[0]
    boxes = detections[:count, :4]
    class_ids = detections[:count, 4].astype(np.int32)
    scores = detections[:count, 5].astype(np.float32)
    if np.any(class_ids < 0) or np.any(class_ids >= mrcnn_mask.shape[-1]):
        raise ValueError(f"class ids {class_ids} out of range for a mask head with {mrcnn_mask.shape[-1]} classes")
    masks = mrcnn_mask[np.arange(count), :, :, class_ids]  # [n, h, w]

    # Molded-normalised -> window-normalised -> original pixels.
    wy1, wx1, wy2, wx2 = window_to_normalized(window, image_shape)
    shift = np.array([wy1, wx1, wy1, wx1])
    scale = np.array([wy2 - wy1, wx2 - wx1, wy2 - wy1, wx2 - wx1])
    if np.any(scale <= 0):
        raise ValueError(f"window {tuple(window)} has no area in an image of shape {tuple(image_shape)}")
    boxes = denorm_boxes((boxes - shift) / scale, (height, width))

    # matterport drops area <= 0; a box with both sides negative would have positive area and crash its
    # unmold_mask, so we require both sides positive (identical for every box matterport can handle).
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, class_ids, scores, masks = boxes[keep], class_ids[keep], scores[keep], masks[keep]

    full_masks = paste_masks(masks, boxes, (height, width))
    return boxes, class_ids, scores, np.moveaxis(full_masks, 0, -1)
