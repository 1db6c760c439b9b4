"""render: splash, polygon rasterisation (inverse of mask_to_polygons), outlines and annotate."""

from __future__ import annotations

import numpy as np
import pytest

from car_damage.answer.geometry import mask_to_polygons
from car_damage.answer.options import InferenceOptions
from car_damage.answer.render import (
    TYPE_COLOURS,
    annotate,
    color_splash,
    draw_outlines,
    polygons_to_mask,
    response_masks,
    type_colour,
)
from car_damage.answer.response import ModelDetections, ModelInfo, build_response


def _image(height: int = 60, width: int = 80) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _response(image: np.ndarray, **option_values) -> dict:
    height, width = image.shape[:2]
    mask = np.zeros((height, width), dtype=bool)
    mask[20:40, 10:50] = True
    mask[28:32, 25:30] = False  # a hole
    detections = ModelDetections("scratch", ["BG", "scratch"], np.array([[20, 10, 40, 50]]), np.array([1]),
                                 np.array([0.97]), mask[:, :, None])
    model = ModelInfo("scratch", "mask_cnn_scratch.h5", "v1", "tiny", 0.5)
    return build_response((height, width), [detections], [model], InferenceOptions(**option_values),
                          {"inference": 1.0, "postprocess": 1.0, "total": 2.0})


def test_color_splash_keeps_colour_only_inside_masks():
    image = np.array([[[200, 100, 0], [10, 20, 30]]], dtype=np.uint8)
    masks = np.array([[[True], [False]]])
    splash = color_splash(image, masks)
    assert splash[0, 0].tolist() == [200, 100, 0]
    grey = round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)
    assert splash[0, 1].tolist() == [grey, grey, grey]
    assert color_splash(image, np.zeros((1, 2, 0), bool))[0, 0].tolist() == [round(0.299 * 200 + 0.587 * 100)] * 3
    with pytest.raises(ValueError):
        color_splash(image, np.zeros((3, 3), bool))


def test_polygons_to_mask_inverts_mask_to_polygons():
    rng = np.random.default_rng(5)
    for _ in range(60):
        mask = rng.random((rng.integers(2, 20), rng.integers(2, 20))) < rng.uniform(0.3, 0.8)
        assert (polygons_to_mask(mask_to_polygons(mask, 0), mask.shape) == mask).all()


def test_response_masks_from_rle_and_polygons_agree():
    image = _image()
    exact = response_masks(_response(image, masks="rle"))
    from_polygons = response_masks(_response(image, polygon_tolerance=0))
    assert exact.shape == (60, 80, 1) and exact.sum() == 20 * 40 - 4 * 5
    assert (exact == from_polygons).all()


def test_draw_outlines_marks_boundary_and_label_only():
    image = np.full((60, 80, 3), 128, dtype=np.uint8)
    out = draw_outlines(image, _response(image))
    colour = list(TYPE_COLOURS["scratch"])
    assert out[20, 30].tolist() == colour  # top edge of the polygon (y = 20)
    assert out[28, 27].tolist() == colour  # hole outline (y = 28)
    assert out[55, 75].tolist() == [128, 128, 128]  # far from everything
    assert out[25, 40].tolist() == [128, 128, 128]  # inside the damage, away from edges
    assert (image == 128).all()  # the input is not modified


def test_draw_outlines_accepts_raw_detections():
    image = np.full((30, 30, 3), 0, dtype=np.uint8)
    mask = np.zeros((30, 30), dtype=bool)
    mask[10:20, 10:20] = True
    detections = ModelDetections("dent", ["BG", "dent"], np.array([[10, 10, 20, 20]]), [1], [0.5], mask[:, :, None])
    out = draw_outlines(image, [detections])
    assert out[10, 15].tolist() == list(TYPE_COLOURS["dent"])


def test_annotate_is_splash_plus_outlines():
    image = _image()
    response = _response(image)
    out = annotate(image, response)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert out[25, 40].tolist() == image[25, 40].tolist()  # damaged pixel keeps its colour
    far = image[55, 75].astype(float) @ np.array([0.299, 0.587, 0.114])
    assert out[55, 75].tolist() == [round(far)] * 3  # undamaged pixel is grey
    with pytest.raises(ValueError):
        annotate(image[:10], response)


def test_type_colours_are_stable():
    assert type_colour("scratch") == TYPE_COLOURS["scratch"]
    assert type_colour("paint-chip") == type_colour("paint-chip")
