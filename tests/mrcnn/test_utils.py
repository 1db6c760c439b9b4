"""mrcnn.utils (and mrcnn.resize / mrcnn.dataset behind it): matterport's resize rules, masks, boxes, Dataset."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import skimage.transform
from PIL import Image

from mrcnn import resize as R
from mrcnn import utils


def skimage_resize(image, shape):
    """The exact call matterport's utils.resize makes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skimage.transform.resize(image, shape, order=1, mode="constant", cval=0, clip=True,
                                        preserve_range=True, anti_aliasing=False)


def test_resize_image_worked_example_square():
    image = np.full((350, 590, 3), 200, np.uint8)
    out, window, scale, padding, crop = utils.resize_image(image, min_dim=800, max_dim=1024, mode="square")
    assert out.shape == (1024, 1024, 3) and out.dtype == np.uint8
    assert window == (208, 0, 815, 1024)
    assert scale == pytest.approx(1024 / 590)
    assert padding == [(208, 209), (0, 0), (0, 0)]
    assert crop is None
    assert out[:208].max() == 0 and out[815:].max() == 0
    assert out[300, 500].tolist() == [200, 200, 200]


def test_resize_image_pixels_match_skimage_and_truncate_to_input_dtype():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3)).astype(np.uint8)
    out, window, scale, _, _ = utils.resize_image(image, min_dim=64, max_dim=128, mode="square")
    assert scale == pytest.approx(64 / 37) and window == (32, 18, 96, 110)  # 37->64, 53->round(91.68)=92
    expected = skimage_resize(image, (64, 92)).astype(np.uint8)
    np.testing.assert_array_equal(out[32:96, 18:110], expected)


def test_resize_image_none_and_min_scale():
    image = np.zeros((30, 50, 3), np.uint8)
    out, window, scale, padding, crop = utils.resize_image(image, 800, 1024, mode="none")
    assert out is image and window == (0, 0, 30, 50) and scale == 1 and crop is None
    # min_dim never shrinks; min_scale forces at least 2x; square caps at max_dim
    _, window, scale, _, _ = utils.resize_image(image, min_dim=10, max_dim=128, min_scale=2, mode="square")
    assert scale == 2 and window == (34, 14, 94, 114)


def test_resize_image_pad64_odd_size():
    image = np.ones((65, 130, 3), np.uint8)
    out, window, scale, padding, _ = utils.resize_image(image, min_dim=64, max_dim=1024, mode="pad64")
    assert scale == 1 and out.shape == (128, 192, 3)
    assert padding == [(31, 32), (31, 31), (0, 0)]
    assert window == (31, 31, 96, 161)
    with pytest.raises(ValueError, match="multiple of 64"):
        utils.resize_image(image, min_dim=100, mode="pad64")


def test_resize_image_crop_uses_random_module():
    image = np.arange(100 * 120).reshape(100, 120, 1).astype(np.float32)
    random.seed(3)
    out, window, scale, _, crop = utils.resize_image(image, min_dim=64, mode="crop")
    random.seed(3)
    y, x = random.randint(0, 36), random.randint(0, 56)
    assert crop == (y, x, 64, 64) and window == (0, 0, 64, 64) and scale == 1
    np.testing.assert_array_equal(out, image[y:y + 64, x:x + 64])


def test_resize_image_rejects_bad_mode_and_shape():
    with pytest.raises(ValueError, match="resize mode"):
        utils.resize_image(np.zeros((4, 4, 3)), mode="stretch")
    with pytest.raises(ValueError, match="image must be"):
        utils.resize_image(np.zeros((0, 4, 3)), 8, 8)


def test_resize_mask_follows_image():
    mask = np.zeros((35, 59, 2), bool)
    mask[10:20, 5:30, 0] = True
    mask[:, 50:, 1] = True
    image, window, scale, padding, crop = utils.resize_image(np.zeros((35, 59, 3), np.uint8), 80, 128)
    resized = utils.resize_mask(mask, scale, padding, crop)
    assert resized.shape == (128, 128, 2) and resized.dtype == bool
    boxes = utils.extract_bboxes(resized)
    y1, x1, y2, x2 = window
    assert boxes[1].tolist()[0] == y1 and boxes[1].tolist()[2] == y2 and boxes[1][3] == x2
    assert resized[:y1].sum() == 0


def test_extract_bboxes_hand_computed():
    mask = np.zeros((6, 7, 3), bool)
    mask[1:3, 2:5, 0] = True
    mask[5, 6, 1] = True
    boxes = utils.extract_bboxes(mask)
    assert boxes.dtype == np.int32
    assert boxes.tolist() == [[1, 2, 3, 5], [5, 6, 6, 7], [0, 0, 0, 0]]


