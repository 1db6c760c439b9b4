"""Weights contract: matterport's COCO layout, h5py-written files, exclude=, class-count mismatch, bad files."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from mrcnn.config import Config
from mrcnn.graph import build_inference_model
from mrcnn.layers.heads import NUM_CLASSES_LAYERS
from mrcnn.weights import (
    WeightsFileError,
    WeightsMismatchError,
    inspect_weights,
    load_weights,
    save_weights,
)
from tests.conftest import SHARED_DATA, tiny_config

#: The reference folder sits next to the shared data folder.
LAYOUT_PATH = SHARED_DATA.parent / "reference" / "matterport_coco_h5_layout.json"


def _layout() -> dict:
    if not LAYOUT_PATH.exists():
        message = f"weights layout reference not found at {LAYOUT_PATH}"
        if os.environ.get("REQUIRE_SHARED_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return json.loads(LAYOUT_PATH.read_text())


def model_layout(model) -> list[tuple[str, list[tuple[str, list[int]]]]]:
    """(layer name, [(weight name, shape)]) for every weighted layer, in model order."""
    return [(layer.name, [(w.name, list(w.shape)) for w in layer.weights]) for layer in model.layers if layer.weights]


def write_h5(path, layers, *, seed=0, as_bytes=False, under_model_weights=False, extra_groups=False,
             extra_layer_names=("input_image", "activation_1")):
    """Write a Keras-2 style weights file with h5py: random values; returns {layer: [arrays]}."""
    rng = np.random.default_rng(seed)
    enc = (lambda s: s.encode("utf8")) if as_bytes else (lambda s: s)
    values = {}
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if under_model_weights else f
        names = list(extra_layer_names) + [name for name, _ in layers]
        for name in extra_layer_names:
            root.create_group(name).attrs["weight_names"] = np.array([], dtype="S1")
        for name, weights in layers:
            group = root.create_group(name)
            group.attrs["weight_names"] = [enc(w) for w, _ in weights]
            values[name] = []
            for weight_name, shape in weights:
                value = rng.standard_normal(shape).astype(np.float32)
                group.create_dataset(weight_name, data=value)
                values[name].append(value)
        if extra_groups:
            root.create_group("top_level_model_weights").attrs["weight_names"] = np.array([], dtype="S1")
            anchors = root.create_group("anchors")
            anchors.attrs["weight_names"] = [enc("Variable:0")]
            anchors.create_dataset("Variable:0", data=np.zeros((2, 12, 4), np.float32))
            names.append("anchors")
        root.attrs["layer_names"] = [enc(n) for n in names]
        root.attrs["backend"] = enc("tensorflow")
        root.attrs["keras_version"] = enc("2.1.6")
    return values


def assert_loaded(model, values):
    for name, arrays in values.items():
        variables = model.get_layer(name).weights
        assert len(variables) == len(arrays)
        for var, value in zip(variables, arrays, strict=True):
            np.testing.assert_array_equal(var.numpy(), value, err_msg=f"{name}/{var.name}")


# ---------------------------------------------------------------------------------------- COCO layout (ResNet-101)
class CocoConfig(Config):
    NAME = "coco"
    NUM_CLASSES = 81
    IMAGES_PER_GPU = 1


@pytest.fixture(scope="module")
def coco_model():
    return build_inference_model(CocoConfig())


def test_resnet101_coco_model_has_exactly_the_reference_layout(coco_model):
    layout = _layout()
    expected = [(entry["layer"], [(n, list(s)) for n, s in entry["weights"]]) for entry in layout["layers"]]
    ours = model_layout(coco_model)
    assert len(ours) == layout["num_weighted_layers"] == 233
    assert [name for name, _ in ours] == [name for name, _ in expected]
    assert ours == expected
    assert sum(int(np.prod(s)) for _, ws in ours for _, s in ws) == layout["total_params"]


def test_h5py_written_coco_file_loads_every_tensor_into_its_variable(coco_model, tmp_path):
    layout = _layout()
    layers = [(e["layer"], [(n, s) for n, s in e["weights"]]) for e in layout["layers"]]
    path = tmp_path / "mask_rcnn_coco.h5"
    values = write_h5(path, layers, as_bytes=True, extra_groups=True)
    report = load_weights(coco_model, path, by_name=True)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert len(report.loaded) == 233 and set(report.ignored) == {"anchors"}
    assert_loaded(coco_model, values)
    info = inspect_weights(path)
    assert (info.backbone, info.num_classes, info.num_tensors, info.num_params) == ("resnet101", 81, 690, 64158584)


def test_our_save_writes_matterport_layout(coco_model, tmp_path):
    layout = _layout()
    path = tmp_path / "ours.h5"
    save_weights(coco_model, path)
    with h5py.File(path, "r") as f:
        layer_names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        weighted = [n for n in layer_names if len(f[n].attrs["weight_names"])]
        assert weighted == [e["layer"] for e in layout["layers"]]
        rpn = [w.decode() if isinstance(w, bytes) else w for w in f["rpn_model"].attrs["weight_names"]]
        assert rpn == [n for n, _ in layout["layers"][weighted.index("rpn_model")]["weights"]]
        assert f["mrcnn_class_conv1"]["mrcnn_class_conv1"]["kernel:0"].shape == (7, 7, 256, 1024)
        assert f["rpn_model"]["rpn_conv_shared"]["kernel:0"].shape == (3, 3, 256, 512)
        assert "input_image" in layer_names and "ROI" in layer_names


# ------------------------------------------------------------------------------------------------ tiny models
@pytest.fixture(scope="module")
def tiny_model():
    return build_inference_model(tiny_config())


def test_tiny_round_trip_through_our_save(tiny_model, tmp_path):
    path = tmp_path / "tiny.h5"
    save_weights(tiny_model, path)
    other = build_inference_model(tiny_config())
    report = load_weights(other, path)
    assert report.ok and len(report.loaded) == len(model_layout(tiny_model))
    for a, b in zip(tiny_model.weights, other.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    info = inspect_weights(path)
    assert (info.backbone, info.num_classes) == ("tiny", 2)


@pytest.mark.parametrize("as_bytes", [True, False])
@pytest.mark.parametrize("under_model_weights", [True, False])
def test_attr_encodings_and_full_model_saves(tiny_model, tmp_path, as_bytes, under_model_weights):
    path = tmp_path / "w.h5"
    values = write_h5(path, model_layout(tiny_model), as_bytes=as_bytes, under_model_weights=under_model_weights,
                      extra_groups=True, seed=5)
    report = load_weights(tiny_model, path)
    assert report.ok
    assert_loaded(tiny_model, values)


def test_class_count_mismatch_raises_naming_layers_and_exclude(tiny_model, tmp_path):
    three_classes = build_inference_model(tiny_config(NUM_CLASSES=3))
    path = tmp_path / "nc3.h5"
    save_weights(three_classes, path)
    before = [w.numpy() for w in tiny_model.weights]
    with pytest.raises(WeightsMismatchError) as err:
        load_weights(tiny_model, path)
    message = str(err.value)
    assert "mrcnn_class_logits" in message and "mrcnn_bbox_fc" in message and "exclude=" in message
    # nothing was assigned
    for var, value in zip(tiny_model.weights, before, strict=True):
        np.testing.assert_array_equal(var.numpy(), value)
    # matterport's fine-tuning recipe: exclude the class-dependent heads
    report = load_weights(tiny_model, path, exclude=list(NUM_CLASSES_LAYERS))
    assert report.mismatched == [] and report.missing == []
    assert {"mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask"} <= set(report.ignored)
    np.testing.assert_array_equal(tiny_model.get_layer("fpn_p2").weights[0].numpy(),
                                  three_classes.get_layer("fpn_p2").weights[0].numpy())
    assert not np.array_equal(tiny_model.get_layer("mrcnn_mask").weights[1].numpy().shape, (3,))


def test_partial_file_reports_missing_and_unexpected(tiny_model, tmp_path):
    layers = [entry for entry in model_layout(tiny_model) if not entry[0].startswith("mrcnn_")]
    layers.append(("some_other_layer", [("some_other_layer/kernel:0", [2, 2])]))
    path = tmp_path / "partial.h5"
    write_h5(path, layers)
    report = load_weights(tiny_model, path, by_name=True)
    assert "mrcnn_mask" in report.missing and "mrcnn_class_logits" in report.missing
    assert report.unexpected == ["some_other_layer"]
    assert not report.ok


def test_topological_loading(tiny_model, tmp_path):
    layout = model_layout(tiny_model)
    path = tmp_path / "same_order.h5"
    values = write_h5(path, layout, seed=1)
    assert load_weights(tiny_model, path, by_name=False).ok
    assert_loaded(tiny_model, values)
    # another order (training checkpoints interleave the heads): matched by name, never mis-assigned
    shuffled = layout[::-1]
    values = write_h5(tmp_path / "reversed.h5", shuffled, seed=2)
    assert load_weights(tiny_model, tmp_path / "reversed.h5", by_name=False).ok
    assert_loaded(tiny_model, values)
    # different layer sets cannot be loaded topologically
    write_h5(tmp_path / "fewer.h5", layout[:-1], seed=3)
    with pytest.raises(WeightsMismatchError, match="by_name=True"):
        load_weights(tiny_model, tmp_path / "fewer.h5", by_name=False)


def test_bad_files_raise_weights_file_error(tiny_model, tmp_path):
    not_h5 = tmp_path / "photo.h5"
    not_h5.write_bytes(b"\xff\xd8\xff\xe0 not hdf5")
    with pytest.raises(WeightsFileError, match="not an HDF5"):
        load_weights(tiny_model, not_h5)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightsFileError, match="layer_names"):
        inspect_weights(plain)
    with pytest.raises(WeightsFileError, match="not found"):
        load_weights(tiny_model, tmp_path / "absent.h5")
    with pytest.raises(ValueError, match=".h5"):
        save_weights(tiny_model, tmp_path / "weights.bin")


def test_inspect_resnet50_variant(tmp_path):
    layout = _layout()
    removed = set(layout["variants"]["resnet50"]["removed_layers"])
    layers = [(e["layer"], [(n, s) for n, s in e["weights"]]) for e in layout["layers"] if e["layer"] not in removed]
    layers = [(name, [(n, [min(d, 2) for d in s]) for n, s in ws]) if name not in NUM_CLASSES_LAYERS
              else (name, ws) for name, ws in layers]  # small tensors; head shapes tell NUM_CLASSES
    path = tmp_path / "r50.h5"
    write_h5(path, layers)
    info = inspect_weights(path)
    assert (info.backbone, info.num_classes) == ("resnet50", 81)
    assert len(info.layer_names) == layout["variants"]["resnet50"]["num_weighted_layers"]
