"""grouping: hand-made masks of fragments, parallel scratches and a scratch inside a dent."""

from __future__ import annotations

import numpy as np
import pytest

from car_damage.answer.grouping import GroupingSettings, group_pieces, merge_masks, pieces_from_masks
from car_damage.answer.options import InferenceOptions
from car_damage.answer.response import ModelDetections, ModelInfo, build_response, validate_response
from tests.car_damage.answer.test_measure import _band

SHAPE = (200, 200)


def _groups(*masks, settings: GroupingSettings | None = None, stroke_type: bool = True) -> list[list[int]]:
    return group_pieces(pieces_from_masks(np.stack(masks, axis=-1), stroke_type), settings or GroupingSettings())


def test_two_overlapping_fragments_of_one_stroke_are_one_damage():
    first = _band(SHAPE, (20, 20), (100, 80), 5)
    second = _band(SHAPE, (80, 65), (170, 130), 5)  # overlaps the first by ~25 px of its length
    inter = (first & second).sum() / min(first.sum(), second.sum())
    assert inter < GroupingSettings().containment  # not by containment: by the stroke rule
    assert _groups(first, second) == [[0, 1]]
    assert _groups(first, second, settings=GroupingSettings(mode="none")) == [[0], [1]]


def test_pieces_of_one_stroke_across_a_small_gap_are_one_damage():
    first = _band(SHAPE, (20, 20), (100, 80), 5)
    second = _band(SHAPE, (108, 86), (170, 132), 5)  # a 10 px gap on the same line
    assert not (first & second).any()
    assert _groups(first, second) == [[0, 1]]
    assert _groups(first, second, settings=GroupingSettings(gap_px=2)) == [[0], [1]]
    far = _band(SHAPE, (140, 110), (190, 147), 5)  # 50 px further on: another damage
    assert _groups(first, far) == [[0], [1]]


def test_two_parallel_scratches_20_px_apart_stay_two():
    upper, lower = _band(SHAPE, (20, 50), (180, 50), 5), _band(SHAPE, (20, 70), (180, 70), 5)
    assert _groups(upper, lower) == [[0], [1]]
    assert _groups(upper, lower, settings=GroupingSettings(gap_px=40)) == [[0], [1]]  # even with a huge gap
    staggered = _band(SHAPE, (100, 70), (180, 70), 5)  # starts where the upper one runs, 20 px lower
    assert _groups(_band(SHAPE, (20, 50), (110, 50), 5), staggered) == [[0], [1]]


def test_crossing_and_t_scratches_stay_two():
    across, down = _band(SHAPE, (20, 100), (180, 100), 5), _band(SHAPE, (100, 20), (100, 180), 5)
    assert _groups(across, down) == [[0], [1]]
    stem = _band(SHAPE, (100, 110), (100, 180), 5)  # ends 8 px below the bar, perpendicular to it
    assert _groups(across, stem) == [[0], [1]]


def test_a_fragment_contained_in_a_blob_is_merged_by_containment():
    blob = np.zeros(SHAPE, dtype=bool)
    blob[40:120, 40:120] = True
    inside = np.zeros(SHAPE, dtype=bool)
    inside[60:100, 80:160] = True  # 40 x 80, half of it inside the blob
    assert _groups(blob, inside, stroke_type=False) == [[0, 1]]
    assert _groups(blob, inside, settings=GroupingSettings(containment=0.6), stroke_type=False) == [[0], [1]]


def test_merge_masks_unions_each_group_best_score_first():
    a, b = _band(SHAPE, (20, 20), (100, 80), 5), _band(SHAPE, (80, 65), (170, 130), 5)
    c = _band(SHAPE, (20, 170), (180, 170), 5)
    groups, merged = merge_masks(np.stack([a, b, c], -1), np.array([0.6, 0.9, 0.7]), GroupingSettings(), True)
    assert groups == [[1, 0], [2]]
    assert (merged[..., 0] == (a | b)).all() and (merged[..., 1] == c).all()


def _detections(damage_type, masks, scores):
    masks = np.stack(masks, axis=-1)
    boxes = []
    for k in range(masks.shape[-1]):
        rows, cols = np.nonzero(masks[..., k])
        boxes.append([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1])
    return ModelDetections(damage_type, ["BG", damage_type], np.array(boxes), np.ones(len(scores), int),
                           np.array(scores), masks)


def test_response_groups_within_a_type_never_across_types():
    a, b = _band(SHAPE, (20, 20), (100, 80), 5), _band(SHAPE, (80, 65), (170, 130), 5)
    inside_dent = _band(SHAPE, (60, 150), (110, 150), 4)
    dent = np.zeros(SHAPE, dtype=bool)
    dent[130:175, 40:130] = True
    detections = [_detections("scratch", [a, b, inside_dent], [0.8, 0.95, 0.9]),
                  _detections("dent", [dent], [0.85])]
    models = [ModelInfo("scratch", "mask_cnn_scratch.h5", "v", "tiny", 0.5, GroupingSettings()),
              ModelInfo("dent", "mask_cnn_dent.h5", "v", "tiny", 0.5, GroupingSettings())]
    timings = {"inference": 1.0, "postprocess": 1.0, "total": 2.0}
    response = build_response(SHAPE, detections, models, InferenceOptions(), timings)
    validate_response(response)
    assert response["damage_count"] == 3  # the two fragments as one; the scratch inside the dent stays apart
    first = response["damages"][0]
    assert (first["type"], first["score"], first["parts"], first["area_px"]) == ("scratch", 0.95, 2, int((a | b).sum()))
    rows, cols = np.nonzero(a | b)  # the union of the members' boxes = the union mask's box here
    assert first["bbox"] == {"x": cols.min(), "y": rows.min(), "width": cols.max() + 1 - cols.min(),
                             "height": rows.max() + 1 - rows.min()}
    assert first["stroke"]["length_px"] == pytest.approx(np.hypot(150, 110), abs=4)
    assert [d["parts"] for d in response["damages"]] == [2, 1, 1]
    assert "stroke" not in next(d for d in response["damages"] if d["type"] == "dent")
    assert response["totals"]["by_type"]["scratch"]["count"] == 2
    assert response["totals"]["area_px"] == int((a | b | inside_dent | dent).sum())
    plain = build_response(SHAPE, detections, models, InferenceOptions(merge="none"), timings)
    validate_response(plain)
    assert plain["damage_count"] == 4 and plain["totals"]["area_px"] == response["totals"]["area_px"]


