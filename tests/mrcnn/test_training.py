"""Training mode end to end: layer presets, the compiled step, checkpoints/resume, and a real overfitting run."""

from __future__ import annotations

import json
import math
import os
import re

import h5py
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from mrcnn.model import MaskRCNN
from mrcnn.training import LAYER_PRESETS, make_optimizer, resolve_layers, seed_everything, set_trainable
from mrcnn.utils import Dataset
from tests.conftest import RectanglesDataset, require_shared, tiny_config

#: Two 128x128 images with bright rectangles as instances.
TRAIN_RECTS = [[(20, 20, 60, 90)], [(50, 30, 100, 70), (10, 80, 40, 120)]]


def rect_dataset():
    return RectanglesDataset(TRAIN_RECTS, shape=(128, 128), background=50, foreground=230)


@pytest.fixture(scope="module")
def training_model(tmp_path_factory):
    keras.utils.set_random_seed(1)
    return MaskRCNN("training", tiny_config(), tmp_path_factory.mktemp("logs"))


def _trainable_names(keras_model):
    names = set()
    for layer in keras_model.layers:
        if isinstance(layer, keras.Model):
            names |= {f"{layer.name}/{inner.name}" for inner in layer.layers if inner.trainable and inner.weights}
        elif layer.trainable and layer.weights:
            names.add(layer.name)
    return names


def test_preset_regexes_select_matterport_stages():
    names = ["conv1", "bn_conv1", "res2a_branch2a", "bn3b_branch2b", "res4f_branch2c", "bn5c_branch2a",
             "fpn_c5p5", "rpn_model", "mrcnn_mask_conv1", "tiny_c3"]

    def chosen(preset):
        pattern = re.compile(resolve_layers(preset))
        return {name for name in names if pattern.fullmatch(name)}

    heads = {"fpn_c5p5", "rpn_model", "mrcnn_mask_conv1"}
    assert chosen("heads") == heads
    assert chosen("5+") == heads | {"bn5c_branch2a"}
    assert chosen("4+") == heads | {"bn5c_branch2a", "res4f_branch2c"}
    assert chosen("3+") == heads | {"bn5c_branch2a", "res4f_branch2c", "bn3b_branch2b"}
    assert chosen("all") == set(names)
    assert set(LAYER_PRESETS) == {"heads", "3+", "4+", "5+", "all"}
    with pytest.raises(ValueError, match="regex"):
        resolve_layers("res4(")


def test_set_trainable_recurses_into_rpn_model_and_time_distributed(training_model):
    keras_model = training_model.keras_model
    set_trainable(keras_model, "heads")
    names = _trainable_names(keras_model)
    assert "tiny_c1" not in names and "fpn_c5p5" in names
    assert "rpn_model/rpn_conv_shared" in names and "mrcnn_mask_conv1" in names
    assert keras_model.get_layer("mrcnn_class_conv1").layer.trainable
    assert not keras_model.get_layer("tiny_c2").trainable
    heads_count = len(keras_model.trainable_weights)

    set_trainable(keras_model, r"mrcnn\_mask.*")
    assert _trainable_names(keras_model) == {f"mrcnn_mask_conv{i}" for i in range(1, 5)} | {
        f"mrcnn_mask_bn{i}" for i in range(1, 5)} | {"mrcnn_mask_deconv", "mrcnn_mask"}
    assert not keras_model.get_layer("rpn_model").get_layer("rpn_conv_shared").trainable

    set_trainable(keras_model, "all")
    # + the tiny backbone: 9 bias-free convs (C1 one, C2..C5 two each) and their 9 group norms (gamma, beta)
    assert len(keras_model.trainable_weights) == heads_count + 9 + 2 * 9


def test_step_without_gt_has_finite_losses_and_zero_box_mask_losses(training_model):
    from mrcnn.data.pipeline import empty_batch, training_anchors

    config = training_model.config
    set_trainable(training_model.keras_model, "all")
    training_model.compile(0.001, 0.9)
    batch = list(empty_batch(config, training_anchors(config).shape[0]))
    batch[0][:] = np.random.default_rng(0).normal(size=batch[0].shape)
    batch[1][:, 4:7] = [128, 128, 3]
    batch[1][:, 12:] = 1
    batch[2][:, :64, 0] = -1  # some negative anchors, no positives
    bn = training_model.keras_model.get_layer("mrcnn_class_bn1").layer
    moving_mean = bn.moving_mean.numpy().copy()
    logs = training_model.keras_model.train_on_batch(tuple(batch), return_dict=True)
    # TRAIN_BN is False: BatchNorm uses (and keeps) its moving statistics while training.
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving_mean)
    assert all(math.isfinite(value) for value in logs.values())
    assert logs["rpn_bbox_loss"] == 0.0 and logs["mrcnn_bbox_loss"] == 0.0 and logs["mrcnn_mask_loss"] == 0.0
    assert logs["rpn_class_loss"] > 0.0
    # The mask head runs on the slots that can hold positives only: int(32 * 0.33) = 10 of 32.
    assert training_model.keras_model.get_layer("mrcnn_mask").output_shape[1] == 10


