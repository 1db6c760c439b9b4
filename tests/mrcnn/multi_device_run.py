"""Run one and the same training step on one device and on N logical CPU devices; print the comparison as JSON.

A subprocess of tests/mrcnn/test_multi_device.py: logical devices must be configured before TensorFlow
initialises its devices, which pytest's process has long done. Usage:
    python tests/mrcnn/multi_device_run.py OUT_DIR [N]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (conftest's helpers)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

REPLICAS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * REPLICAS)

from conftest import RectanglesDataset, tiny_config  # noqa: E402

from mrcnn.data.pipeline import TrainingBatches  # noqa: E402
from mrcnn.model import MaskRCNN  # noqa: E402
from mrcnn.training import seed_everything  # noqa: E402

GLOBAL_BATCH = REPLICAS  # one image per replica in the multi-device run, all of them on one device
SEED = 3


def config_for(gpu_count: int, **extra):
    # Sampling that keeps every proposal (16 proposals, room for 16 positives and all negatives): the ROI
    # sampler's random order then changes no loss, so the two runs can be compared exactly.
    return tiny_config(
        NAME="multi", GPU_COUNT=gpu_count, IMAGES_PER_GPU=GLOBAL_BATCH // gpu_count, POST_NMS_ROIS_TRAINING=16,
        TRAIN_ROIS_PER_IMAGE=256, ROI_POSITIVE_RATIO=1 / 16, STEPS_PER_EPOCH=1, VALIDATION_STEPS=1,
        LEARNING_RATE=0.01, OPTIMIZER="SGD", **extra)


def dataset() -> RectanglesDataset:
    return RectanglesDataset([[(10, 12, 60, 70)], [(30, 40, 90, 150), (5, 5, 40, 30)], [(50, 60, 80, 120)],
                              [(20, 100, 70, 150)]], shape=(96, 160))


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(SEED)  # seeds and deterministic kernels: the compared numbers repeat run to run
    single = MaskRCNN("training", config_for(1), model_dir=str(out / "single"))
    start_weights = out / "start.h5"
    single.save_weights(str(start_weights))
    multi = MaskRCNN("training", config_for(REPLICAS), model_dir=str(out / "multi"))
    multi.load_weights(str(start_weights), by_name=True)
    batch = next(iter(TrainingBatches(dataset(), single.config, shuffle=True, seed=SEED)))

    result: dict = {"replicas": multi.keras_model.distribute_strategy.num_replicas_in_sync,
                    "batch_size": [single.config.BATCH_SIZE, multi.config.BATCH_SIZE]}
    for model in (single, multi):  # the layers the step trains decide which gradients exist
        from mrcnn.training import compile_model, set_trainable

        set_trainable(model.keras_model, ".*")
        compile_model(model, 0.01, 0.9)
    losses_1, grads_1 = single.keras_model.batch_gradients(batch)
    losses_n, grads_n = multi.keras_model.batch_gradients(batch)
    result["losses_single"], result["losses_multi"] = losses_1, losses_n
    pairs = [(a, b) for a, b in zip(grads_1, grads_n, strict=True) if a is not None or b is not None]
    result["gradients_compared"] = len(pairs)
    result["gradients_missing_on_one_side"] = sum((a is None) != (b is None) for a, b in pairs)
    diffs = [float(np.max(np.abs(a - b))) for a, b in pairs if a is not None and b is not None]
    scales = [float(np.max(np.abs(a))) for a, b in pairs if a is not None and b is not None]
    result["gradient_max_abs_diff"] = max(diffs)
    result["gradient_max_abs"] = max(scales)
    result["gradient_global_norm"] = [float(np.sqrt(sum(np.sum(g ** 2) for g in grads if g is not None)))
                                      for grads in (grads_1, grads_n)]
    flat_1 = np.concatenate([a.ravel() for a, b in pairs if a is not None and b is not None])
    flat_n = np.concatenate([b.ravel() for a, b in pairs if a is not None and b is not None])
    result["gradient_cosine"] = float(flat_1 @ flat_n / (np.linalg.norm(flat_1) * np.linalg.norm(flat_n)))
    names = [v.name for v in single.keras_model.trainable_variables]
    result["gradient_relative_error"] = {
        name: float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))
        for name, a, b in zip(names, grads_1, grads_n, strict=True) if a is not None and b is not None}

    # One real training step each, through train() (feed, fit, checkpoint), from the same weights and batches.
    runs = {}
    for name, model in (("single", single), ("multi", multi)):
        model.load_weights(str(start_weights), by_name=True)
        model.set_log_dir()
        run = model.train(dataset(), None, learning_rate=0.01, epochs=1, layers="all", verbose=0, seed=SEED)
        runs[name] = run
        result[f"{name}_step_losses"] = run.step_losses[-1]
        result[f"{name}_checkpoints"] = run.checkpoints
    weights_1 = layer_weights(single)
    weights_n = layer_weights(multi)
    result["weights_max_abs_diff_after_step"] = max(float(np.max(np.abs(a - b)))
                                                    for a, b in zip(weights_1, weights_n, strict=True))
    reference = start_model(start_weights)
    start_layers = layer_weights(reference)
    result["weights_max_change"] = max(float(np.max(np.abs(a - b)))
                                       for a, b in zip(weights_1, start_layers, strict=True))

    # Resume: a new multi-device model from the checkpoint continues at epoch 1 and trains epoch 2.
    resumed = MaskRCNN("training", config_for(REPLICAS), model_dir=str(out / "multi"))
    resumed.load_weights(runs["multi"].checkpoints[-1], by_name=True)
    result["resumed_epoch"] = resumed.epoch
    run = resumed.train(dataset(), dataset(), learning_rate=0.01, epochs=2, layers="heads", verbose=0, seed=SEED)
    result["resumed_checkpoints"] = run.checkpoints
    result["resumed_val_loss"] = run.history.get("val_loss")
    result["resumed_epoch_after"] = resumed.epoch
    # BatchNorm stays frozen: moving statistics unchanged by training.
    moving = [i for i, w in enumerate(layer_variables(resumed)) if "moving_" in w.name]
    start = layer_weights(reference)
    after = layer_weights(resumed)
    result["batchnorm_statistics"] = len(moving)
    result["batchnorm_statistics_max_change"] = max(
        (float(np.max(np.abs(after[i] - start[i]))) for i in moving), default=0.0)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


def start_model(path: Path) -> MaskRCNN:
    """A fresh single-device model holding the starting weights."""
    model = MaskRCNN("training", config_for(1), model_dir=str(path.parent / "reference"))
    model.load_weights(str(path), by_name=True)
    return model


def layer_variables(model: MaskRCNN) -> list:
    """The layers' variables (not the loss trackers' running sums, which Keras also lists as weights)."""
    trackers = {id(v) for metric in model.keras_model.metrics for v in metric.variables}
    return [w for w in model.keras_model.weights if id(w) not in trackers]


def layer_weights(model: MaskRCNN) -> list[np.ndarray]:
    return [w.numpy() for w in layer_variables(model)]


if __name__ == "__main__":
    main()
