"""Pictures of a response: colour splash (the old system's output) and outlines with labels.

- ``color_splash``: the image in grey with the damaged pixels in their original colour (matterport's
  balloon-sample splash, which the old system served).
- ``draw_outlines``: every damage's polygons (holes included), its box and a label such as
  ``scratch 0.97`` in a colour per damage type.
- ``annotate``: splash plus outlines; what ``Accept: image/png`` returns.

Masks for the splash come from the response itself: the RLE masks when the request asked for
``masks=rle`` (exact), otherwise the polygons rasterised (exact at ``polygon_tolerance=0``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.draw import polygon as fill_polygon

from car_damage.answer.geometry import mask_to_polygons
from car_damage.answer.response import ModelDetections
from car_damage.data.rle import rle_to_mask

#: Outline colours per known damage type; other types get a stable colour from FALLBACK_COLOURS.
TYPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "scratch": (255, 48, 48),
    "dent": (48, 144, 255),
    "crack": (255, 200, 0),
    "rust": (200, 100, 20),
    "glass": (0, 220, 200),
}
FALLBACK_COLOURS = ((220, 60, 220), (60, 220, 60), (255, 128, 0), (128, 128, 255), (255, 255, 255))
#: ITU-R BT.601 luma weights (what skimage's rgb2gray-like grey uses, and matterport's splash).
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])


def type_colour(damage_type: str) -> tuple[int, int, int]:
    """The outline colour of a damage type (stable across processes for unknown types)."""
    if damage_type in TYPE_COLOURS:
        return TYPE_COLOURS[damage_type]
    digest = hashlib.sha1(damage_type.encode()).digest()
    return FALLBACK_COLOURS[digest[0] % len(FALLBACK_COLOURS)]


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    return image


def color_splash(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Grey image, original colour where any mask is set. ``masks``: [H, W] or [H, W, N] bool."""
    image = _check_image(image)
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim == 3:
        union = masks.any(axis=2) if masks.shape[2] else np.zeros(image.shape[:2], dtype=bool)
    elif masks.ndim == 2:
        union = masks
    else:
        raise ValueError(f"masks must be [H, W] or [H, W, N], got shape {masks.shape}")
    if union.shape != image.shape[:2]:
        raise ValueError(f"masks are {union.shape}, image is {image.shape[:2]}")
    grey = np.rint(image.astype(np.float32) @ LUMA_WEIGHTS.astype(np.float32)).clip(0, 255).astype(np.uint8)
    return np.where(union[:, :, None], image, grey[:, :, None])


def polygons_to_mask(polygons: Sequence[Sequence[Sequence[Sequence[float]]]], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise response polygons (pixel-corner coordinates, holes after exteriors) to a bool [H, W] mask.

    A pixel is inside when its centre is, which inverts ``mask_to_polygons`` exactly at tolerance 0.
    """
    mask = np.zeros(shape, dtype=bool)
    for polygon in polygons:
        for ring_index, ring in enumerate(polygon):
            points = np.asarray(ring, dtype=np.float64)
            if points.ndim != 2 or len(points) < 3:
                continue
            # pixel centres sit at integer (row, col) for skimage, i.e. corner coordinates minus 0.5
            rows, cols = fill_polygon(points[:, 1] - 0.5, points[:, 0] - 0.5, shape=shape)
            mask[rows, cols] = ring_index == 0  # exterior sets, holes clear
    return mask


def response_masks(response: Mapping[str, Any]) -> np.ndarray:
    """[H, W, N] bool masks of a response's damages (RLE when present, else rasterised polygons)."""
    shape = (int(response["image"]["height"]), int(response["image"]["width"]))
    masks = [rle_to_mask(d["mask"]) if "mask" in d else polygons_to_mask(d["polygons"], shape)
             for d in response["damages"]]
    return np.stack(masks, axis=2) if masks else np.zeros(shape + (0,), dtype=bool)


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` px (cached: loading it costs more than drawing a label)."""
    return ImageFont.load_default(size=size)


def _as_damages(response_or_detections: Any) -> list[dict[str, Any]]:
    """Response dict -> its damages; ModelDetections list -> equivalent minimal damage dicts."""
    if isinstance(response_or_detections, Mapping):
        return list(response_or_detections["damages"])
    damages = []
    for detections in response_or_detections:
        if not isinstance(detections, ModelDetections):
            raise TypeError(f"expected a response dict or ModelDetections, got {type(detections).__name__}")
        for i, score in enumerate(detections.scores):
            y1, x1, y2, x2 = (int(v) for v in detections.boxes[i])
            damages.append({
                "type": detections.damage_type, "score": float(score),
                "bbox": {"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1},
                "polygons": mask_to_polygons(detections.masks[:, :, i]),
            })
    return damages


def draw_outlines(image: np.ndarray, response_or_detections: Any) -> np.ndarray:
    """Draw polygons, boxes and ``<type> <score>`` labels on a copy of ``image``; returns RGB uint8."""
    image = _check_image(image)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    line_width = max(1, round(min(image.shape[:2]) / 300))
    font = _font(max(10, round(min(image.shape[:2]) / 40)))
    for damage in _as_damages(response_or_detections):
        colour = type_colour(damage["type"])
        for polygon in damage["polygons"]:
            for ring in polygon:
                points = [tuple(p) for p in ring]
                draw.line(points + points[:1], fill=colour, width=line_width)
        box = damage["bbox"]
        x1, y1 = box["x"], box["y"]
        x2, y2 = x1 + max(box["width"] - 1, 0), y1 + max(box["height"] - 1, 0)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=max(1, line_width // 2))
        label = f"{damage['type']} {damage['score']:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        text_y = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1 + 1  # above the box if room
        draw.rectangle((x1, text_y, x1 + right - left + 2, text_y + bottom - top + 2), fill=colour)
        draw.text((x1 + 1 - left, text_y + 1 - top), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8)


def annotate(image: np.ndarray, response: Mapping[str, Any]) -> np.ndarray:
    """Colour splash of the response's damages with their outlines and labels on top; RGB uint8."""
    image = _check_image(image)
    expected = (int(response["image"]["height"]), int(response["image"]["width"]))
    if image.shape[:2] != expected:
        raise ValueError(f"image is {image.shape[:2]}, the response describes {expected}")
    return draw_outlines(color_splash(image, response_masks(response)), response)
