"""options: custom-attribute parsing, ranges, calibration and header-over-query precedence."""

from __future__ import annotations

import pytest

from car_damage.answer.options import (
    DEFAULT_POLYGON_TOLERANCE,
    InferenceOptions,
    options_from_request,
    parse_custom_attributes,
)
from car_damage.errors import BadOption


def test_parse_custom_attributes_splits_strips_and_url_decodes():
    assert parse_custom_attributes("min_score=0.8; types=scratch%2Cdent ;;Masks=rle") == {
        "min_score": "0.8",
        "types": "scratch,dent",
        "masks": "rle",
    }
    assert parse_custom_attributes("") == {} and parse_custom_attributes(None) == {}


@pytest.mark.parametrize("header", ["min_score", "=0.5", "min_score=0.5;min_score=0.6"])
def test_parse_custom_attributes_rejects_malformed(header):
    with pytest.raises(BadOption):
        parse_custom_attributes(header)


def test_defaults():
    options = InferenceOptions.from_mapping({})
    assert options == InferenceOptions()
    assert options.min_score is None and options.types is None and options.max_instances is None
    assert options.polygon_tolerance == DEFAULT_POLYGON_TOLERANCE and options.masks == "none"
    assert options.calibration is None


def test_every_option_parses():
    options = InferenceOptions.from_mapping(
        {"min_score": "0.75", "types": "Scratch, dent,scratch", "max_instances": "5",
         "polygon_tolerance": "0", "masks": "RLE"},
        known_types=["scratch", "dent"],
    )
    assert options.min_score == 0.75
    assert options.types == ("scratch", "dent")  # lower-cased, de-duplicated, order kept
    assert options.max_instances == 5 and options.polygon_tolerance == 0.0 and options.masks == "rle"


@pytest.mark.parametrize(
    "key, value, hint",
    [
        ("min_score", "1.5", "[0, 1]"),
        ("min_score", "-0.1", "[0, 1]"),
        ("min_score", "nan", "[0, 1]"),
        ("min_score", "high", "not a number"),
        ("max_instances", "0", "[1, 1000]"),
        ("max_instances", "2.5", "not an integer"),
        ("max_instances", "1001", "[1, 1000]"),
        ("polygon_tolerance", "-1", "[0, 50]"),
        ("polygon_tolerance", "inf", "[0, 50]"),
        ("masks", "png", "none, rle"),
        ("types", "", "empty"),
        ("types", "scr atch", "not a damage type"),
        ("frame_width", "0", "(0, "),
        ("unit", "in", "calibration"),
        ("colour", "red", "accepted options"),
    ],
)
def test_bad_values_name_the_key_and_range(key, value, hint):
    with pytest.raises(BadOption) as info:
        InferenceOptions.from_mapping({key: value})
    assert key in info.value.detail and hint in info.value.detail
    assert info.value.status == 400


def test_types_checked_against_loaded_models():
    with pytest.raises(BadOption, match="unknown damage type 'dent'.*scratch"):
        InferenceOptions.from_mapping({"types": "dent"}, known_types=["scratch"])


def test_frame_calibration_old_system():
    options = InferenceOptions.from_mapping({"frame_width": "14", "frame_height": "18", "unit": "in"})
    calibration = options.calibration
    assert calibration.method == "frame" and calibration.area_unit == "in^2"
    assert calibration.pixel_area(2119, 1415) == pytest.approx(8.4045e-05, rel=1e-4)


def test_unit_defaults_to_inches_and_pixels_per_unit():
    assert InferenceOptions.from_mapping({"frame_width": "14", "frame_height": "18"}).calibration.unit == "in"
    calibration = InferenceOptions.from_mapping({"pixels_per_unit": "10", "unit": "cm"}).calibration
    assert calibration.method == "pixels_per_unit"
    assert calibration.pixel_area(123, 456) == pytest.approx(0.01)  # (1/10 cm)^2 whatever the image size


@pytest.mark.parametrize(
    "values, hint",
    [
        ({"frame_width": "14"}, "frame_height is missing"),
        ({"frame_height": "18"}, "frame_width is missing"),
        ({"frame_width": "14", "frame_height": "18", "pixels_per_unit": "3"}, "not both"),
        ({"pixels_per_unit": "3", "unit": "furlong"}, "unit"),
    ],
)
def test_calibration_combinations(values, hint):
    with pytest.raises(BadOption, match=hint):
        InferenceOptions.from_mapping(values)


def test_header_wins_over_query_string():
    options = options_from_request("min_score=0.9", {"min_score": "0.2", "masks": "rle"})
    assert options.min_score == 0.9 and options.masks == "rle"
    assert options_from_request(None, {"max_instances": "3"}).max_instances == 3


def test_query_given_twice_is_rejected():
    with pytest.raises(BadOption, match="given 2 times"):
        options_from_request(None, {"min_score": ["0.1", "0.2"]})


def test_direct_construction_validates_too():
    with pytest.raises(BadOption):
        InferenceOptions(min_score=2.0)
    with pytest.raises(BadOption):
        InferenceOptions(masks="png")


def test_to_json_echoes_effective_values():
    options = InferenceOptions.from_mapping({"types": "scratch", "min_score": "0.5"})
    assert options.to_json() == {
        "min_score": 0.5, "types": ["scratch"], "max_instances": None,
        "polygon_tolerance": DEFAULT_POLYGON_TOLERANCE, "masks": "none", "merge": None,
    }
    assert InferenceOptions.from_mapping({"merge": "None"}).merge == "none"
    with pytest.raises(BadOption, match="merge.*none, overlap"):
        InferenceOptions.from_mapping({"merge": "boxes"})