def test_resize_bilinear_bit_identical_to_skimage_on_odd_sizes():
    rng = np.random.default_rng(1)
    for out_shape in [(1, 1), (3, 97), (29, 27), (57, 13), (101, 203)]:
        for dtype in (np.float32, np.float64):
            mask = rng.random((28, 28)).astype(dtype)
            ours = R.resize_bilinear(mask, out_shape)
            theirs = skimage_resize(mask, out_shape)
            assert ours.dtype == theirs.dtype
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_resize_bilinear_images_bit_identical_to_skimage(dtype):
    rng = np.random.default_rng(11)
    for shape, out_shape in [((23, 31, 3), (40, 17)), ((50, 41, 4), (19, 83)), ((9, 13), (27, 5)), ((7, 8, 1), (8, 7))]:
        image = (rng.random(shape) * 200 + 20).astype(dtype)  # no zeros: the clip to [min, max] matters
        ours = R.resize_bilinear(image, out_shape)
        theirs = skimage_resize(image, out_shape)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)


def test_unmold_mask_matches_skimage_threshold_random_boxes():
    rng = np.random.default_rng(2)
    for trial in range(60):
        mask = rng.random((28, 28)).astype(np.float32)
        if trial % 4 == 0:
            mask = (0.5 + 0.5 * mask).astype(np.float32)  # everything >= 0.5: clip fills the whole box
        if trial % 4 == 1:  # near-binary, like a trained head
            mask = (mask > 0.6).astype(np.float32) * np.float32(0.98) + np.float32(0.01)
        y1, x1 = rng.integers(0, 40, 2)
        h, w = rng.integers(1, 90, 2) | 1  # odd sizes
        bbox = np.array([y1, x1, y1 + h, x1 + w])
        ours = utils.unmold_mask(mask, bbox, (140, 150, 3))
        expected = np.zeros((140, 150), bool)
        expected[y1:y1 + h, x1:x1 + w] = skimage_resize(mask, (h, w)) >= 0.5
        np.testing.assert_array_equal(ours, expected)


def test_unmold_mask_threshold_band_uses_exact_values():
    # Values placed right at the threshold: the float32 fast path cannot decide these, the exact path must.
    mask = np.full((28, 28), 0.5, np.float32)
    mask[::2] = np.float32(0.49999997)
    ours = utils.unmold_mask(mask, (0, 0, 61, 33), (61, 33))
    np.testing.assert_array_equal(ours, skimage_resize(mask, (61, 33)) >= 0.5)


def test_minimize_expand_round_trip():
    mask = np.zeros((40, 50, 1), bool)
    mask[5:35, 10:40, 0] = True
    mask[15:25, 20:30, 0] = False
    bbox = utils.extract_bboxes(mask)
    mini = utils.minimize_mask(bbox, mask, (56, 56))
    assert mini.shape == (56, 56, 1) and mini.dtype == bool
    expected_mini = np.around(skimage_resize(mask[5:35, 10:40, 0].astype(float), (56, 56))).astype(bool)
    np.testing.assert_array_equal(mini[:, :, 0], expected_mini)
    back = utils.expand_mask(bbox, mini, (40, 50, 3))
    assert (back != mask).mean() < 0.01
    with pytest.raises(ValueError, match="area of zero"):
        utils.minimize_mask(np.array([[3, 3, 3, 9]]), mask, (56, 56))


def test_non_max_suppression_hand_computed():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]])
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # IoU(3, 0) = 90/100 -> 0 removed; IoU(3, 1) = 72/(90+100-72) = 0.61 -> removed at 0.5
    keep = utils.non_max_suppression(boxes, scores, 0.5)
    assert keep.tolist() == [3, 2] and keep.dtype == np.int32
    assert utils.non_max_suppression(boxes, scores, 0.95).tolist() == [3, 0, 1, 2]


def test_trim_zeros():
    assert utils.trim_zeros(np.array([[1, 2, 3, 4], [0, 0, 0, 0], [0, 0, 0, 1]])).tolist() == [[1, 2, 3, 4],
                                                                                                [0, 0, 0, 1]]


def _toy_dataset():
    dataset = utils.Dataset()
    dataset.add_class("cars", 1, "scratch, light")
    dataset.add_class("cars", 2, "dent")
    dataset.add_class("cars", 1, "duplicate ignored")
    dataset.add_class("coco", 12, "stop sign")
    dataset.add_image("cars", "a.jpg", "/nowhere/a.jpg", width=3)
    dataset.add_image("coco", 77, "/nowhere/b.jpg")
    dataset.prepare()
    return dataset