def test_weight_decay_skips_batchnorm_gamma_beta(training_model):
    keras_model = training_model.keras_model
    set_trainable(keras_model, "all")
    expected = 0.0
    for weight in keras_model.trainable_weights:
        if "gamma" not in weight.name and "beta" not in weight.name:
            values = weight.numpy()
            expected += np.sum(values.astype(np.float64) ** 2) / values.size
    assert any("gamma" in w.name for w in keras_model.trainable_weights)
    got = float(keras_model.l2_loss())
    assert got == pytest.approx(training_model.config.WEIGHT_DECAY * expected, rel=1e-4)


def test_checkpoints_every_epoch_and_resume_restores_epoch(tmp_path):
    keras.utils.set_random_seed(2)
    config = tiny_config(STEPS_PER_EPOCH=2, VALIDATION_STEPS=1)
    model = MaskRCNN("training", config, tmp_path)
    run = model.train(rect_dataset(), rect_dataset(), 0.001, epochs=2, layers="heads")
    assert model.epoch == 2
    log_dir = os.path.basename(model.log_dir)
    assert re.fullmatch(r"tiny\d{8}T\d{4}", log_dir)
    assert [os.path.basename(p) for p in run.checkpoints] == ["mask_rcnn_tiny_0001.h5", "mask_rcnn_tiny_0002.h5"]
    assert all(os.path.isfile(p) for p in run.checkpoints)
    assert os.path.getsize(os.path.join(model.log_dir, "loss_curve.png")) > 1000
    history = json.load(open(os.path.join(model.log_dir, "loss_history.json"), encoding="utf-8"))
    assert len(history["steps"]) == 4 and len(history["epochs"]["val_loss"]) == 2
    assert any(name.startswith("events.out.tfevents") for _, _, files in os.walk(model.log_dir) for name in files)
    assert model.find_last() == run.checkpoints[-1]
    with h5py.File(run.checkpoints[-1], "r") as saved:  # matterport's layout: rpn_model is one group of 6
        layer_names = [n.decode() if isinstance(n, bytes) else n for n in saved.attrs["layer_names"]]
        assert "rpn_model" in layer_names and "mrcnn_mask" in layer_names
        assert len(saved["rpn_model"].attrs["weight_names"]) == 6

    resumed = MaskRCNN("training", config, tmp_path)
    report = resumed.load_weights(run.checkpoints[-1], by_name=True)
    assert report.ok and resumed.epoch == 2 and resumed.log_dir == model.log_dir
    assert resumed.train(rect_dataset(), None, 0.001, epochs=2, layers="heads").checkpoints == []  # done already
    more = resumed.train(rect_dataset(), None, 0.001, epochs=3, layers="heads")
    assert [os.path.basename(p) for p in more.checkpoints] == ["mask_rcnn_tiny_0003.h5"]
    assert os.path.dirname(more.checkpoints[0]) == model.log_dir and resumed.epoch == 3
    # Loading a checkpoint into an inference model by name is covered by the overfitting run below.


