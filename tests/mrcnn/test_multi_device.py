"""GPU_COUNT > 1: MirroredStrategy training on logical CPU devices equals the single-device run.

The work runs in a subprocess (``multi_device_run.py``): logical devices can only be configured before
TensorFlow initialises its devices, which this pytest process has already done.

Tolerances. The multi-device step computes each image's slice exactly as a one-image batch would; the single
device runs the two images as one batch, whose kernels sum in another order. On the tiny random-weight
network (group norm over small activations) those float32 round-off differences grow to about 1e-4 of the
rpn logits and a few percent in the deepest backbone gradients (measured; the same happens between batch 1
and batch 2 of one image on ONE device), so losses and the heads' gradients are compared tightly and the
backbone's loosely, with the whole gradient's direction and norm in between.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).with_name("multi_device_run.py")
MODEL_CODE = Path(__file__).resolve().parents[2] / "model_code"


@pytest.fixture(scope="module")
def multi_device_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("multi_device")
    env = dict(os.environ, PYTHONPATH=f"{MODEL_CODE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run([sys.executable, str(RUNNER), str(out), "2"], env=env, capture_output=True,
                               text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads((out / "result.json").read_text())


def test_multi_device_splits_the_global_batch_over_two_replicas(multi_device_result: dict) -> None:
    assert multi_device_result["replicas"] == 2
    assert multi_device_result["batch_size"] == [2, 2]  # IMAGES_PER_GPU x GPU_COUNT: 2 x 1 and 1 x 2


def test_multi_device_losses_equal_the_single_device_losses(multi_device_result: dict) -> None:
    single, multi = multi_device_result["losses_single"], multi_device_result["losses_multi"]
    assert set(single) == {"loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss",
                           "mrcnn_mask_loss"}
    assert single["rpn_bbox_loss"] > 0 and single["mrcnn_class_loss"] > 0
    for name, value in single.items():
        assert multi[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    # The same through train(): the step's logged losses.
    for name, value in multi_device_result["single_step_losses"].items():
        assert multi_device_result["multi_step_losses"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_multi_device_gradients_equal_the_single_device_gradients(multi_device_result: dict) -> None:
    result = multi_device_result
    assert result["gradients_compared"] > 50 and result["gradients_missing_on_one_side"] == 0
    norm_1, norm_n = result["gradient_global_norm"]
    assert norm_n == pytest.approx(norm_1, rel=0.02)  # a wrong replica scaling would be off by 2x
    assert result["gradient_cosine"] > 0.999
    errors = result["gradient_relative_error"]
    heads = {k: v for k, v in errors.items() if k.startswith(("mrcnn_", "rpn_class_raw", "rpn_bbox_pred"))}
    assert len(heads) >= 10
    assert max(heads.values()) < 1e-3, heads
    assert max(errors.values()) < 0.1, errors


def test_multi_device_training_step_checkpoints_and_resume(multi_device_result: dict) -> None:
    result = multi_device_result
    assert result["weights_max_change"] > 1e-4  # the step moved the weights...
    # ...by the same SGD update on both (lr 0.01 times equal gradients; clipped at the same global norm).
    assert result["weights_max_abs_diff_after_step"] < 0.05 * result["weights_max_change"]
    assert Path(result["multi_checkpoints"][0]).name == "mask_rcnn_multi_0001.h5"
    assert result["resumed_epoch"] == 1 and result["resumed_epoch_after"] == 2
    assert Path(result["resumed_checkpoints"][0]).name == "mask_rcnn_multi_0002.h5"
    assert result["resumed_val_loss"][0] > 0  # validation ran on the replicas too


def test_multi_device_keeps_batchnorm_frozen(multi_device_result: dict) -> None:
    assert multi_device_result["batchnorm_statistics"] > 0
    assert multi_device_result["batchnorm_statistics_max_change"] == 0.0


def test_multi_device_refuses_more_devices_than_the_machine_has() -> None:
    from mrcnn.distribute import make_strategy
    from tests.conftest import tiny_config

    with pytest.raises(ValueError, match="GPU_COUNT=64"):
        make_strategy(tiny_config(GPU_COUNT=64))
    assert make_strategy(tiny_config(GPU_COUNT=1)) is None