def test_calibrated_lengths_are_validated_against_the_schema():
    bar = np.zeros((50, 200), dtype=bool)
    bar[20:25, 50:150] = True
    options = InferenceOptions.from_mapping({"pixels_per_unit": "10", "unit": "cm"})
    models = [ModelInfo("scratch", "mask_cnn_scratch.h5", "v", "tiny", 0.5, GroupingSettings())]
    response = build_response((50, 200), [_detections("scratch", [bar], [0.9])], models, options,
                              {"inference": 1.0, "postprocess": 1.0, "total": 2.0})
    validate_response(response)
    damage = response["damages"][0]
    assert damage["stroke"]["length"] == {"value": pytest.approx(10, abs=0.2), "unit": "cm"}
    assert damage["stroke"]["width"]["value"] == pytest.approx(0.5, abs=0.05)
    assert damage["oriented_box"]["length"] == {"value": pytest.approx(10), "unit": "cm"}
    assert damage["oriented_box"]["width"] == {"value": pytest.approx(0.5), "unit": "cm"}
    del damage["stroke"]["length"]
    with pytest.raises(ValueError, match="calibrated lengths"):
        validate_response(response)


def test_classes_of_one_model_are_never_grouped():
    scratch, dent = _band(SHAPE, (20, 20), (100, 80), 5), _band(SHAPE, (20, 20), (100, 80), 7)
    detections = ModelDetections("damage", ["BG", "scratch", "dent"], np.array([[0, 0, 90, 110]] * 2),
                                 np.array([1, 2]), np.array([0.9, 0.8]), np.stack([scratch, dent], -1))
    models = [ModelInfo("damage", "mask_cnn_damage.h5", "v", "tiny", 0.5, GroupingSettings())]
    response = build_response(SHAPE, [detections], models, InferenceOptions(), {"inference": 1.0, "total": 1.0,
                                                                                "postprocess": 0.0})
    validate_response(response)
    assert [(d["class_name"], d["parts"]) for d in response["damages"]] == [("scratch", 1), ("dent", 1)]
    assert "stroke" in response["damages"][0] and "stroke" not in response["damages"][1]


def test_a_detection_spanning_two_crossing_scratches_is_dropped():
    # The model's classic mistake on an X: two good detections, plus a better-scored one that runs along one
    # scratch and turns onto the other. Its union with either scratch branches, so it joins neither; it lies
    # inside the two scratches, so it adds no damage: 2, not 1 (overlap alone would absorb both into it).
    down, across = _band(SHAPE, (100, 20), (100, 180), 5), _band(SHAPE, (20, 100), (180, 100), 5)
    bend = _band(SHAPE, (100, 20), (100, 100), 5) | _band(SHAPE, (100, 100), (180, 100), 5)
    groups = _groups(bend, down, across)
    assert sorted(map(sorted, groups)) == [[1], [2]]
    old_rule = GroupingSettings()
    assert (bend & down).sum() / down.sum() >= old_rule.containment  # each scratch lies half inside the bend


def test_a_lambda_junction_stays_two_but_a_fragment_still_joins():
    # Two scratches meeting at a shallow angle (a lambda): a fragment of the long one overlaps both near the
    # junction; it joins the long one (their union is one stroke), the short arm stays its own damage.
    long_one = _band(SHAPE, (20, 20), (180, 180), 5)
    arm = _band(SHAPE, (100, 100), (40, 160), 5)
    fragment = _band(SHAPE, (70, 70), (130, 130), 5)
    groups = _groups(long_one, fragment, arm)
    assert sorted(map(sorted, groups)) == [[0, 1], [2]]


def test_a_detection_over_two_separate_scratches_is_grouped_blob_by_blob():
    # The best detection covers the end of one scratch and all of another, 15 px away: its mask falls apart in
    # two blobs, each joins the scratch it lies on, so the image has 2 damages, not 1.
    left = _band(SHAPE, (20, 40), (100, 40), 5)
    right = _band(SHAPE, (115, 40), (180, 100), 5)
    both = _band(SHAPE, (60, 40), (100, 40), 5) | right
    masks = np.stack([both, left, right], axis=-1)
    groups, merged = merge_masks(masks, np.array([0.99, 0.9, 0.8]), GroupingSettings(gap_px=0), True)
    assert sorted(map(sorted, groups)) == [[0, 1], [0, 2]]
    assert sorted(int(m.sum()) for m in np.moveaxis(merged, -1, 0)) == sorted([int(left.sum()), int(right.sum())])
    # Without the split, overlap alone would have put all three in one damage.
    assert (both & left).sum() / left.sum() < 0.6 and (both & right).sum() / right.sum() == 1.0
