"""Matterport-format HDF5 weights: load by layer name with a report, save, and inspect a bare file.

File layout (Keras 2 ``save_weights``): root attr ``layer_names`` lists every layer of the saving model; each
layer is a group with attr ``weight_names``; the tensor for weight name "a/b:0" lives at group["a"]["b:0"].
A nested model (``rpn_model``) is one group with all its tensors; TimeDistributed layers are saved under the
wrapper's name. Full-model saves put all of this under a ``model_weights`` group. Attributes may be bytes
(h5py < 3 era files) or str. Values are assigned positionally within a layer, as Keras does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from mrcnn.layers.backbone import STAGE4_IDENTITY_BLOCKS, conv_name, tiny_layer_name
from mrcnn.layers.heads import BBOX_FC, CLASS_LOGITS, NUM_CLASSES_LAYERS

logger = logging.getLogger(__name__)

#: Groups some writers add that hold no layer of ours: tf-keras's top-level group and TF2 ports' anchors variable.
IGNORED_GROUPS = ("top_level_model_weights", "anchors")
MODEL_WEIGHTS_GROUP = "model_weights"


class WeightsFileError(ValueError):
    """The file is not a Keras/matterport HDF5 weights file, or it cannot be read."""


class WeightsMismatchError(WeightsFileError):
    """The file's tensors do not fit the model built from the config (e.g. another NUM_CLASSES)."""


@dataclass
class LoadReport:
    """What a load did. Layer names throughout."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model layers with weights that the file lacks
    unexpected: list[str] = field(default_factory=list)  # file layers with tensors that the model lacks
    mismatched: list[str] = field(default_factory=list)  # layers whose tensor count or shapes differ
    ignored: list[str] = field(default_factory=list)  # excluded layers and known extra groups
    filepath: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        return (f"{self.filepath}: loaded {len(self.loaded)} layers, missing {len(self.missing)}, "
                f"unexpected {len(self.unexpected)}, mismatched {len(self.mismatched)}, ignored {len(self.ignored)}")


@dataclass
class WeightsInfo:
    """What a weights file tells about the model that wrote it."""

    backbone: str | None  # "resnet50" | "resnet101" | "tiny" | None (unknown/custom)
    num_classes: int | None  # from mrcnn_class_logits; None when the file has no heads
    layer_names: list[str]  # layers holding tensors, file order
    num_tensors: int
    num_params: int
    keras_version: str | None


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes | np.bytes_) else str(value)


def _names(attrs: Any, key: str) -> list[str]:
    return [_text(v) for v in attrs.get(key, [])]


def _open(filepath: str | os.PathLike) -> h5py.File:
    path = os.fspath(filepath)
    if not os.path.isfile(path):
        raise WeightsFileError(f"weights file not found: {path}")
    try:
        return h5py.File(path, mode="r")
    except OSError as exc:
        raise WeightsFileError(f"{path} is not an HDF5 file ({exc})") from exc


def _weights_root(f: h5py.File, path: str) -> h5py.Group:
    if "layer_names" not in f.attrs and MODEL_WEIGHTS_GROUP in f:
        f = f[MODEL_WEIGHTS_GROUP]
    if "layer_names" not in f.attrs:
        raise WeightsFileError(f"{path} is HDF5 but not a Keras weights file (no 'layer_names' attribute)")
    return f


def _file_layers(root: h5py.Group, path: str) -> dict[str, list[np.ndarray]]:
    """Layer name -> tensors (positional order) for every layer group holding tensors."""
    layers: dict[str, list[np.ndarray]] = {}
    for name in _names(root.attrs, "layer_names"):
        if name not in root:
            raise WeightsFileError(f"{path}: layer {name!r} is listed in layer_names but has no group")
        group = root[name]
        weight_names = _names(group.attrs, "weight_names")
        if weight_names:
            try:
                layers[name] = [np.asarray(group[w]) for w in weight_names]
            except KeyError as exc:
                raise WeightsFileError(f"{path}: layer {name!r} lacks a tensor it lists ({exc})") from exc
    return layers


def _model_layers(keras_model: Any) -> dict[str, Any]:
    """Top-level layers that own weights (a nested model counts as one layer, as in the file)."""
    return {layer.name: layer for layer in keras_model.layers if layer.weights}


def _check_shapes(layer: Any, tensors: Sequence[np.ndarray]) -> str | None:
    variables = layer.weights
    if len(variables) != len(tensors):
        return f"{layer.name}: model has {len(variables)} tensors, file has {len(tensors)}"
    for var, value in zip(variables, tensors, strict=True):
        if tuple(var.shape) != tuple(value.shape):
            return f"{layer.name}: {var.name} is {tuple(var.shape)} in the model, {tuple(value.shape)} in the file"
    return None


def load_weights(keras_model: Any, filepath: str | os.PathLike, by_name: bool = True,
                 exclude: Iterable[str] | None = None) -> LoadReport:
    """Load a matterport/Keras HDF5 weights file into ``keras_model``; returns (and logs) a LoadReport.

    ``exclude`` names layers to skip (implies by-name loading, as in matterport). ``by_name=False`` keeps
    matterport's topological meaning: the file's weighted layers must be the model's, in order; when the
    order differs but the names agree it loads by name (logged); otherwise it raises instead of mis-assigning.
    Shape contradictions raise WeightsMismatchError naming the layers; nothing is assigned in that case.
    """
    path = os.fspath(filepath)
    exclude_set = set(exclude or [])
    if exclude_set:
        by_name = True
    report = LoadReport(filepath=path)
    with _open(path) as f:
        file_layers = _file_layers(_weights_root(f, path), path)
    model_layers = _model_layers(keras_model)

    if not by_name:
        file_order = [n for n in file_layers if n not in IGNORED_GROUPS]
        model_order = list(model_layers)
        if file_order != model_order:
            if sorted(file_order) == sorted(model_order):
                logger.info("%s: layer order differs from the model's; matching layers by name", path)
            else:
                only_file = sorted(set(file_order) - set(model_order))
                only_model = sorted(set(model_order) - set(file_order))
                raise WeightsMismatchError(
                    f"{path}: topological loading (by_name=False) needs the same weighted layers as the model; "
                    f"file-only layers {only_file[:8]}, model-only layers {only_model[:8]}. "
                    f"Use by_name=True (and exclude=[...] for layers that should not be loaded).")

    assignments: list[tuple[Any, np.ndarray]] = []
    problems: list[str] = []
    for name, tensors in file_layers.items():
        if name in exclude_set or name in IGNORED_GROUPS:
            report.ignored.append(name)
            continue
        layer = model_layers.get(name)
        if layer is None:
            report.unexpected.append(name)
            continue
        problem = _check_shapes(layer, tensors)
        if problem:
            report.mismatched.append(name)
            problems.append(problem)
            continue
        assignments.extend(zip(layer.weights, tensors, strict=True))
        report.loaded.append(name)
    report.missing = [n for n in model_layers if n not in file_layers and n not in exclude_set]
    report.ignored += [n for n in model_layers if n in exclude_set and n not in file_layers]

    if problems:
        head_layers = [n for n in report.mismatched if n in NUM_CLASSES_LAYERS]
        hint = (f" The class-dependent head layers differ (the file was trained with another NUM_CLASSES); "
                f"to fine-tune from it pass exclude={list(NUM_CLASSES_LAYERS)}." if head_layers else
                f" Pass exclude={report.mismatched} to skip these layers.")
        raise WeightsMismatchError(f"{path}: {len(problems)} layer(s) do not fit this model's config: "
                                   + "; ".join(problems[:6]) + ("; ..." if len(problems) > 6 else "") + "." + hint)
    for variable, value in assignments:
        variable.assign(value)
    log = logger.warning if (report.missing or report.unexpected) else logger.info
    log("%s%s%s", report.summary(),
        f"; missing {report.missing[:10]}" if report.missing else "",
        f"; unexpected {report.unexpected[:10]}" if report.unexpected else "")
    return report


def save_weights(keras_model: Any, filepath: str | os.PathLike) -> None:
    """Write matterport's HDF5 layout (tf-keras legacy h5 writer: layer_names, weight_names, nested rpn_model)."""
    path = os.fspath(filepath)
    if not path.endswith((".h5", ".hdf5", ".keras.h5")):
        raise ValueError(f"weights are written as HDF5; use a .h5 file name, got {path}")
    keras_model.save_weights(path, save_format="h5")


