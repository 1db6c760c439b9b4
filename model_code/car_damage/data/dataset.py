"""Annotated image folders -> ``mrcnn.utils.Dataset`` for training and evaluation.

Layout (the old system's): ``<dataset>/train`` and ``<dataset>/val``, each holding the images and one annotation
file: ``via_region_data.json`` when present, else the single ``*.json`` file that is a VIA export/project or COCO
instance JSON. The class of a region comes from its attributes: the first attribute whose name (case-insensitive)
is one of ``attribute_names`` and whose value names one of ``classes`` (case-insensitive). The real data spells
the key ``Scratch`` in train and ``scratch`` in val; both match. When a dataset has one class and a region carries
none of the attribute names at all, the region gets that class (the old balloon-style loader's behaviour).

Images are decoded exactly as the service decodes uploads (``car_damage.data.images.decode_image``: EXIF
orientation applied, as the browser-based annotator shows them; alpha composited; RGB uint8).
Skipped with a logged warning: images without usable regions, images missing on disk or unreadable, image files
in the folder without an annotation entry. Regions of unknown class or entirely outside the image are dropped
with a warning.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from car_damage.data.annotations import AnnotationFile, AnnotationFormatError, Region
from car_damage.data.coco import CATEGORY_ATTRIBUTE, looks_like_coco, parse_coco
from car_damage.data.images import decode_image
from car_damage.data.via import looks_like_via, parse_via, region_mask
from mrcnn import utils

logger = logging.getLogger(__name__)

DEFAULT_ANNOTATION_NAME = "via_region_data.json"
#: Attribute names searched for the class, besides the class names themselves ({"Scratch": "scratch"}).
DEFAULT_ATTRIBUTE_NAMES = ("class", "label", "damage", "type", "name", CATEGORY_ATTRIBUTE)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: utils.Dataset source name for our classes (must not contain a dot).
SOURCE = "damage"
#: Training reads local files; allow larger photos than the service's upload limit.
MAX_TRAINING_PIXELS = 200_000_000
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


@dataclass
class AnnotatedImage:
    """A usable image: its path, size (after EXIF orientation) and its regions with their class names."""

    path: Path
    width: int
    height: int
    regions: list[Region]
    class_names: list[str]


@dataclass
class LoadedSplit:
    """One folder's usable images plus what was skipped and why."""

    folder: Path
    annotation_file: Path
    format: str
    images: list[AnnotatedImage]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_regions(self) -> int:
        return sum(len(image.regions) for image in self.images)


class ClassMatcher:
    """Finds a region's class from its attributes, case-insensitively."""

    def __init__(self, classes: Sequence[str], attribute_names: Sequence[str] | None = None) -> None:
        if not classes:
            raise ValueError("at least one class name is needed")
        self.classes = [str(name).strip() for name in classes]
        lowered = [name.lower() for name in self.classes]
        if len(set(lowered)) != len(lowered) or "bg" in lowered or any(not name for name in lowered):
            raise ValueError(f"class names must be distinct, non-empty and not 'BG': {list(classes)}")
        self._by_lower = dict(zip(lowered, self.classes, strict=True))
        names = DEFAULT_ATTRIBUTE_NAMES if attribute_names is None else attribute_names
        self.attribute_names = tuple(dict.fromkeys([n.strip().lower() for n in names] + lowered))

    def _class_of_value(self, value: Any) -> str | None:
        if isinstance(value, str):
            return self._by_lower.get(value.strip().lower())
        if isinstance(value, Mapping):
            # VIA 2 checkbox attributes: {"scratch": true, "dent": false}
            chosen = [self._by_lower.get(str(k).strip().lower()) for k, v in value.items() if v]
            chosen = [name for name in chosen if name]
            return chosen[0] if len(chosen) == 1 else None
        return None

    def match(self, attributes: Mapping[str, Any]) -> str | None:
        """The class name, or None when no listed attribute names a known class."""
        relevant = [(str(k).strip().lower(), v) for k, v in attributes.items()]
        relevant = [(k, v) for k, v in relevant if k in self.attribute_names]
        for _, value in relevant:
            name = self._class_of_value(value)
            if name is not None:
                return name
        if not relevant and len(self.classes) == 1:
            return self.classes[0]
        return None


def load_annotation_file(path: str | Path) -> AnnotationFile:
    """Parse a VIA (1.x/2.x/project) or COCO JSON file, detected from its content."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationFormatError(f"{path}: cannot read annotation JSON ({exc})") from exc
    if looks_like_coco(data):
        return parse_coco(data, str(path))
    if looks_like_via(data):
        return parse_via(data, str(path))
    raise AnnotationFormatError(f"{path}: neither a VIA export/project nor COCO instance JSON")


def find_annotation_file(folder: str | Path) -> Path:
    """``via_region_data.json`` if present, else the single VIA/COCO ``*.json`` in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist")
    preferred = folder / DEFAULT_ANNOTATION_NAME
    if preferred.is_file():
        return preferred
    candidates = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if looks_like_coco(data) or looks_like_via(data):
            candidates.append(path)
    if not candidates:
        raise FileNotFoundError(f"{folder}: no {DEFAULT_ANNOTATION_NAME} and no VIA/COCO *.json file")
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise AnnotationFormatError(f"{folder}: several annotation files ({names}); keep one per folder")
    return candidates[0]


