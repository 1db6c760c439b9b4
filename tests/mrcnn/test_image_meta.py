"""mrcnn.image_meta: matterport's layout, parse/compose round trips, TF parse."""

from __future__ import annotations

import numpy as np
import pytest

from mrcnn.image_meta import ImageMeta, compose_image_meta, meta_size, parse_image_meta, parse_image_meta_graph


def test_layout_matches_matterport():
    meta = compose_image_meta(7, (350, 590, 3), (1024, 1024, 3), (208, 0, 815, 1024), 1.7355932, [1, 0, 1])
    assert meta.shape == (meta_size(3),) == (15,)
    np.testing.assert_allclose(meta, [7, 350, 590, 3, 1024, 1024, 3, 208, 0, 815, 1024, 1.7355932, 1, 0, 1])


def test_parse_batch_types_and_values():
    metas = np.stack([
        compose_image_meta(1, (10, 20, 3), (64, 64, 3), (22, 0, 42, 64), 3.2, [0, 0]),
        compose_image_meta(2, (30, 40, 3), (64, 64, 3), (8, 0, 56, 64), 1.6, [1, 1]),
    ])
    parsed = parse_image_meta(metas)
    assert parsed["image_id"].tolist() == [1, 2]
    assert parsed["original_image_shape"].tolist() == [[10, 20, 3], [30, 40, 3]]
    assert parsed["window"].dtype == np.int32
    assert parsed["window"].tolist()[1] == [8, 0, 56, 64]
    np.testing.assert_allclose(parsed["scale"], [3.2, 1.6], rtol=1e-6)
    assert parsed["active_class_ids"].tolist() == [[0, 0], [1, 1]]


def test_dataclass_round_trip():
    meta = ImageMeta(3, (11, 13, 3), (64, 64, 3), (1, 2, 3, 4), 0.5, np.array([1, 0, 1, 1], np.int32))
    vector = meta.to_vector()
    back = ImageMeta.from_vector(vector)
    assert back.image_id == 3 and back.original_image_shape == (11, 13, 3) and back.window == (1, 2, 3, 4)
    assert back.scale == 0.5
    np.testing.assert_array_equal(back.active_class_ids, [1, 0, 1, 1])
    np.testing.assert_array_equal(back.to_vector(), vector)


def test_graph_parse_matches_numpy():
    import tensorflow as tf

    metas = np.stack([compose_image_meta(5, (10, 20, 3), (64, 64, 3), (22, 0, 42, 64), 3.2, [1, 0])])
    parsed = parse_image_meta_graph(tf.constant(metas, tf.float32))
    np.testing.assert_allclose(parsed["window"].numpy(), [[22, 0, 42, 64]])
    np.testing.assert_allclose(parsed["image_shape"].numpy(), [[64, 64, 3]])
    np.testing.assert_allclose(parsed["scale"].numpy(), [3.2])
    np.testing.assert_allclose(parsed["active_class_ids"].numpy(), [[1, 0]])
    assert parsed["image_id"].shape == (1,)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="batch"):
        parse_image_meta(np.zeros(14))
    with pytest.raises(ValueError, match="window"):
        compose_image_meta(0, (1, 2, 3), (4, 5, 6), (1, 2, 3), 1.0, [0])