def inspect_weights(filepath: str | os.PathLike) -> WeightsInfo:
    """Backbone and NUM_CLASSES of a weights file, read from its layer names and head shapes."""
    path = os.fspath(filepath)
    with _open(path) as f:
        root = _weights_root(f, path)
        layers = {n: t for n, t in _file_layers(root, path).items() if n not in IGNORED_GROUPS}
        keras_version = _text(root.attrs["keras_version"]) if "keras_version" in root.attrs else None
    names = set(layers)
    resnet101_only = conv_name(4, chr(ord("b") + STAGE4_IDENTITY_BLOCKS["resnet101"] - 1), "2a")  # res4w_branch2a
    if tiny_layer_name(5) in names:
        backbone = "tiny"
    elif resnet101_only in names:
        backbone = "resnet101"
    elif conv_name(4, "a", "2a") in names:
        backbone = "resnet50"
    else:
        backbone = None
    num_classes = None
    if CLASS_LOGITS in layers:
        num_classes = int(layers[CLASS_LOGITS][-1].shape[-1])
    elif BBOX_FC in layers:
        num_classes = int(layers[BBOX_FC][-1].shape[-1]) // 4
    tensors = [t for ts in layers.values() for t in ts]
    return WeightsInfo(backbone=backbone, num_classes=num_classes, layer_names=list(layers),
                       num_tensors=len(tensors), num_params=int(sum(t.size for t in tensors)),
                       keras_version=keras_version)