def oriented_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image as shown after EXIF orientation, read from the header only."""
    with Image.open(path) as image:
        width, height = image.size
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION)
        except (SyntaxError, ValueError, KeyError, TypeError, struct.error):
            orientation = None  # decode_image ignores unreadable EXIF blocks too
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return width, height


def read_rgb(path: str | Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB exactly as the service decodes it (EXIF orientation, alpha/grey/16-bit rules)."""
    return decode_image(Path(path).read_bytes(), max_pixels=MAX_TRAINING_PIXELS)


def load_split(
    folder: str | Path,
    classes: Sequence[str],
    attribute_names: Sequence[str] | None = None,
    annotation_file: str | Path | None = None,
) -> LoadedSplit:
    """Read one folder's annotations and keep the images that have at least one usable region."""
    folder = Path(folder)
    path = Path(annotation_file) if annotation_file else find_annotation_file(folder)
    parsed = load_annotation_file(path)
    matcher = ClassMatcher(classes, attribute_names)
    loaded = LoadedSplit(folder=folder, annotation_file=path, format=parsed.format, images=[])

    def skip(name: str, reason: str) -> None:
        logger.warning("%s: skipping %s: %s", folder, name, reason)
        loaded.skipped.append((name, reason))

    seen = set()
    for entry in parsed.images:
        seen.add(entry.filename)
        image_path = folder / entry.filename
        if not entry.regions:
            skip(entry.filename, "no annotated regions")
            continue
        if not image_path.is_file():
            skip(entry.filename, "listed in the annotation file but missing on disk")
            continue
        try:
            width, height = oriented_size(image_path)
        except (OSError, UnidentifiedImageError) as exc:
            skip(entry.filename, f"unreadable image ({exc})")
            continue
        if entry.width and entry.height and (entry.width, entry.height) != (width, height):
            logger.warning(
                "%s: %s is %dx%d on disk but %dx%d in the annotations; using the file's size",
                folder, entry.filename, width, height, entry.width, entry.height,
            )
        regions, names = [], []
        for index, region in enumerate(entry.regions):
            name = matcher.match(region.attributes)
            if name is None:
                logger.warning("%s: %s region %d: no class among %s in %s; region dropped",
                               folder, entry.filename, index, matcher.classes, dict(region.attributes))
                continue
            if not region_mask(region, height, width).any():
                logger.warning("%s: %s region %d lies outside the image or has no area; region dropped",
                               folder, entry.filename, index)
                continue
            regions.append(region)
            names.append(name)
        if not regions:
            skip(entry.filename, "no region with a known class inside the image")
            continue
        loaded.images.append(AnnotatedImage(image_path, width, height, regions, names))
    for path_on_disk in sorted(folder.iterdir()):
        if path_on_disk.suffix.lower() in IMAGE_SUFFIXES and path_on_disk.name not in seen:
            skip(path_on_disk.name, "image file without an annotation entry")
    logger.info("%s: %d images, %d regions (%s), %d skipped",
                folder, len(loaded.images), loaded.num_regions, loaded.format, len(loaded.skipped))
    return loaded


class DamageDataset(utils.Dataset):
    """A prepared-ready mrcnn Dataset over one or more loaded splits; class ids follow ``classes`` (1-based)."""

    def __init__(self, classes: Sequence[str]) -> None:
        super().__init__()
        self.damage_classes = list(ClassMatcher(classes).classes)
        for class_id, name in enumerate(self.damage_classes, start=1):
            self.add_class(SOURCE, class_id, name)

    @classmethod
    def from_split(cls, split: LoadedSplit, classes: Sequence[str], exclude: Sequence[str] = ()) -> DamageDataset:
        dataset = cls(classes)
        dataset.add_split(split, exclude=exclude)
        dataset.prepare()
        return dataset

    def add_split(self, split: LoadedSplit, exclude: Sequence[str] = ()) -> None:
        """Add every image of ``split`` except those named in ``exclude`` (e.g. val images leaked into train)."""
        ids = {name.lower(): index for index, name in enumerate(self.damage_classes, start=1)}
        for image in split.images:
            if image.path.name in exclude:
                continue
            self.add_image(
                SOURCE,
                image_id=image.path.name,
                path=str(image.path),
                width=image.width,
                height=image.height,
                regions=image.regions,
                class_ids=[ids[name.lower()] for name in image.class_names],
            )

    def load_image(self, image_id: int) -> np.ndarray:
        info = self.image_info[image_id]
        image = read_rgb(info["path"])
        if image.shape[:2] != (info["height"], info["width"]):
            raise ValueError(f"{info['path']} decoded to {image.shape[1]}x{image.shape[0]}, its header said "
                             f"{info['width']}x{info['height']}; the file changed since the dataset was loaded?")
        return image

    def load_mask(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(bool [H, W, N], int32 [N]) for the image's regions, clipped to the image."""
        info = self.image_info[image_id]
        if info["source"] != SOURCE:
            return super().load_mask(image_id)
        height, width = info["height"], info["width"]
        masks = np.zeros((height, width, len(info["regions"])), dtype=bool)
        for index, region in enumerate(info["regions"]):
            masks[:, :, index] = region_mask(region, height, width)
        return masks, np.asarray(info["class_ids"], dtype=np.int32)

    def image_reference(self, image_id: int) -> str:
        return str(self.image_info[image_id]["path"])


def load_dataset(
    dataset_dir: str | Path,
    subset: str,
    classes: Sequence[str],
    attribute_names: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> DamageDataset:
    """``<dataset_dir>/<subset>`` as a prepared DamageDataset (the old ``load_balloon(dataset_dir, subset)``)."""
    split = load_split(Path(dataset_dir) / subset, classes, attribute_names)
    return DamageDataset.from_split(split, classes, exclude=exclude)
