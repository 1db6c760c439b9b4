"""The annotation dataclasses every format parses into (VIA and COCO), and the JSON reader they share.

A ``Region`` is one annotated instance: a shape name, its parameters in pixels (x right, y down) and its
attributes, where the class lives. VIA's shapes and COCO's (``coco_polygons``, ``rle``) share these types, so
datasets resolve classes and rasterise regions the same way whatever the file format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Shapes that enclose an area (VIA names) and the extra shapes COCO files produce.
VIA_AREA_SHAPES = ("polygon", "rect", "circle", "ellipse")
VIA_LINE_SHAPES = ("polyline",)
COCO_SHAPES = ("coco_polygons", "rle")
SUPPORTED_SHAPES = VIA_AREA_SHAPES + VIA_LINE_SHAPES + COCO_SHAPES


class AnnotationFormatError(ValueError):
    """An annotation file that cannot be read; the message names the file and the offending entry."""


@dataclass(frozen=True)
class Region:
    """One annotated instance: a shape in pixel coordinates plus its attributes (where the class lives)."""

    shape: str
    params: Mapping[str, Any]
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.shape not in SUPPORTED_SHAPES:
            raise AnnotationFormatError(f"unsupported region shape {self.shape!r}; known: {SUPPORTED_SHAPES}")


@dataclass
class ImageEntry:
    """One image of an annotation file. ``width``/``height`` are known for COCO, None for VIA."""

    filename: str
    regions: list[Region]
    file_size: int | None = None
    width: int | None = None
    height: int | None = None
    file_attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class AnnotationFile:
    """A parsed annotation file. ``format`` is one of "via1", "via2", "via2-project", "coco"."""

    path: Path
    format: str
    images: list[ImageEntry]


def read_annotation_json(path: Path) -> Any:
    """The JSON of an annotation file (a UTF-8 BOM, as some Windows tools write, is accepted)."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise AnnotationFormatError(f"{path}: not valid JSON ({exc})") from exc
