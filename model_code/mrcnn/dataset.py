"""matterport's ``utils.Dataset``: the class/image registry that training and evaluation read from.

Subclass it, call ``add_class``/``add_image`` while loading, then ``prepare()``; override ``load_mask`` to return
(bool masks [H, W, N], int32 class ids [N]) and optionally ``image_reference``/``load_image``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)


def _clean_name(name: str) -> str:
    """Class display name: the text before the first comma (matterport shortens COCO's long names this way)."""
    return name.split(",")[0]


def read_rgb(path: str) -> np.ndarray:
    """Read an image file as RGB [H, W, 3]: grey becomes RGB and an alpha channel is dropped.

    The format is detected from the content, not the extension (a JPEG saved as .png still loads).
    """
    with Image.open(path) as pil:
        if pil.mode in ("RGB", "L", "RGBA", "LA"):
            image = np.asarray(pil)
        else:  # palette, CMYK, 16-bit, ... : let PIL produce 8-bit RGB
            image = np.asarray(pil.convert("RGB"))
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    elif image.shape[-1] == 2:  # grey + alpha
        image = np.stack([image[..., 0]] * 3, axis=-1)
    elif image.shape[-1] == 4:
        image = image[..., :3]
    return np.ascontiguousarray(image)


class Dataset:
    """Base dataset: register classes and images, ``prepare()``, then read images and masks by integer id."""

    def __init__(self, class_map: Any = None) -> None:
        self._image_ids: np.ndarray | list = []
        self.image_info: list[dict[str, Any]] = []
        # Background is always class 0.
        self.class_info: list[dict[str, Any]] = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids: dict[str, list[int]] = {}

    def add_class(self, source: str, class_id: int, class_name: str) -> None:
        if "." in source:
            raise ValueError(f"source name cannot contain a dot: {source!r}")
        for info in self.class_info:
            if info["source"] == source and info["id"] == class_id:
                return  # already registered
        self.class_info.append({"source": source, "id": class_id, "name": class_name})

    def add_image(self, source: str, image_id: Any, path: str | None, **kwargs: Any) -> None:
        image_info = {"id": image_id, "source": source, "path": path}
        image_info.update(kwargs)
        self.image_info.append(image_info)

    def image_reference(self, image_id: int) -> str:
        """A link or description of the image (empty here; subclasses return a path or URL)."""
        return ""

    def prepare(self, class_map: Any = None) -> None:
        """Build the integer ids and the source maps; call after all add_class/add_image calls."""
        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [_clean_name(c["name"]) for c in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)

        self.class_from_source_map = {
            f"{info['source']}.{info['id']}": int(class_id)
            for info, class_id in zip(self.class_info, self.class_ids, strict=True)
        }
        self.image_from_source_map = {
            f"{info['source']}.{info['id']}": int(image_id)
            for info, image_id in zip(self.image_info, self._image_ids, strict=True)
        }
        # Sorted for determinism (matterport uses an unordered set); includes "" (the background's source).
        self.sources = sorted({info["source"] for info in self.class_info})
        self.source_class_ids = {
            source: [i for i, info in enumerate(self.class_info) if i == 0 or info["source"] == source]
            for source in self.sources
        }

    def map_source_class_id(self, source_class_id: str) -> int:
        """"source.id" (e.g. "coco.12") -> internal class id."""
        try:
            return self.class_from_source_map[source_class_id]
        except KeyError:
            raise KeyError(f"unknown source class {source_class_id!r}; known: "
                           f"{sorted(self.class_from_source_map)}") from None

    def get_source_class_id(self, class_id: int, source: str) -> int:
        """Internal class id -> the id it has in ``source``."""
        info = self.class_info[class_id]
        if info["source"] != source:
            raise ValueError(f"class {class_id} belongs to source {info['source']!r}, not {source!r}")
        return info["id"]

    @property
    def image_ids(self) -> np.ndarray:
        return self._image_ids

    def source_image_link(self, image_id: int) -> str | None:
        """The path or URL of the image in its source."""
        return self.image_info[image_id]["path"]

    def load_image(self, image_id: int) -> np.ndarray:
        """RGB uint8 [H, W, 3] (grey converted, alpha dropped)."""
        return read_rgb(self.image_info[image_id]["path"])

    def load_mask(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Instance masks bool [H, W, N] and class ids int32 [N]. Override in a subclass.

        The default returns no instances (empty arrays), as matterport's does, with a warning.
        """
        logger.warning("Dataset.load_mask() is the empty default; define load_mask in your Dataset subclass.")
        return np.empty([0, 0, 0]), np.empty([0], np.int32)
