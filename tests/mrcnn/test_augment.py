"""Joint image/mask augmentation: geometry moves image and masks together, brightness only the image."""

from __future__ import annotations

import numpy as np
import pytest

from mrcnn.data.augment import Augmenter, affine, brightness, hflip


def _square(height=32, width=40):
    image = np.zeros([height, width, 3], np.uint8)
    masks = np.zeros([height, width, 2], bool)
    image[8:16, 4:12] = 200
    masks[8:16, 4:12, 0] = True
    masks[20:24, 30:36, 1] = True
    return image, masks


def test_hflip_mirrors_both():
    image, masks = _square()
    flipped_image, flipped_masks = hflip(image, masks)
    assert flipped_image[8:16, 40 - 12 : 40 - 4].min() == 200
    assert flipped_masks[8:16, 28:36, 0].all() and flipped_masks[:, :, 0].sum() == 64
    np.testing.assert_array_equal(hflip(*hflip(image, masks))[1], masks)


def test_affine_translation_moves_image_and_masks_alike():
    image, masks = _square()
    moved_image, moved_masks = affine(image, masks, translate_yx=(3, 5))
    assert moved_masks[11:19, 9:17, 0].all() and moved_masks[:, :, 0].sum() == 64
    assert moved_image[11:19, 9:17].min() == 200 and moved_image.dtype == np.uint8
    assert moved_masks.dtype == bool and moved_masks.shape == masks.shape


def test_affine_rotation_180_equals_double_flip():
    image, masks = _square(33, 41)  # odd sizes: the centre is a pixel, so the rotation is exact
    _, rotated = affine(image, masks, rotation_deg=180)
    np.testing.assert_array_equal(rotated, masks[::-1, ::-1])


def test_affine_scale_keeps_mask_on_image_content():
    image, masks = _square()
    scaled_image, scaled_masks = affine(image, masks, scale=1.1, rotation_deg=7)
    inside = scaled_image[scaled_masks[:, :, 0]]
    assert inside.mean() > 150  # the mask still covers the bright square


def test_brightness_clips_and_leaves_masks_alone():
    image = np.array([[[100, 200, 250]]], np.uint8)
    np.testing.assert_array_equal(brightness(image, 1.2), [[[120, 240, 255]]])
    with pytest.raises(ValueError):
        brightness(image, -1)


def test_augmenter_is_reproducible_and_validates():
    image, masks = _square()
    first = Augmenter(seed=3, flip_prob=1.0, affine_prob=1.0, brightness_prob=1.0)(image, masks)
    second = Augmenter(seed=3, flip_prob=1.0, affine_prob=1.0, brightness_prob=1.0)(image, masks)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[0].shape == image.shape and first[1].shape == masks.shape
    with pytest.raises(ValueError):
        Augmenter(flip_prob=2.0)
    with pytest.raises(ValueError, match="masks"):
        Augmenter()(image, masks[:10])