def test_dataset_prepare_maps():
    dataset = _toy_dataset()
    assert dataset.num_classes == 4 and dataset.class_names == ["BG", "scratch", "dent", "stop sign"]
    assert dataset.image_ids.tolist() == [0, 1] and dataset.num_images == 2
    assert dataset.source_class_ids == {"": [0], "cars": [0, 1, 2], "coco": [0, 3]}
    assert dataset.map_source_class_id("coco.12") == 3
    assert dataset.get_source_class_id(2, "cars") == 2
    assert dataset.image_from_source_map["coco.77"] == 1
    assert dataset.image_info[0]["width"] == 3
    assert dataset.source_image_link(1) == "/nowhere/b.jpg"
    with pytest.raises(ValueError, match="dot"):
        dataset.add_class("a.b", 1, "x")
    with pytest.raises(ValueError, match="belongs to source"):
        dataset.get_source_class_id(3, "cars")


def test_dataset_default_load_mask_is_empty():
    masks, class_ids = _toy_dataset().load_mask(0)
    assert masks.shape == (0, 0, 0) and class_ids.shape == (0,) and class_ids.dtype == np.int32


def test_dataset_load_image_grey_rgba_and_misnamed_jpeg(tmp_path):
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0] = 10
    rgba[..., 3] = 99
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((5, 6), 77, np.uint8), "L").save(tmp_path / "grey.png")
    Image.fromarray(np.full((5, 6, 3), 128, np.uint8)).save(tmp_path / "jpeg.png", format="JPEG")
    dataset = utils.Dataset()
    for name in ("rgba", "grey", "jpeg"):
        dataset.add_image("t", name, str(tmp_path / f"{name}.png"))
    dataset.prepare()
    rgba_out, grey_out, jpeg_out = (dataset.load_image(i) for i in dataset.image_ids)
    assert rgba_out.shape == grey_out.shape == jpeg_out.shape == (5, 6, 3)
    assert rgba_out[0, 0].tolist() == [10, 0, 0]
    assert grey_out[0, 0].tolist() == [77, 77, 77]
    assert abs(int(jpeg_out[2, 2, 0]) - 128) <= 2


def test_utils_exports_matterport_names():
    for name in ["Dataset", "resize_image", "resize_mask", "extract_bboxes", "compute_overlaps_masks",
                 "compute_matches", "compute_ap", "compute_ap_range", "compute_recall", "norm_boxes", "denorm_boxes",
                 "generate_pyramid_anchors", "download_trained_weights", "COCO_MODEL_URL", "minimize_mask",
                 "expand_mask", "unmold_mask", "non_max_suppression", "trim_zeros", "batch_slice", "compute_iou",
                 "compute_overlaps", "apply_box_deltas", "box_refinement", "generate_anchors", "resize"]:
        assert callable(getattr(utils, name)) or isinstance(getattr(utils, name), str), name


def test_visualize_apply_mask_and_display_instances(tmp_path):
    from mrcnn import visualize

    image = np.full((4, 4, 3), 100.0)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    out = visualize.apply_mask(image, mask, (1.0, 0.0, 0.5), alpha=0.5)
    assert out[1, 1].tolist() == [177.5, 50.0, 113.75] and out[0, 0].tolist() == [100.0, 100.0, 100.0]
    colors = visualize.random_colors(3)
    assert len(set(colors)) == 3 and all(0 <= c <= 1 for rgb in colors for c in rgb)

    masks = np.zeros((20, 30, 2), bool)
    masks[2:8, 3:9, 0] = True
    masks[10:20, 20:30, 1] = True  # touches the border: contour must still close
    boxes = utils.extract_bboxes(masks)
    figure = visualize.display_instances(np.zeros((20, 30, 3), np.uint8), boxes, masks, np.array([1, 2]),
                                         ["BG", "scratch", "dent"], np.array([0.9, 0.8]), figsize=(3, 2))
    ax = figure.axes[0]
    assert len(ax.patches) == 4  # two boxes + two outlines
    assert [t.get_text() for t in ax.texts] == ["scratch 0.900", "dent 0.800"]
    figure.savefig(tmp_path / "vis.png")
    assert (tmp_path / "vis.png").stat().st_size > 0
    with pytest.raises(ValueError, match="one entry per instance"):
        visualize.display_instances(np.zeros((20, 30, 3)), boxes[:1], masks, np.array([1, 2]), ["BG", "a", "b"])


def test_paste_masks_restores_blas_thread_count():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    masks = np.random.default_rng(3).random((3, 28, 28)).astype(np.float32)
    out = R.paste_masks(masks, np.array([[0, 0, 50, 60], [10, 10, 90, 99], [5, 5, 6, 6]]), (100, 100))
    assert out.shape == (3, 100, 100) and out.dtype == bool
    after = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    assert before == after
