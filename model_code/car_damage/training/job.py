"""SageMaker training entry (``container/train`` runs ``python -m car_damage.training.job``).

Contract (see docs/training.md):
- hyperparameters: ``/opt/ml/input/config/hyperparameters.json``, every value a string; parsed strictly
  (``"3"`` is an int, ``"3.0"`` is not; booleans are true/false/1/0/yes/no); unknown names fail the job. Names
  are the CLI's (``steps-per-epoch`` or ``steps_per_epoch``); ``sagemaker_*`` and ``_tuning_objective_metric``
  (added by SageMaker tooling) are ignored.
- data: channels ``train`` and ``val`` under ``/opt/ml/input/data/``, each an annotated folder, or one channel
  (``training`` or ``train``) holding ``train/`` and ``val/``. An optional channel ``coco`` holding
  ``mask_rcnn_coco.h5`` replaces the download for ``weights=coco`` (network-isolated jobs).
- outputs: ``mask_cnn_<label>.h5`` + sidecar in ``/opt/ml/model/``; evaluation JSON, PR plot and loss curve in
  ``/opt/ml/output/data/``; checkpoints in ``/opt/ml/checkpoints/`` (synced to S3 for spot training). A job
  that finds checkpoints of its label there resumes from the newest (``--weights last``).
- SIGTERM (spot interruption, StopTrainingJob, MaxRuntime): the current step finishes, the weights are saved as
  a checkpoint of the last completed epoch and the job exits 0; the next job resumes from it.
- any failure: its reason goes to ``/opt/ml/output/failure`` (the first 1024 characters become the job's
  FailureReason) and the exit status is 1.
Local runs: ``SM_ROOT`` replaces ``/opt/ml``; ``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR``, ``SM_CHECKPOINT_DIR``,
``SM_INPUT_DIR`` override single folders.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from car_damage.training.train import TrainingStopped, TrainOptions, train_model

logger = logging.getLogger(__name__)

DEFAULT_ROOT = "/opt/ml"
FAILURE_REASON_CHARS = 1024
IGNORED_PREFIXES = ("sagemaker_", "_tuning_objective_metric")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


class HyperparameterError(ValueError):
    pass


class TrainingInterrupted(TrainingStopped):
    """Raised from the training loop after SIGTERM, once the checkpoint is written."""


@dataclass(frozen=True)
class JobPaths:
    root: Path
    input: Path
    model: Path
    output_data: Path
    failure: Path
    checkpoints: Path

    @property
    def hyperparameters(self) -> Path:
        return self.input / "config" / "hyperparameters.json"

    @property
    def data(self) -> Path:
        return self.input / "data"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> JobPaths:
        env = os.environ if env is None else env
        root = Path(env.get("SM_ROOT", DEFAULT_ROOT))
        return cls(
            root=root,
            input=Path(env.get("SM_INPUT_DIR", root / "input")),
            model=Path(env.get("SM_MODEL_DIR", root / "model")),
            output_data=Path(env.get("SM_OUTPUT_DATA_DIR", root / "output" / "data")),
            failure=root / "output" / "failure",
            checkpoints=Path(env.get("SM_CHECKPOINT_DIR", root / "checkpoints")),
        )


def _parse_int(name: str, text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise HyperparameterError(f"hyperparameter {name}={text!r}: expected an integer")
    return int(text)


def _parse_float(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise HyperparameterError(f"hyperparameter {name}={text!r}: expected a number") from None
    if not math.isfinite(value):
        raise HyperparameterError(f"hyperparameter {name}={text!r}: expected a finite number")
    return value


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise HyperparameterError(f"hyperparameter {name}={text!r}: expected true or false")


def _parse_list(name: str, text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise HyperparameterError(f"hyperparameter {name}={text!r}: expected a comma-separated list")
    return items


#: hyperparameter name -> (TrainOptions field, parser). Aliases map onto the same field.
HYPERPARAMETERS: dict[str, tuple[str, Any]] = {
    "weights": ("weights", None), "label": ("label", None), "classes": ("classes", _parse_list),
    "attribute": ("attributes", _parse_list), "epochs": ("epochs", _parse_int),
    "steps_per_epoch": ("steps_per_epoch", _parse_int), "val_steps": ("validation_steps", _parse_int),
    "validation_steps": ("validation_steps", _parse_int), "layers": ("layers", None),
    "backbone": ("backbone", None), "image_size": ("image_size", _parse_int),
    "lr": ("learning_rate", _parse_float), "learning_rate": ("learning_rate", _parse_float),
    "augment": ("augment", _parse_bool), "min_confidence": ("min_confidence", _parse_float),
    "images_per_gpu": ("images_per_gpu", _parse_int), "drop_leaked_val": ("drop_leaked_val", _parse_bool),
    "gpu_count": ("gpu_count", _parse_int),
    "evaluate": ("evaluate", _parse_bool), "calibrate": ("calibrate", _parse_bool),
}
BACKBONES = ("resnet101", "resnet50", "tiny")


def parse_hyperparameters(raw: Any) -> dict[str, Any]:
    """SageMaker's {name: "string"} -> TrainOptions keyword arguments; HyperparameterError on anything odd."""
    if not isinstance(raw, Mapping):
        raise HyperparameterError("hyperparameters.json must hold a JSON object")
    parsed: dict[str, Any] = {}
    for key, value in raw.items():
        if any(str(key).startswith(prefix) for prefix in IGNORED_PREFIXES):
            logger.info("ignoring SageMaker hyperparameter %s", key)
            continue
        name = str(key).strip().lower().replace("-", "_")
        if name not in HYPERPARAMETERS:
            raise HyperparameterError(f"unknown hyperparameter {key!r}; known: {', '.join(sorted(HYPERPARAMETERS))}")
        if not isinstance(value, str):
            raise HyperparameterError(f"hyperparameter {key}: SageMaker passes strings, got {type(value).__name__}")
        text = value.strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':  # the SageMaker Python SDK JSON-quotes some strings
            text = json.loads(text)
        field_name, parser = HYPERPARAMETERS[name]
        if field_name in parsed:
            raise HyperparameterError(f"hyperparameter {key}: given twice (under another alias)")
        parsed[field_name] = parser(key, text) if parser else text
    if parsed.get("backbone", BACKBONES[0]) not in BACKBONES:
        raise HyperparameterError(f"hyperparameter backbone={parsed['backbone']!r}: expected one of {BACKBONES}")
    return parsed


