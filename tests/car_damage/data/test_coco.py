"""COCO instance JSON -> regions: polygons (multi-part), RLE, bbox fallback, crowds, errors."""

from __future__ import annotations

import numpy as np
import pytest

from car_damage.data.annotations import AnnotationFormatError
from car_damage.data.coco import parse_coco
from car_damage.data.rle import decode_rle, mask_to_rle
from car_damage.data.via import region_mask


def _coco(annotations):
    return {
        "images": [{"id": 7, "file_name": "car.png", "width": 10, "height": 8}],
        "categories": [{"id": 1, "name": "Scratch"}, {"id": 2, "name": "dent"}],
        "annotations": annotations,
    }


def test_polygons_rle_bbox_and_crowd():
    square = np.zeros((8, 10), bool)
    square[1:3, 2:5] = True
    data = _coco([
        {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0,
         "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2], [6, 4, 8, 4, 8, 6, 6, 6]]},
        {"id": 2, "image_id": 7, "category_id": 2, "segmentation": mask_to_rle(square)},
        {"id": 3, "image_id": 7, "category_id": 2, "bbox": [5, 5, 2, 1]},
        {"id": 4, "image_id": 7, "category_id": 1, "iscrowd": 1, "segmentation": mask_to_rle(square)},
    ])
    parsed = parse_coco(data, "instances.json")
    assert parsed.format == "coco"
    (entry,) = parsed.images
    assert (entry.filename, entry.width, entry.height) == ("car.png", 10, 8)
    assert [r.shape for r in entry.regions] == ["coco_polygons", "rle", "rect"]
    assert [r.attributes["category"] for r in entry.regions] == ["Scratch", "dent", "dent"]
    two_parts = region_mask(entry.regions[0], 8, 10)
    assert two_parts.sum() == 18 and two_parts[0:3, 0:3].all() and two_parts[4:7, 6:9].all()
    np.testing.assert_array_equal(region_mask(entry.regions[1], 8, 10), square)
    rect = region_mask(entry.regions[2], 8, 10)
    assert rect.sum() == 2 and rect[5, 5:7].all()


def test_uncompressed_rle_and_size_check():
    # column-major runs: 3 zeros, 2 ones, rest zeros, in a 4x2 image
    mask = decode_rle({"counts": [3, 2, 3], "size": [4, 2]}, 4, 2)
    np.testing.assert_array_equal(mask, np.array([[0, 1], [0, 0], [0, 0], [1, 0]], bool))
    with pytest.raises(AnnotationFormatError, match="does not match the image size"):
        decode_rle({"counts": [8], "size": [4, 2]}, 2, 4)


def test_unknown_ids_are_reported():
    with pytest.raises(AnnotationFormatError, match="annotation 9"):
        parse_coco(_coco([{"id": 9, "image_id": 8, "category_id": 1, "bbox": [0, 0, 1, 1]}]))
    with pytest.raises(AnnotationFormatError, match="not COCO"):
        parse_coco({"images": []})
