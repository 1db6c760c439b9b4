"""VGG Image Annotator (VIA) files: parsing into plain dataclasses, and region rasterisation.

Formats read:
- VIA 1.x export: ``{key: {"filename", "size", "regions": {"0": region, ...}, "file_attributes"}}``;
- VIA 2.x export: the same, but ``regions`` is a list;
- VIA 2.x project file: ``{"_via_settings": ..., "_via_img_metadata": <a 2.x export>, "_via_attributes": ...}``.

Shapes: polygon, polyline, rect, circle, ellipse (VIA's ``shape_attributes``; coordinates are pixels, x right,
y down). ``point`` regions carry no area and are dropped with a warning. The same dataclasses carry COCO
annotations (see ``car_damage.data.coco``), whose shapes are ``coco_polygons`` and ``rle``.

Rasterisation always clips to the image, so a polygon that runs past the border (annotators drag points onto the
frame; the real data has points at x == width) never raises IndexError.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import skimage.draw

from car_damage.data.annotations import (
    AnnotationFile,
    AnnotationFormatError,
    ImageEntry,
    Region,
    read_annotation_json,
)
from car_damage.data.rle import decode_rle

logger = logging.getLogger(__name__)

def _points(shape_attributes: Mapping[str, Any], where: str) -> tuple[list[float], list[float]]:
    xs = shape_attributes.get("all_points_x")
    ys = shape_attributes.get("all_points_y")
    if not isinstance(xs, list) or not isinstance(ys, list):
        raise AnnotationFormatError(f"{where}: polygon without all_points_x/all_points_y lists")
    if len(xs) != len(ys):
        raise AnnotationFormatError(f"{where}: all_points_x has {len(xs)} values, all_points_y {len(ys)}")
    try:
        return [float(x) for x in xs], [float(y) for y in ys]
    except (TypeError, ValueError) as exc:
        raise AnnotationFormatError(f"{where}: non-numeric polygon coordinate ({exc})") from exc


def _numbers(shape_attributes: Mapping[str, Any], keys: tuple[str, ...], where: str) -> dict[str, float]:
    values = {}
    for key in keys:
        try:
            values[key] = float(shape_attributes[key])
        except KeyError as exc:
            raise AnnotationFormatError(f"{where}: {shape_attributes.get('name')} lacks {key!r}") from exc
        except (TypeError, ValueError) as exc:
            raise AnnotationFormatError(f"{where}: {key}={shape_attributes[key]!r} is not a number") from exc
    return values


def parse_via_region(raw: Any, where: str) -> Region | None:
    """One VIA region dict -> Region; None (with a warning) for shapes without an area such as ``point``."""
    if not isinstance(raw, Mapping):
        raise AnnotationFormatError(f"{where}: region is {type(raw).__name__}, expected an object")
    shape_attributes = raw.get("shape_attributes")
    if not isinstance(shape_attributes, Mapping):
        raise AnnotationFormatError(f"{where}: region lacks shape_attributes")
    attributes = raw.get("region_attributes") or {}
    if not isinstance(attributes, Mapping):
        raise AnnotationFormatError(f"{where}: region_attributes is not an object")
    name = str(shape_attributes.get("name", "")).lower()
    if name in ("polygon", "polyline"):
        xs, ys = _points(shape_attributes, where)
        params: dict[str, Any] = {"all_points_x": xs, "all_points_y": ys}
    elif name == "rect":
        params = _numbers(shape_attributes, ("x", "y", "width", "height"), where)
    elif name == "circle":
        params = _numbers(shape_attributes, ("cx", "cy", "r"), where)
    elif name == "ellipse":
        params = _numbers(shape_attributes, ("cx", "cy", "rx", "ry"), where)
        # VIA 2.0.x stores the rotation as "theta" (radians); older files have none.
        params["theta"] = float(shape_attributes.get("theta", 0.0) or 0.0)
    elif name == "point":
        logger.warning("%s: point region has no area; ignored", where)
        return None
    else:
        raise AnnotationFormatError(f"{where}: unsupported VIA shape {name!r}")
    return Region(shape=name, params=params, attributes=dict(attributes))


def _parse_via_image(key: str, raw: Any, source: str) -> tuple[ImageEntry, str]:
    where = f"{source}: entry {key!r}"
    if not isinstance(raw, Mapping) or "filename" not in raw:
        raise AnnotationFormatError(f"{where}: not a VIA image entry (no 'filename')")
    regions_raw = raw.get("regions") or []
    if isinstance(regions_raw, Mapping):
        version = "via1"
        # VIA 1.x keys regions "0", "1", ...; keep their numeric order.
        ordered = [regions_raw[k] for k in sorted(regions_raw, key=lambda k: (len(str(k)), str(k)))]
    elif isinstance(regions_raw, list):
        version = "via2"
        ordered = list(regions_raw)
    else:
        raise AnnotationFormatError(f"{where}: 'regions' must be a list or an object")
    filename = str(raw["filename"])
    regions = []
    for index, region_raw in enumerate(ordered):
        region = parse_via_region(region_raw, f"{source}: {filename} region {index}")
        if region is not None:
            regions.append(region)
    size = raw.get("size")
    entry = ImageEntry(
        filename=filename,
        regions=regions,
        file_size=int(size) if isinstance(size, (int, float)) or (isinstance(size, str) and size.isdigit())
        else None,
        file_attributes=dict(raw.get("file_attributes") or {}),
    )
    return entry, version


def parse_via(data: Any, source: str = "<memory>") -> AnnotationFile:
    """Parse a loaded VIA 1.x/2.x export or 2.x project (``data`` is the decoded JSON)."""
    if not isinstance(data, Mapping):
        raise AnnotationFormatError(f"{source}: a VIA file holds a JSON object, got {type(data).__name__}")
    file_format = None
    if "_via_img_metadata" in data:
        metadata = data["_via_img_metadata"]
        file_format = "via2-project"
    elif "project" in data and "file" in data and "metadata" in data:
        raise AnnotationFormatError(f"{source}: VIA 3 projects are not supported; export as VIA 2 JSON")
    else:
        metadata = data
    if not isinstance(metadata, Mapping):
        raise AnnotationFormatError(f"{source}: _via_img_metadata is not an object")
    images = []
    versions = set()
    for key, raw in metadata.items():
        entry, version = _parse_via_image(str(key), raw, source)
        images.append(entry)
        versions.add(version)
    if file_format is None:
        file_format = "via1" if versions == {"via1"} else "via2"
    return AnnotationFile(path=Path(source), format=file_format, images=images)


def looks_like_via(data: Any) -> bool:
    """True for decoded JSON that is a VIA export or project (used to pick the parser for *.json files)."""
    if not isinstance(data, Mapping):
        return False
    if "_via_img_metadata" in data:
        return True
    if not data:
        return False
    return all(isinstance(v, Mapping) and "filename" in v for v in data.values())


def load_via(path: str | Path) -> AnnotationFile:
    path = Path(path)
    return parse_via(read_annotation_json(path), str(path))


# --- rasterisation --------------------------------------------------------------------------------------------


def _polygon_mask(xs: list[float], ys: list[float], height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    if len(xs) < 3:
        return mask
    rows, cols = skimage.draw.polygon(np.asarray(ys), np.asarray(xs), shape=(height, width))
    mask[rows, cols] = True
    return mask


def _polyline_mask(xs: list[float], ys: list[float], height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    points = [(int(round(y)), int(round(x))) for x, y in zip(xs, ys, strict=True)]
    for (r0, c0), (r1, c1) in zip(points, points[1:], strict=False):
        rows, cols = skimage.draw.line(r0, c0, r1, c1)
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        mask[rows[inside], cols[inside]] = True
    if len(points) == 1:
        r, c = points[0]
        if 0 <= r < height and 0 <= c < width:
            mask[r, c] = True
    return mask


def _rect_mask(p: Mapping[str, float], height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    # A rect covers the pixels whose centres lie inside [x, x + width) x [y, y + height).
    r0 = max(0, math.ceil(p["y"] - 0.5))
    r1 = min(height, math.ceil(p["y"] + p["height"] - 0.5))
    c0 = max(0, math.ceil(p["x"] - 0.5))
    c1 = min(width, math.ceil(p["x"] + p["width"] - 0.5))
    if r1 > r0 and c1 > c0:
        mask[r0:r1, c0:c1] = True
    return mask


def _ellipse_mask(cx: float, cy: float, rx: float, ry: float, theta: float, height: int, width: int) -> np.ndarray:
    """Pixels whose centre lies in the ellipse; ``theta`` rotates the x axis towards +y (canvas convention)."""
    mask = np.zeros((height, width), dtype=bool)
    if rx <= 0 or ry <= 0:
        return mask
    reach = max(rx, ry)
    r0, r1 = max(0, math.floor(cy - reach)), min(height, math.ceil(cy + reach) + 1)
    c0, c1 = max(0, math.floor(cx - reach)), min(width, math.ceil(cx + reach) + 1)
    if r1 <= r0 or c1 <= c0:
        return mask
    rows, cols = np.mgrid[r0:r1, c0:c1]
    dx, dy = cols - cx, rows - cy
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    u = (dx * cos_t + dy * sin_t) / rx
    v = (-dx * sin_t + dy * cos_t) / ry
    mask[r0:r1, c0:c1] = u * u + v * v <= 1.0
    return mask


def region_mask(region: Region, height: int, width: int) -> np.ndarray:
    """Boolean [height, width] mask of ``region``, clipped to the image (may be empty)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    p = region.params
    if region.shape == "polygon":
        return _polygon_mask(p["all_points_x"], p["all_points_y"], height, width)
    if region.shape == "polyline":
        return _polyline_mask(p["all_points_x"], p["all_points_y"], height, width)
    if region.shape == "rect":
        return _rect_mask(p, height, width)
    if region.shape == "circle":
        return _ellipse_mask(p["cx"], p["cy"], p["r"], p["r"], 0.0, height, width)
    if region.shape == "ellipse":
        return _ellipse_mask(p["cx"], p["cy"], p["rx"], p["ry"], p["theta"], height, width)
    if region.shape == "coco_polygons":
        mask = np.zeros((height, width), dtype=bool)
        for flat in p["polygons"]:
            mask |= _polygon_mask(list(flat[0::2]), list(flat[1::2]), height, width)
        return mask
    if region.shape == "rle":
        return decode_rle(p, height, width)
    raise AnnotationFormatError(f"cannot rasterise shape {region.shape!r}")
