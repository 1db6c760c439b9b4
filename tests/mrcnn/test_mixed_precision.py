"""MIXED_PRECISION (fp16 backbone/FPN/RPN, fp32 everything after) and XLA on the tiny model, on the CPU.

The fp16-vs-fp32 comparison on real photos with a full-size model (same N, boxes within 2 px, mask IoU >= 0.95)
needs a GPU and runs in benchmarks/gpu_suite.sh.
"""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras

from mrcnn.model import MaskRCNN
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def fp32_and_mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    keras.utils.set_random_seed(7)
    fp32 = MaskRCNN("inference", tiny_config(NAME="fp32"), folder)
    fp32.save_weights(str(folder / "w.h5"))
    mixed = MaskRCNN("inference", tiny_config(NAME="mixed", MIXED_PRECISION=True), folder)
    report = mixed.load_weights(str(folder / "w.h5"), by_name=True)
    assert not report.missing and not report.mismatched
    return fp32, mixed


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (100, 128, 3), dtype=np.uint8)


def test_mixed_precision_computes_features_in_fp16_and_answers_in_fp32(fp32_and_mixed) -> None:
    _, mixed = fp32_and_mixed
    assert keras.mixed_precision.global_policy().name == "float32"  # the build leaves the global policy alone
    compute = {layer.name: layer.compute_dtype for layer in mixed.keras_model.layers}
    assert compute["fpn_p2"] == "float16" and compute["fpn_c5p5"] == "float16"
    assert compute["mrcnn_class_logits"] == "float32" and compute["mrcnn_mask"] == "float32"
    assert all(w.dtype == "float32" for w in mixed.keras_model.weights)  # fp32 master weights
    assert all(t.dtype == "float32" for t in mixed.keras_model.outputs)
    result = mixed.detect([_image()])[0]
    assert result["scores"].dtype == np.float32 and result["rois"].dtype == np.int32
    assert result["masks"].dtype == bool


def test_mixed_precision_detections_are_close_to_fp32(fp32_and_mixed) -> None:
    fp32, mixed = fp32_and_mixed
    for seed in range(3):
        a, b = fp32.detect([_image(seed)])[0], mixed.detect([_image(seed)])[0]
        assert len(a["scores"]) > 3 and abs(len(a["scores"]) - len(b["scores"])) <= 2
        # The strongest detections survive fp16 rounding unchanged: same boxes within 2 px, close scores.
        top = 3
        assert np.abs(a["rois"][:top] - b["rois"][:top]).max() <= 2
        np.testing.assert_allclose(a["scores"][:top], b["scores"][:top], atol=5e-3)
        inter = np.logical_and(a["masks"][..., :top], b["masks"][..., :top]).sum((0, 1))
        union = np.logical_or(a["masks"][..., :top], b["masks"][..., :top]).sum((0, 1))
        assert (inter / np.maximum(union, 1)).min() >= 0.9


def test_mixed_precision_with_xla_builds_and_runs(tmp_path) -> None:
    model = MaskRCNN("inference", tiny_config(NAME="xla", MIXED_PRECISION=True, USE_XLA=True), tmp_path)
    results = model.detect_batch([_image(0), _image(1)])
    assert len(results) == 2 and all(r["scores"].dtype == np.float32 for r in results)
