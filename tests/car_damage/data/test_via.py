"""VIA 1.x / 2.x parsing and region rasterisation (hand-made cases and the real seed file)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from car_damage.data.annotations import AnnotationFormatError, Region
from car_damage.data.via import load_via, parse_via, region_mask

SQUARE = {"name": "polygon", "all_points_x": [1, 4, 4, 1], "all_points_y": [2, 2, 5, 5]}


def _via1(regions):
    return {"a.png10": {"filename": "a.png", "size": 10, "file_attributes": {},
                        "regions": {str(i): r for i, r in enumerate(regions)}}}


def test_via1_regions_dict_in_numeric_key_order():
    regions = [{"shape_attributes": dict(SQUARE, all_points_x=[i, 4, 4, i]), "region_attributes": {"k": str(i)}}
               for i in range(12)]
    parsed = parse_via(_via1(regions))
    assert parsed.format == "via1"
    (entry,) = parsed.images
    assert entry.filename == "a.png" and entry.file_size == 10
    # "10" sorts after "9", not after "1"
    assert [r.attributes["k"] for r in entry.regions] == [str(i) for i in range(12)]
    assert entry.regions[0].params["all_points_x"] == [0.0, 4.0, 4.0, 0.0]


def test_via2_export_and_project_give_the_same_regions():
    export = {"b.jpg5": {"filename": "b.jpg", "size": 5, "file_attributes": {},
                         "regions": [{"shape_attributes": SQUARE, "region_attributes": {"damage": "dent"}}]}}
    project = {"_via_settings": {}, "_via_attributes": {}, "_via_img_metadata": export}
    a, b = parse_via(export), parse_via(project)
    assert (a.format, b.format) == ("via2", "via2-project")
    assert a.images[0].regions == b.images[0].regions
    assert a.images[0].regions[0].attributes == {"damage": "dent"}


def test_via3_and_garbage_are_rejected_with_a_message():
    with pytest.raises(AnnotationFormatError, match="VIA 3"):
        parse_via({"project": {}, "file": {}, "metadata": {}})
    with pytest.raises(AnnotationFormatError, match="all_points_x has 3 values, all_points_y 2"):
        parse_via(_via1([{"shape_attributes": {"name": "polygon", "all_points_x": [1, 2, 3],
                                               "all_points_y": [1, 2]}}]))
    with pytest.raises(AnnotationFormatError, match="unsupported VIA shape 'blob'"):
        parse_via(_via1([{"shape_attributes": {"name": "blob"}}]))


def test_point_regions_are_ignored_and_shapes_parsed():
    regions = [
        {"shape_attributes": {"name": "point", "cx": 1, "cy": 1}},
        {"shape_attributes": {"name": "rect", "x": 1, "y": 2, "width": 3, "height": 2}},
        {"shape_attributes": {"name": "circle", "cx": 5, "cy": 5, "r": 2}},
        {"shape_attributes": {"name": "ellipse", "cx": 5, "cy": 5, "rx": 3, "ry": 1}},
    ]
    shapes = [r.shape for r in parse_via(_via1(regions)).images[0].regions]
    assert shapes == ["rect", "circle", "ellipse"]


def test_polygon_mask_matches_hand_count():
    mask = region_mask(Region("polygon", {"all_points_x": [1, 4, 4, 1], "all_points_y": [2, 2, 5, 5]}), 8, 8)
    expected = np.zeros((8, 8), bool)
    expected[2:6, 1:5] = True
    np.testing.assert_array_equal(mask, expected)


def test_polygon_past_the_border_is_clipped_not_an_index_error():
    # points on x == width and beyond, and negative ones: matterport's loader raised IndexError here
    region = Region("polygon", {"all_points_x": [-5, 12, 12, -5], "all_points_y": [6, 6, 20, 20]})
    mask = region_mask(region, 10, 10)
    assert mask.shape == (10, 10)
    assert mask[6:].all() and not mask[:6].any()
    outside = Region("polygon", {"all_points_x": [20, 30, 30], "all_points_y": [20, 20, 30]})
    assert not region_mask(outside, 10, 10).any()


def test_rect_circle_ellipse_polyline_masks():
    rect = region_mask(Region("rect", {"x": 1, "y": 2, "width": 3, "height": 2}), 6, 6)
    assert rect.sum() == 6 and rect[2:4, 1:4].all()
    disk = region_mask(Region("circle", {"cx": 5, "cy": 5, "r": 2}), 11, 11)
    assert disk.sum() == 13  # lattice points with dx^2 + dy^2 <= 4
    wide = region_mask(Region("ellipse", {"cx": 5, "cy": 5, "rx": 3, "ry": 1, "theta": 0.0}), 11, 11)
    assert wide[5, 2:9].all() and not wide[3].any() and wide.sum() == 9  # 7 on the axis + (5,4), (5,6)
    tall = region_mask(Region("ellipse", {"cx": 5, "cy": 5, "rx": 3, "ry": 1, "theta": np.pi / 2}), 11, 11)
    np.testing.assert_array_equal(tall, wide.T)
    line = region_mask(Region("polyline", {"all_points_x": [0, 4, 4], "all_points_y": [0, 0, 9]}), 6, 6)
    assert line[0, :5].all() and line[:, 4].all() and line.sum() == 10


def test_real_seed_files_parse(seed_scratch_dir):
    train = load_via(seed_scratch_dir / "train" / "via_region_data.json")
    val = load_via(seed_scratch_dir / "val" / "via_region_data.json")
    assert (train.format, val.format) == ("via1", "via1")
    assert (len(train.images), sum(len(e.regions) for e in train.images)) == (49, 65)
    assert (len(val.images), sum(len(e.regions) for e in val.images)) == (6, 7)
    assert {r.shape for e in train.images for r in e.regions} == {"polygon"}
    assert train.images[0].regions[0].attributes == {"Scratch": "scratch"}
    assert val.images[0].regions[0].attributes == {"scratch": "scratch"}


def test_real_polygons_touching_the_border_rasterise(seed_scratch_dir):
    from PIL import Image

    train = load_via(seed_scratch_dir / "train" / "via_region_data.json")
    entry = next(e for e in train.images if e.filename == "image2.jpg")
    width, height = Image.open(seed_scratch_dir / "train" / "image2.jpg").size
    masks = [region_mask(r, height, width) for r in entry.regions]
    # image2.jpg has a vertex at y == 600 == height
    assert max(max(r.params["all_points_y"]) for r in entry.regions) == height
    assert all(m.shape == (height, width) and m.any() for m in masks)


def test_load_via_reports_bad_json(tmp_path):
    path = tmp_path / "via_region_data.json"
    path.write_text("{not json")
    with pytest.raises(AnnotationFormatError, match="not valid JSON"):
        load_via(path)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(AnnotationFormatError, match="JSON object"):
        load_via(path)
