"""Annotated folders -> DamageDataset: class matching, skipping rules, clipping, formats, the real seed data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from car_damage.data.annotations import AnnotationFormatError
from car_damage.data.dataset import (
    ClassMatcher,
    DamageDataset,
    find_annotation_file,
    load_dataset,
    load_split,
)


def _poly(xs, ys, **attributes):
    return {"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
            "region_attributes": attributes}


def _png(path, width=20, height=10, mode="RGB"):
    Image.new(mode, (width, height), (200, 10, 10, 128) if mode == "RGBA" else (200, 10, 10)).save(path)


def test_class_matcher_rules():
    one = ClassMatcher(["scratch"])
    assert one.match({"Scratch": "scratch"}) == "scratch"  # the real train spelling
    assert one.match({"scratch": "SCRATCH "}) == "scratch"
    assert one.match({}) == "scratch"  # one class, no class attribute at all: balloon-style default
    assert one.match({"damage": "dent"}) is None  # a class attribute naming another class is not defaulted
    two = ClassMatcher(["Scratch", "dent"], attribute_names=["kind"])
    assert two.match({"Kind": "DENT"}) == "dent"
    assert two.match({"kind": {"scratch": True, "dent": False}}) == "Scratch"  # VIA 2 checkbox
    assert two.match({"kind": {"scratch": True, "dent": True}}) is None  # ambiguous
    assert two.match({}) is None and two.match({"damage": "dent"}) is None
    with pytest.raises(ValueError, match="distinct"):
        ClassMatcher(["dent", "Dent"])
    with pytest.raises(ValueError, match="BG"):
        ClassMatcher(["bg"])


def test_hand_made_via2_folder(tmp_path, caplog):
    for name in ("a.png", "b.png", "c.png", "extra.png"):
        _png(tmp_path / name)
    _png(tmp_path / "rgba.png", mode="RGBA")
    regions_a = [
        _poly([2, 30, 30, 2], [5, 5, 40, 40], damage="dent"),  # runs past the bottom-right corner: clipped
        {"shape_attributes": {"name": "rect", "x": 0, "y": 0, "width": 4, "height": 2},
         "region_attributes": {"damage": "Scratch"}},
        _poly([1, 3, 3], [1, 1, 3], damage="rust"),  # unknown class: dropped
        _poly([50, 60, 60], [50, 50, 60], damage="dent"),  # outside the image: dropped
    ]
    metadata = {
        "a.png1": {"filename": "a.png", "size": 1, "regions": regions_a, "file_attributes": {}},
        "b.png1": {"filename": "b.png", "size": 1, "regions": [], "file_attributes": {}},
        "gone.png1": {"filename": "gone.png", "size": 1, "regions": [_poly([1, 3, 3], [1, 1, 3])],
                      "file_attributes": {}},
        "rgba.png1": {"filename": "rgba.png", "size": 1, "regions": [_poly([0, 5, 5], [0, 0, 5], damage="dent")],
                      "file_attributes": {}},
        "c.png1": {"filename": "c.png", "size": 1, "regions": [_poly([1, 3, 3], [1, 1, 3], damage="rust")],
                   "file_attributes": {}},
    }
    (tmp_path / "project.json").write_text(json.dumps({"_via_settings": {}, "_via_img_metadata": metadata}))
    split = load_split(tmp_path, ["scratch", "dent"])
    assert split.format == "via2-project"
    assert [image.path.name for image in split.images] == ["a.png", "rgba.png"]
    assert split.skipped == [
        ("b.png", "no annotated regions"),
        ("gone.png", "listed in the annotation file but missing on disk"),
        ("c.png", "no region with a known class inside the image"),
        ("extra.png", "image file without an annotation entry"),
    ]
    assert "region 2: no class among ['scratch', 'dent']" in caplog.text
    dataset = DamageDataset.from_split(split, ["scratch", "dent"])
    assert dataset.class_names == ["BG", "scratch", "dent"]
    masks, class_ids = dataset.load_mask(0)
    assert masks.dtype == bool and masks.shape == (10, 20, 2) and class_ids.dtype == np.int32
    assert class_ids.tolist() == [2, 1]
    assert masks[5:, 2:, 0].all() and masks[:, :, 0].sum() == 5 * 18
    assert masks[:2, :4, 1].all() and masks[:, :, 1].sum() == 8
    image = dataset.load_image(1)
    assert image.shape == (10, 20, 3) and image.dtype == np.uint8


def test_coco_file_is_found_and_loaded(tmp_path):
    _png(tmp_path / "car.png", 8, 6)
    (tmp_path / "notes.json").write_text(json.dumps({"hello": 1}))  # ignored: neither VIA nor COCO
    (tmp_path / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "car.png", "width": 8, "height": 6}],
        "categories": [{"id": 3, "name": "dent"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": [[0, 0, 3, 0, 3, 3, 0, 3]]}],
    }))
    assert find_annotation_file(tmp_path).name == "instances.json"
    split = load_split(tmp_path, ["dent"])
    assert split.format == "coco" and split.num_regions == 1
    (tmp_path / "more.json").write_text(json.dumps({"x.png1": {"filename": "x.png", "regions": []}}))
    with pytest.raises(AnnotationFormatError, match="several annotation files"):
        find_annotation_file(tmp_path)


def test_real_seed_data(seed_scratch_dir):
    train = load_split(seed_scratch_dir / "train", ["scratch"])
    val = load_split(seed_scratch_dir / "val", ["scratch"])
    assert (len(train.images), train.num_regions, train.skipped) == (49, 65, [])
    assert (len(val.images), val.num_regions) == (6, 7)
    assert val.skipped == [("image58.jpeg", "image file without an annotation entry")]
    dataset = DamageDataset.from_split(train, ["scratch"])
    index = next(i for i, info in enumerate(dataset.image_info) if info["id"] == "image2.jpg")
    masks, class_ids = dataset.load_mask(index)  # has a vertex on y == height: matterport raised IndexError
    assert masks.shape == (600, 800, 2) and masks.any(axis=(0, 1)).all() and class_ids.tolist() == [1, 1]
    rgba = next(i for i, info in enumerate(dataset.image_info) if info["id"] == "image46.png")
    assert dataset.load_image(rgba).shape[2] == 3


def test_load_dataset_excludes_named_images(seed_scratch_dir):
    dataset = load_dataset(seed_scratch_dir, "val", ["scratch"], exclude=["image52.jpeg", "image54.jpg"])
    assert sorted(info["id"] for info in dataset.image_info) == [
        "image51.png", "image53.jpeg", "image55.jpg", "image56.jpg"]
    assert dataset.num_images == 4
