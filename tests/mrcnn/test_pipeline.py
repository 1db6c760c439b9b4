"""Training input pipeline: sample loading, batch layout, error surfacing, augmentation hooks."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tests.conftest import RectanglesDataset, tiny_config

RECTS = [[(10, 20, 50, 100)], [(40, 40, 90, 80), (5, 120, 30, 150)]]


def test_load_image_gt_resizes_and_builds_mini_masks():
    from mrcnn.data.pipeline import load_image_gt

    config = tiny_config()
    sample = load_image_gt(RectanglesDataset(RECTS), config, 1)
    assert sample.image.shape == (128, 128, 3)
    # 160 px wide -> scale 0.8, 96 * 0.8 = 76.8 -> 77 rows padded to 128 (26 on top).
    np.testing.assert_array_equal(sample.class_ids, [1, 1])
    assert sample.masks.shape == (56, 56, 2) and sample.masks.dtype == bool
    assert sample.masks.all(axis=(0, 1)).all()  # a rectangle fills its own box's mini mask
    y1, x1, y2, x2 = sample.boxes[0]
    assert abs(x1 - 32) <= 1 and abs(x2 - 64) <= 1 and y2 - y1 == pytest.approx(40, abs=1)
    assert sample.image_meta.shape == (config.IMAGE_META_SIZE,)
    assert sample.image_meta[0] == 1  # the real image id


def test_batches_have_the_training_model_layout():
    from mrcnn.data.pipeline import TrainingBatches, training_anchors

    config = tiny_config(IMAGES_PER_GPU=2)
    batches = TrainingBatches(RectanglesDataset(RECTS), config, seed=0)
    images, metas, rpn_match, rpn_bbox, gt_class_ids, gt_boxes, gt_masks = next(iter(batches))
    num_anchors = training_anchors(config).shape[0]
    assert images.shape == (2, 128, 128, 3) and images.dtype == np.float32
    assert rpn_match.shape == (2, num_anchors, 1) and rpn_match.dtype == np.int32
    assert rpn_bbox.shape == (2, config.RPN_TRAIN_ANCHORS_PER_IMAGE, 4)
    assert gt_class_ids.shape == (2, config.MAX_GT_INSTANCES) and gt_masks.shape == (2, 56, 56, 100)
    counts = sorted(int(np.sum(ids > 0)) for ids in gt_class_ids)
    assert counts == [1, 2]
    for image_index in range(2):
        positives = int(np.sum(rpn_match[image_index] == 1))
        assert positives > 0
        assert np.all(rpn_bbox[image_index, positives:] == 0)
    # mean pixel subtracted
    assert images.min() < 0


def test_load_errors_are_logged_with_the_image_and_then_raised(caplog):
    from mrcnn.data.pipeline import SampleLoadError, TrainingBatches

    config = tiny_config()
    caplog.set_level(logging.ERROR, logger="mrcnn.data.pipeline")
    # One bad image out of two: skipped, logged with its id and path, training data still flows.
    batches = iter(TrainingBatches(RectanglesDataset(RECTS, fail_ids={0}), config, seed=0, max_errors=5))
    for _ in range(3):
        assert int(np.sum(next(batches)[4] > 0)) == 2  # always image 1
    assert "synthetic/0.png" in caplog.text
    # Every image broken: the error surfaces with the image id after max_errors failures.
    broken = iter(TrainingBatches(RectanglesDataset(RECTS, fail_ids={0, 1}), config, seed=0, max_errors=3))
    with pytest.raises(SampleLoadError, match=r"image \d \(synthetic/\d.png\): OSError"):
        next(broken)


def test_batch_feed_keeps_the_order_and_hands_producer_errors_to_the_consumer():
    from mrcnn.data.pipeline import BatchFeed, SampleLoadError, TrainingBatches

    config = tiny_config()
    direct = iter(TrainingBatches(RectanglesDataset(RECTS), config, seed=3))
    expected = [next(direct) for _ in range(5)]
    with BatchFeed(TrainingBatches(RectanglesDataset(RECTS), config, seed=3), prefetch=2) as feed:
        fed = [feed.next_batch() for _ in range(5)]
    for want, got in zip(expected, fed, strict=True):  # the same seeded sequence, array for array
        assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))
    assert not feed._thread.is_alive()  # close() stopped the producer waiting on its full queue

    broken = BatchFeed(TrainingBatches(RectanglesDataset(RECTS, fail_ids={0, 1}), config, seed=0, max_errors=3))
    for _ in range(2):  # raised where the training loop asks, and again on a later call (never a hang)
        with pytest.raises(SampleLoadError, match="synthetic"):
            broken.next_batch()
    broken.close()
    closed = BatchFeed(TrainingBatches(RectanglesDataset(RECTS), config, seed=0))
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.next_batch()
    with pytest.raises(ValueError, match="prefetch"):
        BatchFeed(TrainingBatches(RectanglesDataset(RECTS), config), prefetch=0)


def test_dataset_without_instances_is_an_error_not_a_hang():
    from mrcnn.data.pipeline import TrainingBatches

    with pytest.raises(ValueError, match="no image"):
        next(iter(TrainingBatches(RectanglesDataset([[], []]), tiny_config(), seed=0)))


def test_augmentation_runs_on_image_and_masks_and_respects_sources():
    from mrcnn.data.pipeline import TrainingBatches, load_image_gt

    calls = []

    def flip(image, masks):
        calls.append(masks.shape)
        return image[:, ::-1], masks[:, ::-1]

    dataset = RectanglesDataset(RECTS)
    plain = load_image_gt(dataset, tiny_config(), 0)
    flipped = load_image_gt(dataset, tiny_config(), 0, augmentation=flip)
    assert calls == [(128, 128, 1)]
    np.testing.assert_array_equal(flipped.boxes[0], [plain.boxes[0][0], 128 - plain.boxes[0][3],
                                                     plain.boxes[0][2], 128 - plain.boxes[0][1]])
    calls.clear()
    batches = iter(TrainingBatches(dataset, tiny_config(), augmentation=flip, no_augmentation_sources=["shapes"]))
    next(batches)
    assert calls == []

    def bad(image, masks):
        return image[:64], masks[:64]

    with pytest.raises(ValueError, match="changed shapes"):
        load_image_gt(dataset, tiny_config(), 0, augmentation=bad)


def test_tf_dataset_yields_the_same_layout():
    from mrcnn.data.pipeline import make_dataset

    data = make_dataset(RectanglesDataset(RECTS), tiny_config(), seed=0)
    (inputs,) = next(iter(data))
    assert len(inputs) == 7
    assert tuple(inputs[0].shape) == (1, 128, 128, 3) and inputs[6].dtype.name == "bool"


def test_non_callable_or_imgaug_style_augmentation_is_refused():
    from mrcnn.data.pipeline import TrainingBatches

    class ImgaugLike:
        def __call__(self, *args, **kwargs):
            return args

        def to_deterministic(self):
            return self

    for bad in ("fliplr", ImgaugLike()):
        with pytest.raises(TypeError, match="callable"):
            TrainingBatches(RectanglesDataset(RECTS), tiny_config(), augmentation=bad)
