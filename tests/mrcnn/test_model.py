"""MaskRCNN (inference): detect() on the real photos with a seeded tiny model, fast path vs the Keras graph,
batches, XLA, validation, log dirs and weight loading through the model class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from PIL import Image

import mrcnn.model as modellib
from mrcnn.image_meta import compose_image_meta
from mrcnn.weights import LoadReport
from tests.conftest import tiny_config


def seeded_model(tmp_path: Path, seed: int = 3, **overrides) -> modellib.MaskRCNN:
    """A random-weight tiny model. The class logits are scaled down so scores are spread out instead of saturating
    at 1.0: otherwise float noise of 1e-6 (batch size changes the conv kernels' summation order) reorders ties."""
    keras.utils.set_random_seed(seed)
    model = modellib.MaskRCNN(mode="inference", config=tiny_config(**overrides), model_dir=tmp_path)
    logits = model.keras_model.get_layer("mrcnn_class_logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([kernel * 0.05, bias])
    return model


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> modellib.MaskRCNN:
    return seeded_model(tmp_path_factory.mktemp("logs"))


def load_photo(path: Path) -> np.ndarray:
    with Image.open(path) as image:  # decoded by content: some files are JPEG under a .png name
        return np.asarray(image)


def check_result(result: dict, image: np.ndarray, config) -> int:
    height, width = image.shape[:2]
    n = len(result["class_ids"])
    assert result["rois"].dtype == np.int32 and result["rois"].shape == (n, 4)
    assert result["class_ids"].dtype == np.int32 and result["scores"].dtype == np.float32
    assert result["masks"].dtype == bool and result["masks"].shape == (height, width, n)
    assert n <= config.DETECTION_MAX_INSTANCES
    if n:
        y1, x1, y2, x2 = result["rois"].T
        assert (y1 >= 0).all() and (x1 >= 0).all() and (y2 <= height).all() and (x2 <= width).all()
        assert (y2 > y1).all() and (x2 > x1).all()
        assert ((result["class_ids"] >= 1) & (result["class_ids"] < config.NUM_CLASSES)).all()
        assert (np.diff(result["scores"]) <= 0).all()
        for i in range(n):  # each mask lies inside its box
            outside = result["masks"][:, :, i].copy()
            outside[y1[i]:y2[i], x1[i]:x2[i]] = False
            assert not outside.any()
    return n


def test_detect_on_real_photos_is_well_formed_and_deterministic(model, test_images_dir):
    photos = sorted(test_images_dir.iterdir())
    assert photos
    kinds = set()
    for path in photos:
        image = load_photo(path)
        kinds.add(image.shape[-1] if image.ndim == 3 else 1)
        first = model.detect([image])[0]
        second = model.detect([image])[0]
        check_result(first, image, model.config)
        for key in ("rois", "class_ids", "scores", "masks"):
            np.testing.assert_array_equal(first[key], second[key], err_msg=f"{path.name}: {key}")
    assert 4 in kinds  # the RGBA photo went through


def _molded_inputs(model, batch=1, seed=0):
    cfg = model.config
    rng = np.random.default_rng(seed)
    images = (rng.standard_normal((batch, 128, 128, 3)) * 60).astype(np.float32)
    meta = compose_image_meta(0, (100, 128, 3), (128, 128, 3), (14, 0, 114, 128), 1.0, np.zeros(cfg.NUM_CLASSES))
    metas = np.repeat(meta[None], batch, axis=0).astype(np.float32)
    anchors = np.broadcast_to(model.get_anchors((128, 128, 3)), (batch,) + model.get_anchors((128, 128, 3)).shape)
    return images, metas, np.ascontiguousarray(anchors)


def test_fast_path_matches_matterport_keras_graph(model):
    images, metas, anchors = _molded_inputs(model)
    keras_out = model.keras_model.predict([images, metas, anchors], verbose=0)
    rpn_rois = keras_out[4]
    assert (np.abs(rpn_rois).sum(-1) > 0).all(), "test needs every proposal row real"
    detections, masks = model._runner(images, metas, anchors)
    assert detections.shape == keras_out[0].shape and masks.shape == keras_out[3].shape
    np.testing.assert_allclose(detections, keras_out[0], atol=1e-5)
    n = int((detections[0, :, 4] > 0).sum())
    assert n > 0
    np.testing.assert_allclose(masks[0, :n], keras_out[3][0, :n], atol=1e-4)
    assert not masks[0, n:].any()  # padding rows cost nothing and stay zero


def test_batch_of_two_matches_single_images(model, tmp_path):
    batch_model = seeded_model(tmp_path, seed=99, IMAGES_PER_GPU=2)
    batch_model.keras_model.set_weights(model.keras_model.get_weights())
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, size=(90, 120, 3), dtype=np.uint8), rng.integers(0, 255, (128, 64, 3), np.uint8)]
    both = batch_model.detect(images)
    for image, result in zip(images, both, strict=True):
        single = model.detect([image])[0]
        for key in ("rois", "class_ids", "masks"):
            np.testing.assert_array_equal(result[key], single[key])
        np.testing.assert_allclose(result["scores"], single["scores"], rtol=1e-5)


