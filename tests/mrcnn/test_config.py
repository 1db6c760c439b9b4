"""Config: matterport's attribute names, defaults, derived values and display() format."""

from __future__ import annotations

import numpy as np
import pytest

from mrcnn.config import LOSS_NAMES, Config


class CocoLike(Config):
    NAME = "coco"
    IMAGES_PER_GPU = 2
    NUM_CLASSES = 81


def test_matterport_defaults_and_derived_values():
    config = CocoLike()
    assert config.BATCH_SIZE == 2
    assert config.IMAGE_SHAPE.tolist() == [1024, 1024, 3]
    assert config.IMAGE_META_SIZE == 93
    assert config.BACKBONE == "resnet101"
    assert config.RPN_ANCHOR_SCALES == (32, 64, 128, 256, 512)
    assert config.BACKBONE_STRIDES == [4, 8, 16, 32, 64]
    assert config.POST_NMS_ROIS_INFERENCE == 1000 and config.PRE_NMS_LIMIT == 6000
    assert config.DETECTION_MIN_CONFIDENCE == 0.7 and config.DETECTION_NMS_THRESHOLD == 0.3
    np.testing.assert_allclose(config.MEAN_PIXEL, [123.7, 116.8, 103.9])
    np.testing.assert_allclose(config.BBOX_STD_DEV, [0.1, 0.1, 0.2, 0.2])
    assert set(config.LOSS_WEIGHTS) == set(LOSS_NAMES)
    assert config.TRAIN_BN is False and config.GRADIENT_CLIP_NORM == 5.0


def test_derived_values_follow_subclass_overrides():
    class Cropped(Config):
        NAME = "nucleus"
        IMAGE_RESIZE_MODE = "crop"
        IMAGE_MIN_DIM = 512
        IMAGES_PER_GPU = 6
        GPU_COUNT = 2
        NUM_CLASSES = 2

    config = Cropped()
    assert config.IMAGE_SHAPE.tolist() == [512, 512, 3]
    assert config.BATCH_SIZE == 12
    assert config.IMAGE_META_SIZE == 14


def test_display_lists_sorted_attributes(capsys):
    CocoLike().display()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "Configurations:"
    entries = [line for line in lines[2:] if line.strip()]
    names = [line.split()[0] for line in entries]
    assert names == sorted(names)
    assert "BATCH_SIZE                     2" in entries
    assert not any(name in ("display", "to_dict", "validate") for name in names)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"IMAGE_RESIZE_MODE": "stretch"}, "IMAGE_RESIZE_MODE"),
        ({"BACKBONE": "vgg16"}, "BACKBONE"),
        ({"NUM_CLASSES": 0}, "NUM_CLASSES"),
        ({"LOSS_WEIGHTS": {"rpn_loss": 1.0}}, "LOSS_WEIGHTS"),
        ({"OPTIMIZER": "adamw"}, "OPTIMIZER must be one of"),
        ({"BACKBONE": staticmethod(lambda image, stage5, train_bn: None)}, "COMPUTE_BACKBONE_SHAPE"),
    ],
)
def test_invalid_settings_raise_value_error(override, message):
    bad = type("Bad", (Config,), {"NAME": "bad", **override})
    with pytest.raises(ValueError, match=message):
        bad()
