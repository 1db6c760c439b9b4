"""response: numbers from hand-made detections, and the schema accepting real / rejecting broken responses."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from car_damage.answer.options import InferenceOptions
from car_damage.answer.response import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    InvalidResponse,
    ModelDetections,
    ModelInfo,
    build_response,
    load_schema,
    validate_response,
)
from car_damage.data.rle import rle_to_mask

HEIGHT, WIDTH = 10, 20


def _mask(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[rows, cols] = True
    return mask


def _detections() -> list[ModelDetections]:
    a = _mask(slice(1, 4), slice(2, 6))    # 3 x 4 = 12 px, score 0.95
    b = _mask(slice(2, 5), slice(4, 9))    # 3 x 5 = 15 px, overlaps a on rows 2-3, cols 4-5 (4 px)
    empty = np.zeros((HEIGHT, WIDTH), dtype=bool)
    c = _mask(slice(6, 9), slice(10, 14))  # 3 x 4 = 12 px
    scratch = ModelDetections(
        damage_type="scratch", class_names=["BG", "scratch"],
        boxes=np.array([[1, 2, 4, 6], [2, 4, 5, 9], [0, 0, 2, 2]]),
        class_ids=np.array([1, 1, 1]), scores=np.array([0.95, 0.7, 0.99]),
        masks=np.stack([a, b, empty], axis=2),
    )
    dent = ModelDetections(
        damage_type="dent", class_names=["BG", "dent"], boxes=np.array([[6, 10, 9, 14]]),
        class_ids=np.array([1]), scores=np.array([0.8]), masks=c[:, :, None],
    )
    return [scratch, dent]


MODELS = [ModelInfo("scratch", "mask_cnn_scratch.h5", "v1", "resnet101", 0.5),
          ModelInfo("dent", "mask_cnn_dent.h5", "v2", "resnet50", 0.5)]
TIMINGS = {"inference": 12.3456, "postprocess": 1.0, "total": 13.3456}


def _build(**option_values) -> dict:
    """Without grouping unless asked: these tests are about the other rules (a and b overlap by 4/12 of a)."""
    option_values.setdefault("merge", "none")
    return build_response((HEIGHT, WIDTH), _detections(), MODELS, InferenceOptions(**option_values), TIMINGS)


def test_overlapping_detections_of_one_type_are_grouped_by_default():
    grouped = build_response((HEIGHT, WIDTH), _detections(), MODELS, InferenceOptions(), TIMINGS)
    validate_response(grouped)
    scratch = [d for d in grouped["damages"] if d["type"] == "scratch"]
    assert [(d["score"], d["area_px"], d["parts"]) for d in scratch] == [(0.95, 12 + 15 - 4, 2)]
    assert scratch[0]["bbox"] == {"x": 2, "y": 1, "width": 7, "height": 4}  # the union of the two boxes
    assert grouped["totals"]["area_px"] == _build()["totals"]["area_px"] == 35  # totals stay unions
    assert grouped["totals"]["by_type"]["scratch"]["count"] == 1
    assert [d["parts"] for d in _build()["damages"]] == [1, 1, 1]


def test_damages_are_sorted_with_exact_areas_and_polygons():
    response = _build(polygon_tolerance=0.0)
    validate_response(response)
    assert response["image"] == {"width": 20, "height": 10}
    assert response["damage_count"] == 3  # the empty-mask detection is dropped despite its 0.99
    assert [(d["type"], d["score"]) for d in response["damages"]] == [
        ("scratch", 0.95), ("dent", 0.8), ("scratch", 0.7)]
    first = response["damages"][0]
    assert first["bbox"] == {"x": 2, "y": 1, "width": 4, "height": 3}
    assert first["polygons"] == [[[[2, 1], [6, 1], [6, 4], [2, 4]]]]
    assert first["area_px"] == 12 and first["area_fraction"] == 12 / 200
    assert first["class_name"] == "scratch" and "area" not in first and "mask" not in first
    assert response["timings_ms"] == {"inference": 12.346, "postprocess": 1.0, "total": 13.346}
    assert response["models"][1]["type"] == "dent" and response["models"][1]["version"] == "v2"


def test_totals_are_unions():
    totals = _build()["totals"]
    assert totals["area_px"] == 12 + 15 - 4 + 12 == 35
    assert totals["area_fraction"] == 35 / 200
    assert totals["by_type"] == {
        "scratch": {"count": 2, "area_px": 23, "area_fraction": 23 / 200},
        "dent": {"count": 1, "area_px": 12, "area_fraction": 12 / 200},
    }


def test_min_score_max_instances_and_types():
    response = _build(min_score=0.75)
    assert [d["score"] for d in response["damages"]] == [0.95, 0.8]
    assert response["totals"]["area_px"] == 24

    response = _build(max_instances=1)
    assert response["damage_count"] == 1
    assert response["totals"]["by_type"]["dent"] == {"count": 0, "area_px": 0, "area_fraction": 0.0}

    response = _build(types=("dent",))
    validate_response(response)
    assert [d["type"] for d in response["damages"]] == ["dent"]
    assert list(response["totals"]["by_type"]) == ["dent"]
    assert response["options"]["types"] == ["dent"]


def test_calibrated_areas():
    options = InferenceOptions.from_mapping({"frame_width": "14", "frame_height": "18", "merge": "none"})
    response = build_response((HEIGHT, WIDTH), _detections(), MODELS, options, TIMINGS)
    validate_response(response)
    pixel_area = (14 / 20) * (18 / 10)  # in^2 per pixel
    assert response["calibration"]["pixel_area"] == {"value": pytest.approx(pixel_area), "unit": "in^2"}
    assert response["damages"][0]["area"] == {"value": pytest.approx(12 * pixel_area), "unit": "in^2"}
    assert response["totals"]["area"]["value"] == pytest.approx(35 * pixel_area)
    assert response["totals"]["by_type"]["scratch"]["area"]["value"] == pytest.approx(23 * pixel_area)


def test_rle_masks_decode_to_the_input_masks():
    response = _build(masks="rle")
    validate_response(response)
    assert (rle_to_mask(response["damages"][0]["mask"]) == _mask(slice(1, 4), slice(2, 6))).all()
    assert response["damages"][0]["mask"]["size"] == [HEIGHT, WIDTH]


def test_no_detections_is_a_valid_empty_response():
    empty = ModelDetections("scratch", ["BG", "scratch"], np.zeros((0, 4), int), np.zeros(0, int),
                            np.zeros(0), np.zeros((HEIGHT, WIDTH, 0), bool))
    response = build_response((HEIGHT, WIDTH), [empty], MODELS[:1], InferenceOptions(), TIMINGS)
    validate_response(response)
    assert response["damages"] == [] and response["totals"]["area_px"] == 0
    assert response["totals"]["by_type"]["scratch"]["count"] == 0


def test_inconsistent_detections_are_rejected():
    with pytest.raises(ValueError, match="inconsistent"):
        ModelDetections("scratch", ["BG", "scratch"], np.zeros((2, 4)), [1], [0.9], np.zeros((4, 4, 1), bool))
    with pytest.raises(ValueError, match="masks are"):
        build_response((5, 5), _detections(), MODELS, InferenceOptions(), TIMINGS)


def test_schema_file_is_valid_draft_2020_12_and_json_round_trips():
    import jsonschema

    schema = load_schema()
    assert schema["$schema"].endswith("2020-12/schema") and SCHEMA_PATH.name == "response_schema.json"
    jsonschema.Draft202012Validator.check_schema(schema)
    validate_response(json.loads(json.dumps(_build(masks="rle"))))


@pytest.mark.parametrize("document", ["README.md", "docs/response.md"])
def test_the_documented_example_answers_match_the_schema(document):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / document).read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    examples = [json.loads(block) for block in blocks if '"schema_version"' in block]
    assert examples, f"{document} shows no example answer"
    for example in examples:
        validate_response(example)
        assert example["schema_version"] == SCHEMA_VERSION


def _broken(mutate):
    response = copy.deepcopy(_build())
    mutate(response)
    return response


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.pop("damages"),
        lambda r: r.update(damage_count=2),
        lambda r: r["damages"][0].update(score=1.5),
        lambda r: r["damages"][0].update(type="Scratch!"),
        lambda r: r["damages"][0]["polygons"][0].__setitem__(0, [[0, 0], [1, 1]]),
        lambda r: r["damages"][0]["polygons"][0][0].__setitem__(0, [0.5, 1]),
        lambda r: r["damages"][0].update(area={"value": 1.0, "unit": "in^2"}),
        lambda r: r["damages"][0].update(surprise=1),
        lambda r: r["damages"][0].update(id=5),
        lambda r: r["damages"].reverse(),
        lambda r: r["damages"][0]["bbox"].update(x=19),
        lambda r: r["totals"].update(area_px=1),
        lambda r: r["totals"]["by_type"]["dent"].update(count=5),
        lambda r: r["timings_ms"].pop("total"),
        lambda r: r.update(models=[]),
    ],
)
def test_broken_responses_are_rejected(mutate):
    with pytest.raises(InvalidResponse):
        validate_response(_broken(mutate))