def test_optimizers_clip_the_global_norm_and_use_momentum_as_beta_1():
    sgd = make_optimizer("SGD", 0.01, 0.9, 5.0)
    adam = make_optimizer("ADAM", 0.002, 0.8, 5.0)
    assert isinstance(sgd, keras.optimizers.SGD) and isinstance(adam, keras.optimizers.Adam)
    assert (float(sgd.learning_rate), float(sgd.momentum), sgd.global_clipnorm) == pytest.approx((0.01, 0.9, 5.0))
    assert (float(adam.learning_rate), float(adam.beta_1), adam.global_clipnorm) == pytest.approx((0.002, 0.8, 5.0))
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        make_optimizer("ADAM", 0.0, 0.9, 5.0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("RMSPROP", 0.001, 0.9, 5.0)


def test_cosine_schedule_falls_from_the_rate_to_zero_over_the_run():
    # Plain SGD (momentum 0) on a gradient of 1: each step moves the variable by exactly that step's rate.
    optimizer = make_optimizer("SGD", 1.0, 0.0, 5.0, decay_steps=4)
    variable = tf.Variable(0.0)
    positions = []
    for _ in range(6):
        optimizer.apply_gradients([(tf.constant(1.0), variable)])
        positions.append(float(variable.numpy()))
    steps = -np.diff([0.0, *positions])
    expected = [(1 + math.cos(math.pi * step / 4)) / 2 for step in range(5)] + [0.0]  # 1, .854, .5, .146, 0, 0
    np.testing.assert_allclose(steps, expected, atol=1e-6)
    with pytest.raises(ValueError, match="decay_steps must be >= 1"):
        make_optimizer("SGD", 0.01, 0.9, 5.0, decay_steps=0)


def _weights_after_training(tmp_path, seed, optimizer):
    seed_everything(seed)
    config = tiny_config(STEPS_PER_EPOCH=3, VALIDATION_STEPS=1, OPTIMIZER=optimizer)
    model = MaskRCNN("training", config, tmp_path)
    before = {w.name: w.numpy().copy() for w in model.keras_model.trainable_weights}
    model.train(rect_dataset(), None, 0.01, epochs=1, layers="all", seed=seed)
    assert isinstance(model.keras_model.optimizer, {"SGD": keras.optimizers.SGD, "ADAM": keras.optimizers.Adam}[
        optimizer])
    return before, {w.name: w.numpy() for w in model.keras_model.trainable_weights}


@pytest.fixture
def deterministic_ops():
    """seed_everything turns TensorFlow's deterministic kernels on for the process; turn them off after."""
    from tensorflow.python.framework import config as tf_config

    yield
    tf_config.disable_op_determinism()


def test_adam_training_is_repeatable_by_seed(tmp_path, deterministic_ops):
    start, trained = _weights_after_training(tmp_path / "a", 5, "ADAM")
    _, again = _weights_after_training(tmp_path / "b", 5, "ADAM")
    start_other, other = _weights_after_training(tmp_path / "c", 6, "ADAM")
    assert trained.keys() == again.keys() == other.keys()
    moved = [name for name in trained if not np.array_equal(start[name], trained[name])]
    # The box and mask heads may see no positive ROI in 3 steps; the rest of the network must have trained.
    assert len(moved) > 0.7 * len(trained), sorted(set(trained) - set(moved))
    # The same seed: the same initial weights, images and ROI samples, so bit-identical weights after training.
    assert all(np.array_equal(trained[name], again[name]) for name in trained)
    assert not all(np.array_equal(start[name], start_other[name]) for name in start)
    assert not all(np.array_equal(trained[name], other[name]) for name in trained)


# ------------------------------------------------------------------ a real run on the seed scratch photos

#: Three training photos with one sizeable scratch each (the overfitting set).
OVERFIT_IMAGES = ("image19.jpg", "image21.jpg", "image31.jpg")


class ViaScratchDataset(Dataset):
    """Minimal VIA 1.x/2.x polygon reader for the test (the product's loader lives in car_damage)."""

    def load(self, folder, names):
        from skimage.draw import polygon

        self.add_class("scratch", 1, "scratch")
        with open(os.path.join(folder, "via_region_data.json"), encoding="utf-8") as handle:
            annotations = json.load(handle)
        for entry in annotations.values():
            if entry["filename"] not in names:
                continue
            regions = entry["regions"]
            regions = regions.values() if isinstance(regions, dict) else regions
            image_path = os.path.join(folder, entry["filename"])
            self.add_image("scratch", image_id=entry["filename"], path=image_path,
                           polygons=[region["shape_attributes"] for region in regions])
        self._polygon = polygon
        self.prepare()
        return self

    def load_mask(self, image_id):
        info = self.image_info[image_id]
        height, width = self.load_image(image_id).shape[:2]
        masks = np.zeros([height, width, len(info["polygons"])], bool)
        for i, shape in enumerate(info["polygons"]):
            rows, cols = self._polygon(shape["all_points_y"], shape["all_points_x"], (height, width))
            masks[rows, cols, i] = True
        return masks, np.ones([masks.shape[-1]], np.int32)


def _best_iou(gt_mask, predicted):
    best = 0.0
    for i in range(predicted.shape[-1]):
        union = np.sum(gt_mask | predicted[..., i])
        best = max(best, np.sum(gt_mask & predicted[..., i]) / max(union, 1))
    return best


def test_real_training_run_overfits_the_seed_scratches(tmp_path):
    folder = require_shared("seed_scratch", "train")
    dataset = ViaScratchDataset().load(str(folder), OVERFIT_IMAGES)
    assert dataset.num_images == len(OVERFIT_IMAGES)
    keras.utils.set_random_seed(0)
    config = tiny_config(STEPS_PER_EPOCH=50, LEARNING_RATE=0.02)
    model = MaskRCNN("training", config, tmp_path)
    run = model.train(dataset, None, config.LEARNING_RATE, epochs=8, layers="all")

    epoch_loss = run.history["loss"]
    assert all(math.isfinite(v) for v in epoch_loss)
    assert epoch_loss[-1] <= 0.5 * epoch_loss[0], epoch_loss

    detector = MaskRCNN("inference", tiny_config(DETECTION_MIN_CONFIDENCE=0.5), tmp_path)
    assert detector.load_weights(run.checkpoints[-1], by_name=True).ok
    ious = []
    for image_id in dataset.image_ids:
        gt_masks, _ = dataset.load_mask(image_id)
        result = detector.detect([dataset.load_image(image_id)])[0]
        ious += [_best_iou(gt_masks[..., i], result["masks"]) for i in range(gt_masks.shape[-1])]
    assert sum(iou > 0.5 for iou in ious) >= math.ceil(0.66 * len(ious)), ious
