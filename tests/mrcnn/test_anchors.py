"""mrcnn.anchors: hand-computed anchors on a 2x2 map, matterport's order, count and first normalised anchor."""

from __future__ import annotations

import numpy as np
import pytest

from mrcnn import anchors as A
from mrcnn.config import Config

R2 = np.sqrt(2.0)


class _DefaultConfig(Config):
    NAME = "anchors_test"


def test_two_by_two_feature_map_hand_computed():
    got = A.generate_anchors(8, [0.5, 1, 2], (2, 2), feature_stride=4, anchor_stride=1)
    assert got.shape == (12, 4)
    # half sizes (h/2, w/2) per ratio: 0.5 -> (4*sqrt2, 2*sqrt2), 1 -> (4, 4), 2 -> (2*sqrt2, 4*sqrt2)
    half = np.array([[4 * R2, 2 * R2], [4.0, 4.0], [2 * R2, 4 * R2]])
    centres = [(0, 0), (0, 4), (4, 0), (4, 4)]  # y outer, x inner; top-left aligned
    expected = [[cy - hh, cx - hw, cy + hh, cx + hw] for cy, cx in centres for hh, hw in half]
    np.testing.assert_allclose(got, expected)


def test_anchor_stride_skips_cells():
    got = A.generate_anchors(8, [1], (3, 3), feature_stride=4, anchor_stride=2)
    centres_y = (got[:, 0] + got[:, 2]) / 2
    centres_x = (got[:, 1] + got[:, 3]) / 2
    np.testing.assert_allclose(centres_y, [0, 0, 8, 8])
    np.testing.assert_allclose(centres_x, [0, 8, 0, 8])


def test_pyramid_concatenates_levels_in_order():
    got = A.generate_pyramid_anchors((8, 16), [1], [(2, 2), (1, 1)], [4, 8], 1)
    assert got.shape == (5, 4)
    np.testing.assert_allclose(got[4], [-8, -8, 8, 8])
    np.testing.assert_allclose(got[1], [-4, 0, 4, 8])


def test_default_config_1024_count_and_first_anchor():
    config = _DefaultConfig()
    shapes = A.compute_backbone_shapes(config, (1024, 1024, 3))
    np.testing.assert_array_equal(shapes, [[256, 256], [128, 128], [64, 64], [32, 32], [16, 16]])
    anchors = A.get_anchors(config, (1024, 1024, 3))
    assert anchors.shape == (261888, 4)
    assert anchors.dtype == np.float32
    np.testing.assert_allclose(anchors[0], [-0.022119, -0.011059, 0.021141, 0.010082], atol=2e-6)
    # last anchor: P6 (stride 64, scale 512), cell (15, 15), ratio 2 -> h 512/sqrt2, w 512*sqrt2, centre 960
    h, w = 512 / R2, 512 * R2
    expected = (np.array([960 - h / 2, 960 - w / 2, 960 + h / 2, 960 + w / 2]) - [0, 0, 1, 1]) / 1023
    np.testing.assert_allclose(anchors[-1], expected, rtol=1e-6)
    assert A.get_anchors(config, (1024, 1024, 3)) is anchors  # cached
    assert not anchors.flags.writeable


def test_backbone_shapes_ceil_for_odd_sizes():
    config = _DefaultConfig()
    np.testing.assert_array_equal(A.compute_backbone_shapes(config, (130, 70)),
                                  [[33, 18], [17, 9], [9, 5], [5, 3], [3, 2]])


def test_callable_backbone_uses_compute_backbone_shape():
    class CallableConfig(Config):
        NAME = "c"
        BACKBONE = staticmethod(lambda x: x)
        COMPUTE_BACKBONE_SHAPE = staticmethod(lambda shape: np.array([[shape[0] // 4, shape[1] // 4]] * 5))

    assert A.compute_backbone_shapes(CallableConfig(), (64, 128)).tolist() == [[16, 32]] * 5


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="anchor_stride"):
        A.generate_anchors(8, [1], (2, 2), 4, 0)
    with pytest.raises(ValueError, match="one scale"):
        A.generate_pyramid_anchors((8,), [1], [(2, 2), (1, 1)], [4, 8], 1)