def _is_split(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*.json"))


def resolve_channels(data_dir: Path) -> tuple[Path, Path]:
    """(train folder, val folder) from the channel layout; ValueError naming what was found otherwise."""
    train, val = data_dir / "train", data_dir / "val"
    if _is_split(train) and _is_split(val):
        return train, val
    for channel in ("training", "train"):
        holder = data_dir / channel
        if _is_split(holder / "train") and _is_split(holder / "val"):
            return holder / "train", holder / "val"
    found = sorted(p.name for p in data_dir.iterdir()) if data_dir.is_dir() else []
    raise ValueError(f"no training data under {data_dir}: expected channels train/ and val/ (each with images and "
                     f"an annotation JSON) or one channel 'training' holding train/ and val/; found {found}")


class StopOnSigterm:
    """SIGTERM handler + Keras callback: after the current step, save a checkpoint and stop training."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        logger.warning("SIGTERM received: saving a checkpoint after the current step")
        self.requested = True

    def __call__(self) -> bool:
        return self.requested

    def callbacks_for(self, model: Any) -> list:
        import tf_keras as keras

        from mrcnn.weights import save_weights

        stop = self

        class _Checkpointer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                self.epoch = epoch

            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                if not stop.requested:
                    return
                # Named after the completed epochs: resuming repeats the cut epoch from these (newer) weights.
                path = model.checkpoint_path.format(epoch=self.epoch)
                save_weights(model.keras_model, path)
                logger.warning("saved interruption checkpoint %s", path)
                raise TrainingInterrupted(path)

        return [_Checkpointer()]


def visible_gpu_count() -> int:
    """GPUs this container sees (1 on a CPU-only instance: one device, the CPU)."""
    import tensorflow as tf

    return max(1, len(tf.config.list_physical_devices("GPU")))


def has_checkpoint(checkpoints: Path, label: str) -> bool:
    return any(checkpoints.glob(f"{label.lower()}*/mask_rcnn_{label.lower()}_*.h5"))


def run_job(paths: JobPaths, stop: StopOnSigterm) -> int:
    if paths.hyperparameters.is_file():
        try:
            raw = json.loads(paths.hyperparameters.read_text())
        except json.JSONDecodeError as exc:
            raise HyperparameterError(f"{paths.hyperparameters}: not valid JSON ({exc})") from exc
    else:
        logger.warning("%s not found: using the defaults", paths.hyperparameters)
        raw = {}
    values = {"evaluate": True, **parse_hyperparameters(raw)}
    if "gpu_count" not in values:  # train on every GPU the instance has
        values["gpu_count"] = visible_gpu_count()
    logger.info("training on %d device(s), %d image(s) each", values["gpu_count"], values.get("images_per_gpu", 1))
    train_dir, val_dir = resolve_channels(paths.data)
    options = TrainOptions(train_dir=train_dir, val_dir=val_dir, logs=paths.checkpoints, out=paths.model,
                           report_dir=paths.output_data, **values)
    coco_channel = paths.data / "coco" / "mask_rcnn_coco.h5"
    if coco_channel.is_file():  # network-isolated jobs bring the COCO weights as a channel
        options.coco_path = coco_channel
    if has_checkpoint(paths.checkpoints, options.label):
        logger.info("checkpoints found in %s: resuming from the newest", paths.checkpoints)
        options.weights = "last"
    try:
        outcome = train_model(options, callbacks_for=stop.callbacks_for, stop_requested=stop)
    except TrainingStopped as exc:
        logger.warning("stopped by SIGTERM (%s); the next job resumes from the newest checkpoint", exc)
        return 0
    if outcome.evaluation is not None:
        report = outcome.evaluation
        # One "name=value" line per metric, for AlgorithmSpecification.MetricDefinitions regexes.
        for name, value in (("val_mAP50", report.map50), ("val_mAP50_95", report.map50_95),
                            ("val_recall", report.recall), ("val_F1", report.f1)):
            print(f"{name}={value:.6f}", flush=True)
    logger.info("deliverable %s, epoch %d", outcome.weights_path, outcome.epoch)
    return 0


def write_failure(paths: JobPaths, exc: BaseException) -> None:
    reason = f"{type(exc).__name__}: {exc}"
    try:
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        paths.failure.write_text(reason[:FAILURE_REASON_CHARS] + "\n")
    except OSError as write_error:
        logger.error("could not write %s: %s", paths.failure, write_error)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines drown the output
    paths = JobPaths.from_env()
    stop = StopOnSigterm()
    stop.install()
    try:
        return run_job(paths, stop)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach /opt/ml/output/failure
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            return 0
        traceback.print_exc()
        write_failure(paths, exc)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
