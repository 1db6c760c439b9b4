"""Shared fixtures: the real data folder (skip or fail by REQUIRE_SHARED_DATA) and tiny model configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mrcnn.dataset import Dataset

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHARED_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def require_shared(*parts: str) -> Path:
    """Path under ../shared/data; skips the test when absent, fails instead when REQUIRE_SHARED_DATA=1."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"shared data not found at {path}"
        if os.environ.get("REQUIRE_SHARED_DATA") == "1":
            pytest.fail(message + " (REQUIRE_SHARED_DATA=1)")
        pytest.skip(message)
    return path


def require_tool(name: str, path: str | Path | None = None) -> str:
    """An external program the tests drive for real (nginx, hadolint): skipped when absent on a developer's
    machine, a failure when REQUIRE_TOOLS=1 (CI installs them, so a missing one must not pass quietly)."""
    import shutil

    found = str(path) if path is not None and Path(path).exists() else shutil.which(name)
    if found is None and name == "nginx" and Path("/usr/sbin/nginx").exists():
        found = "/usr/sbin/nginx"
    if found is None:
        message = f"{name} is not installed"
        if os.environ.get("REQUIRE_TOOLS") == "1":
            pytest.fail(message + " (REQUIRE_TOOLS=1)")
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def test_images_dir() -> Path:
    return require_shared("test_images")


@pytest.fixture(scope="session")
def seed_scratch_dir() -> Path:
    return require_shared("seed_scratch")


class RectanglesDataset(Dataset):
    """Synthetic images (``shape`` [H, W]) with bright rectangles (y1, x1, y2, x2) as instances of one class;
    ``fail_ids`` raise in load_image (a broken file)."""

    def __init__(self, rects_per_image, shape=(96, 160), background=60, foreground=220, fail_ids=(),
                 source="shapes"):
        super().__init__()
        self.shape, self.background, self.foreground = tuple(shape), background, foreground
        self.fail_ids = set(fail_ids)
        self.add_class(source, 1, "damage")
        for i, rects in enumerate(rects_per_image):
            self.add_image(source, image_id=i, path=f"synthetic/{i}.png", rects=rects)
        self.prepare()

    def load_image(self, image_id):
        if image_id in self.fail_ids:
            raise OSError(f"cannot read synthetic/{image_id}.png")
        image = np.full([*self.shape, 3], self.background, np.uint8)
        for y1, x1, y2, x2 in self.image_info[image_id]["rects"]:
            image[y1:y2, x1:x2] = self.foreground
        return image

    def load_mask(self, image_id):
        rects = self.image_info[image_id]["rects"]
        masks = np.zeros([*self.shape, len(rects)], bool)
        for i, (y1, x1, y2, x2) in enumerate(rects):
            masks[y1:y2, x1:x2, i] = True
        return masks, np.ones([len(rects)], np.int32)


def tiny_config(**overrides):
    """A small, fast inference config: 'tiny' backbone, 128 px square images, 2 classes."""
    from car_damage.model.config import make_config

    values = dict(
        NAME="tiny",
        BACKBONE="tiny",
        NUM_CLASSES=2,
        IMAGES_PER_GPU=1,
        IMAGE_MIN_DIM=128,
        IMAGE_MAX_DIM=128,
        RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128),
        TOP_DOWN_PYRAMID_SIZE=32,
        FPN_CLASSIF_FC_LAYERS_SIZE=64,
        RPN_CONV_CHANNELS=64,
        MASK_HEAD_CHANNELS=32,
        PRE_NMS_LIMIT=500,
        POST_NMS_ROIS_INFERENCE=100,
        POST_NMS_ROIS_TRAINING=200,
        TRAIN_ROIS_PER_IMAGE=32,
        DETECTION_MAX_INSTANCES=20,
        DETECTION_MIN_CONFIDENCE=0.0,
    )
    values.update(overrides)
    return make_config(**values)


@pytest.fixture
def tiny_inference_config():
    return tiny_config()


def build_tiny_model_dir(folder: Path, damage_type: str = "scratch", seed: int = 7, **overrides) -> Path:
    """A real, seeded random-weight tiny model saved the way training saves it: weights + sidecar."""
    import tf_keras as keras

    from car_damage.model.card import ModelCard, card_path_for
    from mrcnn.model import MaskRCNN

    keras.utils.set_random_seed(seed)
    config = tiny_config(NAME=damage_type, **overrides)
    model = MaskRCNN("inference", config, model_dir=str(folder))
    weights = folder / f"mask_cnn_{damage_type}.h5"
    model.save_weights(str(weights))
    card = ModelCard.from_config(config, ["BG", damage_type], damage_type, version="test-random")
    card.save(card_path_for(weights))
    keras.backend.clear_session()
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session-wide folder holding ``mask_cnn_scratch.h5`` + ``mask_cnn_scratch.json`` (random, seeded)."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny_model"))
