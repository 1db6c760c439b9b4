"""PyramidROIAlign: bilinear sampling on an arange grid, level rule, order restoration, batch indices."""

from __future__ import annotations

import numpy as np
import pytest

from mrcnn.image_meta import compose_image_meta
from mrcnn.layers.roi_align import PyramidROIAlign, roi_align, roi_align_flat, roi_levels


def _grid(height, width, offset=0.0, batch=1):
    """Feature map [batch, h, w, 1] with value 10*y + x + offset + 1000*b (linear, so bilinear sampling is exact)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    maps = [10 * y + x + offset + 1000 * b for b in range(batch)]
    return np.stack(maps)[..., None].astype(np.float32)


def test_crop_samples_bin_corners_on_arange_grid():
    p2 = _grid(5, 5)
    maps = [p2, _grid(3, 3, 100), _grid(2, 2, 200), _grid(1, 1, 300)]
    boxes = np.array([[0.0, 0.0, 0.5, 1.0]], np.float32)  # small box -> level 2 for a 64x64 image
    out = roi_align_flat(boxes, np.array([0]), maps, 64.0 * 64.0, 3).numpy()[0, :, :, 0]
    # rows sampled at y = 0, 1, 2 (0.5 * 4 / 2 apart), columns at x = 0, 2, 4
    np.testing.assert_allclose(out, [[0, 2, 4], [10, 12, 14], [20, 22, 24]], atol=1e-5)


def test_fractional_positions_interpolate_bilinearly():
    maps = [_grid(5, 5), _grid(3, 3), _grid(2, 2), _grid(1, 1)]
    boxes = np.array([[0.125, 0.125, 0.375, 0.625]], np.float32)  # y 0.5..1.5, x 0.5..2.5
    out = roi_align_flat(boxes, np.array([0]), maps, 64.0 * 64.0, 2).numpy()[0, :, :, 0]
    np.testing.assert_allclose(out, [[5.5, 7.5], [15.5, 17.5]], atol=1e-5)


@pytest.mark.parametrize(
    "side, level",
    [
        (224 / 1024, 4),          # canonical size -> level 4
        (2 * 224 / 1024, 5),
        (224 / 1024 / 2, 3),
        (224 / 1024 / 4, 2),
        (224 / 1024 / 64, 2),     # clipped below
        (0.99, 5),                # clipped above
        (224 / 1024 * 2 ** 0.45, 4),  # log2 ratio 0.45 rounds down
        (224 / 1024 * 2 ** 0.55, 5),  # 0.55 rounds up
        (0.0, 2),                 # zero-size (padding) boxes go to level 2
    ],
)
def test_level_rule(side, level):
    boxes = np.array([[0.1, 0.1, 0.1 + side, 0.1 + side]], np.float32)
    assert roi_levels(boxes, 1024.0 * 1024.0).numpy().tolist() == [level]


def test_levels_use_box_area_not_only_height():
    # 0.4375 x 0.109375 has the same area as a 0.21875 square -> level 4
    boxes = np.array([[0.0, 0.0, 0.4375, 0.109375]], np.float32)
    assert roi_levels(boxes, 1024.0 * 1024.0).numpy().tolist() == [4]


def test_each_box_reads_its_level_and_image_and_order_is_kept():
    area = 1024.0 * 1024.0
    maps = [_grid(4, 4, 1000 * level * 10, batch=2) for level in (2, 3, 4, 5)]
    sides = [0.4375, 224 / 1024 / 4, 224 / 1024, 224 / 1024 / 2]  # levels 5, 2, 4, 3 (interleaved on purpose)
    boxes = np.array([[[0, 0, s, s] for s in sides], [[0, 0, s, s] for s in reversed(sides)]], np.float32)
    out = roi_align(boxes, maps, area, 2).numpy()
    top_left = out[:, :, 0, 0, 0]
    expected_levels = [[5, 2, 4, 3], [3, 4, 2, 5]]
    for b in range(2):
        assert top_left[b].tolist() == [10000 * lv + 1000 * b for lv in expected_levels[b]]


def test_layer_reads_image_area_from_first_image_meta():
    meta = compose_image_meta(0, (64, 64, 3), (64, 64, 3), (0, 0, 64, 64), 1.0, np.zeros(2))[None].astype(np.float32)
    maps = [_grid(16, 16), _grid(8, 8, 100), _grid(4, 4, 200), _grid(2, 2, 300)]
    boxes = np.array([[[0.0, 0.0, 0.2, 0.2], [0.0, 0.0, 1.0, 1.0]]], np.float32)
    layer = PyramidROIAlign([2, 2], name="roi_align_mask")
    out = layer([boxes, meta] + maps).numpy()
    assert out.shape == (1, 2, 2, 2, 1)
    # 0.2 box on a 64 px image: sqrt(0.04) * 64 / 224 -> log2 = -4.1 -> level 2; the full box -> level 2 too
    # (64/224 < 1), so both sample P2 at offset 0.
    assert out[0, 0, 0, 0, 0] == 0.0 and out[0, 1, 1, 1, 0] == pytest.approx(165.0)


def test_empty_box_list():
    maps = [_grid(4, 4), _grid(2, 2), _grid(1, 1), _grid(1, 1)]
    out = roi_align_flat(np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), maps, 4096.0, 3)
    assert out.shape == (0, 3, 3, 1)
