"""COCO instance-segmentation JSON (``images``, ``annotations``, ``categories``) -> the VIA dataclasses.

Each annotation becomes one ``Region`` whose attributes are ``{"category": <category name>}``, so the class is
resolved by the same attribute matching as VIA files. Polygon segmentations (a list of flat ``[x1, y1, x2, y2,
...]`` lists, several parts per instance allowed) become ``coco_polygons`` regions; RLE segmentations (compressed
or not) become ``rle`` regions (decoded by ``car_damage.data.rle``, the codec the service uses too). Crowd annotations
(``iscrowd: 1``) are not instances and are skipped; annotations with neither polygon nor RLE fall back
to their ``bbox`` as a rectangle.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from car_damage.data.annotations import AnnotationFile, AnnotationFormatError, ImageEntry, Region, read_annotation_json

logger = logging.getLogger(__name__)

#: The attribute name under which a COCO category name is stored on a Region.
CATEGORY_ATTRIBUTE = "category"


def looks_like_coco(data: Any) -> bool:
    return isinstance(data, Mapping) and all(key in data for key in ("images", "annotations", "categories"))


def _segmentation_region(annotation: Mapping[str, Any], category: str, where: str) -> Region:
    attributes = {CATEGORY_ATTRIBUTE: category}
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list) and segmentation:
        polygons = []
        for part in segmentation:
            if not isinstance(part, list) or len(part) % 2:
                raise AnnotationFormatError(f"{where}: polygon part must be a flat list of x, y pairs")
            try:
                polygons.append([float(v) for v in part])
            except (TypeError, ValueError) as exc:
                raise AnnotationFormatError(f"{where}: non-numeric polygon coordinate ({exc})") from exc
        return Region(shape="coco_polygons", params={"polygons": polygons}, attributes=attributes)
    if isinstance(segmentation, Mapping):
        if "counts" not in segmentation or "size" not in segmentation:
            raise AnnotationFormatError(f"{where}: RLE segmentation needs 'counts' and 'size'")
        return Region(shape="rle", params=dict(segmentation), attributes=attributes)
    bbox = annotation.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4:
        x, y, w, h = (float(v) for v in bbox)
        return Region(shape="rect", params={"x": x, "y": y, "width": w, "height": h}, attributes=attributes)
    raise AnnotationFormatError(f"{where}: annotation has no segmentation and no bbox")


def parse_coco(data: Any, source: str = "<memory>") -> AnnotationFile:
    """Parse decoded COCO instance JSON; images keep the file's order, regions the annotations' order."""
    if not looks_like_coco(data):
        raise AnnotationFormatError(f"{source}: not COCO instance JSON (needs images, annotations, categories)")
    try:
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise AnnotationFormatError(f"{source}: every category needs an integer 'id' and a 'name'") from exc
    entries: dict[int, ImageEntry] = {}
    for image in data["images"]:
        try:
            image_id = int(image["id"])
            entries[image_id] = ImageEntry(
                filename=str(image["file_name"]),
                regions=[],
                width=int(image["width"]) if image.get("width") else None,
                height=int(image["height"]) if image.get("height") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AnnotationFormatError(f"{source}: every image needs 'id' and 'file_name' ({exc})") from exc
    crowds = 0
    for index, annotation in enumerate(data["annotations"]):
        where = f"{source}: annotation {annotation.get('id', index)}"
        try:
            entry = entries[int(annotation["image_id"])]
            category = categories[int(annotation["category_id"])]
        except KeyError as exc:
            raise AnnotationFormatError(f"{where}: unknown or missing image_id/category_id {exc}") from exc
        if annotation.get("iscrowd"):
            crowds += 1
            continue
        entry.regions.append(_segmentation_region(annotation, category, where))
    if crowds:
        logger.info("%s: skipped %d crowd annotations", source, crowds)
    return AnnotationFile(path=Path(source), format="coco", images=list(entries.values()))


def load_coco(path: str | Path) -> AnnotationFile:
    path = Path(path)
    return parse_coco(read_annotation_json(path), str(path))
