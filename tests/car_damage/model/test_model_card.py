"""Model card (sidecar JSON) and config overrides: round trip, validation, names."""

from __future__ import annotations

import json

import numpy as np
import pytest

from car_damage.model.card import ModelCard, card_path_for, damage_type_from_filename
from car_damage.model.config import DamageConfig, jsonable_overrides, make_config


def test_make_config_applies_overrides_and_derives():
    config = make_config(NUM_CLASSES=3, IMAGE_MAX_DIM=512, IMAGE_MIN_DIM=512, BBOX_STD_DEV=[0.1, 0.1, 0.3, 0.3])
    assert isinstance(config, DamageConfig)
    assert config.IMAGE_META_SIZE == 15
    assert config.IMAGE_SHAPE.tolist() == [512, 512, 3]
    assert isinstance(config.BBOX_STD_DEV, np.ndarray)
    assert DamageConfig.NUM_CLASSES == 2, "overrides must not leak into the base class"


def test_make_config_rejects_unknown_attribute():
    with pytest.raises(ValueError, match="NUM_CLASS"):
        make_config(NUM_CLASS=3)


def test_old_system_defaults():
    config = DamageConfig()
    assert (config.BACKBONE, config.IMAGES_PER_GPU, config.NUM_CLASSES) == ("resnet101", 1, 2)
    assert config.DETECTION_MIN_CONFIDENCE == 0.9
    assert jsonable_overrides(config) == {}


def test_card_round_trip_rebuilds_the_same_config(tmp_path):
    trained = make_config(BACKBONE="resnet50", IMAGE_MAX_DIM=512, IMAGE_MIN_DIM=400, IMAGES_PER_GPU=4,
                          MEAN_PIXEL=[1.0, 2.0, 3.0])
    card = ModelCard.from_config(trained, ["BG", "scratch"], "scratch", version="7")
    path = card.save(tmp_path / "mask_cnn_scratch.json")
    loaded = ModelCard.load(path)
    assert loaded == card
    config = loaded.to_config()
    assert config.BACKBONE == "resnet50" and config.IMAGE_MAX_DIM == 512 and config.IMAGE_MIN_DIM == 400
    assert config.IMAGES_PER_GPU == 1, "inference configs run one image per batch"
    np.testing.assert_allclose(config.MEAN_PIXEL, [1.0, 2.0, 3.0])
    assert config.NUM_CLASSES == 2 and config.NAME == "scratch"


def test_card_rejects_contradictions(tmp_path):
    with pytest.raises(ValueError, match="BG"):
        ModelCard("scratch", ["scratch"])
    with pytest.raises(ValueError, match="NUM_CLASSES=3"):
        ModelCard("scratch", ["BG", "scratch"], {"NUM_CLASSES": 3})
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelCard.load(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a model card"):
        ModelCard.load(bad)


@pytest.mark.parametrize(
    "name, expected",
    [("mask_cnn_scratch.h5", "scratch"), ("mask_rcnn_dent.h5", "dent"), ("mask_rcnn_Dent.h5", "dent"),
     ("weights.h5", None), ("mask_cnn_.h5", None), ("mask_cnn_scratch.json", None)],
)
def test_damage_type_from_filename(name, expected):
    assert damage_type_from_filename(name) == expected


def test_card_path_for():
    assert card_path_for("/m/mask_cnn_dent.h5").name == "mask_cnn_dent.json"


def test_make_config_keeps_callables_unbound():
    def shapes(image_shape):
        return [[image_shape[0] // s, image_shape[1] // s] for s in (4, 8, 16, 32, 64)]

    def backbone(image, stage5=True, train_bn=None):
        return image

    config = make_config(BACKBONE=backbone, COMPUTE_BACKBONE_SHAPE=shapes)
    assert config.COMPUTE_BACKBONE_SHAPE((64, 128)) == [[16, 32], [8, 16], [4, 8], [2, 4], [1, 2]]
    assert config.BACKBONE("x") == "x"