def test_wrong_batch_size_raises(model):
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="BATCH_SIZE"):
        model.detect([image, image])
    with pytest.raises(ValueError, match="BATCH_SIZE"):
        model.detect([])


def test_no_detections_gives_bool_empty_masks(tmp_path):
    quiet = seeded_model(tmp_path)
    logits = quiet.keras_model.get_layer("mrcnn_class_logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([np.zeros_like(kernel), np.array([50.0] + [0.0] * (len(bias) - 1), np.float32)])
    image = np.full((70, 50, 3), 128, np.uint8)
    result = quiet.detect([image])[0]
    assert result["masks"].shape == (70, 50, 0) and result["masks"].dtype == bool
    assert result["rois"].shape == (0, 4) and result["class_ids"].dtype == np.int32


def test_detect_molded_uses_whole_image_window(model):
    images, metas, _ = _molded_inputs(model)
    result = model.detect_molded(images, metas)[0]
    check_result(result, images[0], model.config)


def test_xla_compiled_model_gives_the_same_detections(model, tmp_path):
    xla = seeded_model(tmp_path, USE_XLA=True)
    xla.keras_model.set_weights(model.keras_model.get_weights())
    images, metas, anchors = _molded_inputs(model, seed=4)
    plain, _ = model._runner(images, metas, anchors)
    compiled, _ = xla._runner(images, metas, anchors)
    n = int((plain[0, :, 4] > 0).sum())
    # XLA may fuse/reorder float ops: compare the rows with a tolerance, not bit for bit.
    np.testing.assert_allclose(compiled[0, :n, 4], plain[0, :n, 4])
    np.testing.assert_allclose(compiled[0, :n, :4], plain[0, :n, :4], atol=1e-3)


def test_log_dir_checkpoint_path_and_find_last(model, tmp_path):
    m = seeded_model(tmp_path)
    assert m.log_dir.startswith(str(tmp_path)) and os.path.basename(m.log_dir).startswith("tiny")
    assert m.checkpoint_path.endswith("mask_rcnn_tiny_{epoch:04d}.h5")
    with pytest.raises(FileNotFoundError, match="Could not find model directory"):
        m.find_last()
    run = tmp_path / "tiny20240102T0304"
    run.mkdir()
    with pytest.raises(FileNotFoundError, match="Could not find weight files"):
        m.find_last()
    checkpoint = run / "mask_rcnn_tiny_0007.h5"
    m.save_weights(checkpoint)
    (run / "mask_rcnn_tiny_0003.h5").write_bytes(checkpoint.read_bytes())
    assert m.find_last() == str(checkpoint)
    report = m.load_weights(m.find_last(), by_name=True)
    assert isinstance(report, LoadReport) and report.ok
    assert m.epoch == 7 and m.log_dir == str(run)


def test_bad_mode_and_image_size_raise(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        modellib.MaskRCNN(mode="predict", config=tiny_config(), model_dir=tmp_path)
    with pytest.raises(ValueError, match="dividable by 2"):
        modellib.MaskRCNN(mode="inference", config=tiny_config(IMAGE_MIN_DIM=100, IMAGE_MAX_DIM=100),
                          model_dir=tmp_path)


def test_training_mode_rejects_detect(tmp_path, model):
    # detect() validates the mode before anything else (a training model cannot detect).
    model.mode = "training"
    try:
        with pytest.raises(ValueError, match="inference"):
            model.detect([np.zeros((8, 8, 3), np.uint8)])
    finally:
        model.mode = "inference"


def test_runner_is_one_tf_function(model):
    assert isinstance(model._runner._run, tf.types.experimental.PolymorphicFunction)


def test_fold_batchnorm_matches_the_unfolded_graph():
    from mrcnn.graph import fold_batchnorm
    from mrcnn.layers.backbone import conv_block

    keras.utils.set_random_seed(5)
    image = keras.layers.Input([None, None, 3])
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(image)
    x = keras.layers.BatchNormalization(name="stem_bn")(x, training=False)
    shared = keras.layers.Conv2D(4, 1, name="shared")(x)  # used twice: must not be folded
    y = conv_block(shared, 3, [4, 4, 8], stage=9, block="a", strides=2)
    z = keras.layers.BatchNormalization(name="after_shared")(shared, training=False)
    model = keras.Model(image, [y, z, shared])
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2, gamma.shape), rng.normal(size=beta.shape),
                               rng.normal(size=mean.shape), rng.uniform(0.5, 2, var.shape)])
    folded = fold_batchnorm(model)
    assert folded.num_folded == 5  # stem_bn and the block's 2a, 2b, 2c, 1 pairs; "shared" has two users
    x = rng.normal(size=(2, 16, 12, 3)).astype(np.float32)
    for ours, ref in zip(folded(tf.constant(x)), model(x, training=False), strict=True):
        np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_resnet50_fast_path_matches_keras_graph(tmp_path):
    """Full-size heads and a real backbone (BatchNorm folded in the fast path) against matterport's graph."""
    keras.utils.set_random_seed(2)
    config = tiny_config(BACKBONE="resnet50", IMAGE_MIN_DIM=256, IMAGE_MAX_DIM=256, TOP_DOWN_PYRAMID_SIZE=256,
                         FPN_CLASSIF_FC_LAYERS_SIZE=1024, RPN_CONV_CHANNELS=512, MASK_HEAD_CHANNELS=256,
                         POST_NMS_ROIS_INFERENCE=300, DETECTION_MAX_INSTANCES=30)
    m = modellib.MaskRCNN("inference", config, tmp_path)
    rng = np.random.default_rng(0)
    for layer in m.keras_model.layers:  # non-trivial moving statistics so that folding matters
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            gamma, beta, mean, var = inner.get_weights()
            inner.set_weights([rng.uniform(0.8, 1.2, gamma.shape), rng.normal(0, 0.05, beta.shape),
                               rng.normal(0, 0.05, mean.shape), rng.uniform(0.8, 1.2, var.shape)])
    logits = m.keras_model.get_layer("mrcnn_class_logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([kernel * 0.05, bias])
    images = (rng.standard_normal((1, 256, 256, 3)) * 60).astype(np.float32)
    meta = compose_image_meta(0, (256, 256, 3), (256, 256, 3), (0, 0, 256, 256), 1.0, np.zeros(2))[None]
    anchors = m.get_anchors((256, 256, 3))[None]
    ref = m.keras_model.predict([images, meta.astype(np.float32), anchors], verbose=0)
    dets, masks = m._runner(images, meta.astype(np.float32), anchors)
    n = int((ref[0][0, :, 4] > 0).sum())
    assert n > 0 and int((dets[0, :, 4] > 0).sum()) == n
    np.testing.assert_allclose(dets[0, :n], ref[0][0, :n], atol=2e-3)
    np.testing.assert_allclose(masks[0, :n], ref[3][0, :n], atol=2e-3)


def test_concurrent_detect_calls_give_the_same_results(model):
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(8)
    images = [rng.integers(0, 255, size=(100 + 10 * i, 120, 3), dtype=np.uint8) for i in range(4)]
    expected = [model.detect([image])[0] for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda image: model.detect([image])[0], images * 2))
    for i, result in enumerate(results):
        for key in ("rois", "class_ids", "scores", "masks"):
            np.testing.assert_array_equal(result[key], expected[i % 4][key])
