"""DamagePredictor: the model folder in, schema-valid responses out (what the HTTP layer calls).

Model folder (SageMaker's ``/opt/ml/model``): every ``mask_cnn_<type>.h5`` / ``mask_rcnn_<type>.h5`` is one
model for damage type ``<type>``; ``mask_cnn_<type>.json`` next to it (``ModelCard``) gives its exact config
and class names. Without a card the backbone and NUM_CLASSES are read from the weights file
(``mrcnn.weights.inspect_weights``) and everything else is ``DamageConfig``'s default. Anything wrong (no
folder, no weights, an unreadable file or card, a card that contradicts its weights, two files for one
type) raises ``errors.ModelLoadError`` naming the file and the reason, so ``/ping`` can stay 503 with a
log line that says exactly what to fix.

Scores. Each model's default threshold is its card's operating point (``operating_point.min_score``, chosen on
validation data by ``car_damage evaluate --calibrate`` / training), else its DETECTION_MIN_CONFIDENCE (card or
DamageConfig: 0.9, the old system's). The card's operating point also sets how detections are grouped into
damages (``grouping``). A request's ``min_score`` replaces it, but the graph drops detections below the threshold it
was built with, so a lower ``min_score`` only reaches down to ``score_floor`` (``from_model_dir``
argument; default: no floor, i.e. the model's threshold). ``models[].min_score`` in the response is the
threshold actually applied.

Threads. One lock serialises the model calls (one GPU, and Keras models are not re-entrant); decoding
and post-processing of other requests run in parallel with it. With batching on (``BatchSettings``,
``car_damage.answer.batching``) each model's concurrent requests are gathered into one detect() call.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from car_damage.answer.batching import BatchSettings, MicroBatcher, batch_sizes_to_warm
from car_damage.answer.grouping import GroupingSettings
from car_damage.answer.options import TYPE_NAME_PATTERN, InferenceOptions
from car_damage.answer.response import ModelDetections, ModelInfo, build_response
from car_damage.errors import BadOption, ImageDecodeError, ModelLoadError
from car_damage.model.card import ModelCard, card_path_for, damage_type_from_filename
from car_damage.model.config import DamageConfig

logger = logging.getLogger(__name__)

#: Smallest image side the detector accepts (boxes are normalised by side - 1).
MIN_IMAGE_SIDE = 2
#: Longest/shortest side beyond which resizing to the model's square input leaves no pixels to analyse.
MAX_ASPECT_RATIO = 20.0


@dataclass
class LoadedModel:
    """One damage type's model, ready to detect."""

    damage_type: str
    weights_path: Path
    class_names: list[str]
    version: str
    backbone: str
    default_min_score: float  # the model's own threshold (card's operating point / DETECTION_MIN_CONFIDENCE)
    graph_min_score: float  # what the graph was built with (<= default when a score floor is set)
    model: Any  # mrcnn.model.MaskRCNN in inference mode
    grouping: GroupingSettings = GroupingSettings()

    def info(self, min_score: float, merge: str | None = None) -> ModelInfo:
        grouping = self.grouping if merge is None else dataclasses.replace(self.grouping, mode=merge)
        return ModelInfo(self.damage_type, self.weights_path.name, self.version, self.backbone, min_score, grouping)


def _weights_files(model_dir: Path) -> dict[str, Path]:
    if not model_dir.exists():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} is not a directory")
    found: dict[str, Path] = {}
    for path in sorted(model_dir.glob("*.h5")):
        damage_type = damage_type_from_filename(path)
        if damage_type is None:
            logger.warning("ignoring %s: weights must be named mask_cnn_<type>.h5 or mask_rcnn_<type>.h5", path)
            continue
        if damage_type in found:
            raise ModelLoadError(f"two weights files for damage type {damage_type!r}: {found[damage_type]} and "
                                 f"{path}; keep one")
        found[damage_type] = path
    if not found:
        present = sorted(p.name for p in model_dir.iterdir())[:20]
        raise ModelLoadError(f"no weights in {model_dir}: expected mask_cnn_<type>.h5 or mask_rcnn_<type>.h5, "
                             f"found {present or 'an empty folder'}")
    return dict(sorted(found.items()))  # by damage type: the order models run and are listed in


def _card_or_inferred(weights_path: Path, damage_type: str) -> tuple[ModelCard, Any]:
    """The model card (from the sidecar, or built from the weights file) and what the file says."""
    from mrcnn.weights import WeightsFileError, inspect_weights

    try:
        info = inspect_weights(weights_path)
    except (WeightsFileError, OSError, KeyError, ValueError) as exc:
        raise ModelLoadError(f"{weights_path}: unreadable weights file ({exc})") from exc
    card_path = card_path_for(weights_path)
    if card_path.exists():
        try:
            card = ModelCard.load(card_path)
        except (ValueError, OSError) as exc:
            raise ModelLoadError(f"{card_path}: invalid model card ({exc})") from exc
        if card.damage_type.lower() != damage_type:
            raise ModelLoadError(f"{card_path}: the card says damage type {card.damage_type!r} but the file name "
                                 f"{weights_path.name} says {damage_type!r}")
        card_backbone = card.config_overrides.get("BACKBONE", DamageConfig.BACKBONE)
        if info.backbone is not None and isinstance(card_backbone, str) and card_backbone != info.backbone:
            raise ModelLoadError(f"{card_path}: the card says BACKBONE={card_backbone!r} but {weights_path.name} "
                                 f"holds {info.backbone} weights")
        if info.num_classes is not None and info.num_classes != len(card.class_names):
            raise ModelLoadError(f"{card_path}: the card lists {len(card.class_names)} classes "
                                 f"{card.class_names} but {weights_path.name} has NUM_CLASSES={info.num_classes}")
        return card, info
    if info.backbone is None or info.num_classes is None:
        raise ModelLoadError(f"{weights_path}: cannot infer the model from the file (backbone={info.backbone}, "
                             f"NUM_CLASSES={info.num_classes}); add the sidecar {card_path.name}")
    names = ["BG", damage_type] if info.num_classes == 2 else \
        ["BG"] + [f"{damage_type}_{i}" for i in range(1, info.num_classes)]
    card = ModelCard(damage_type=damage_type, class_names=names,
                     config_overrides={"BACKBONE": info.backbone, "NUM_CLASSES": info.num_classes})
    logger.info("%s: no sidecar; inferred BACKBONE=%s NUM_CLASSES=%d with DamageConfig defaults",
                weights_path, info.backbone, info.num_classes)
    return card, info


def load_model(weights_path: str | Path, card: ModelCard | None = None,
               score_floor: float | None = None) -> LoadedModel:
    """Build the inference model for one weights file and load it strictly (every layer, every shape)."""
    from mrcnn.model import MaskRCNN
    from mrcnn.weights import WeightsFileError

    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise ModelLoadError(f"weights file {weights_path} does not exist")
    damage_type = damage_type_from_filename(weights_path)
    if card is None:
        if damage_type is None:
            raise ModelLoadError(f"{weights_path.name}: name it mask_cnn_<type>.h5 or pass a ModelCard")
        card, _ = _card_or_inferred(weights_path, damage_type)
    damage_type = card.damage_type.lower()
    if not TYPE_NAME_PATTERN.match(damage_type):
        raise ModelLoadError(f"{weights_path}: damage type {card.damage_type!r} must be lower-case letters, digits, "
                             f"'_' or '-' (it becomes a JSON key and an option value)")
    try:
        base = card.to_config()
        default_min_score = card.default_min_score
        # The graph drops what scores below its threshold: build it low enough for the operating point.
        graph_min_score = min(float(base.DETECTION_MIN_CONFIDENCE), default_min_score)
        graph_min_score = graph_min_score if score_floor is None else min(graph_min_score, score_floor)
        grouping = GroupingSettings.from_operating_point(card.operating_point)
        config = card.to_config(DETECTION_MIN_CONFIDENCE=graph_min_score, IMAGES_PER_GPU=1, GPU_COUNT=1)
        model = MaskRCNN(mode="inference", config=config, model_dir=tempfile.gettempdir())
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"{weights_path}: cannot build the model from its config ({exc})") from exc
    try:
        report = model.load_weights(weights_path, by_name=True)
    except (WeightsFileError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{weights_path}: weights do not fit the configured model ({exc})") from exc
    if report.missing or report.unexpected:
        raise ModelLoadError(f"{weights_path}: weights do not match the model: missing layers "
                             f"{report.missing[:8]}, unexpected layers {report.unexpected[:8]}")
    backbone = config.BACKBONE if isinstance(config.BACKBONE, str) else getattr(config.BACKBONE, "__name__", "custom")
    return LoadedModel(damage_type, weights_path, list(card.class_names), card.version, backbone,
                       default_min_score, graph_min_score, model, grouping)


class DamagePredictor:
    """Runs every loaded model (or those a request asks for) and builds the response. Thread-safe."""

    def __init__(self, models: Sequence[LoadedModel], batching: BatchSettings | None = None) -> None:
        if not models:
            raise ModelLoadError("no models to serve")
        types = [m.damage_type for m in models]
        if len(set(types)) != len(types):
            raise ModelLoadError(f"two models for the same damage type: {types}")
        self.models = list(models)
        self._lock = threading.Lock()
        self.batching = batching or BatchSettings()
        self._batchers: dict[str, MicroBatcher] = {}
        if self.batching.enabled:
            for loaded in self.models:
                self._batchers[loaded.damage_type] = MicroBatcher(
                    self._locked_detect_batch(loaded), self.batching, name=loaded.damage_type)

    def _locked_detect_batch(self, loaded: LoadedModel):
        def detect_batch(images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
            with self._lock:
                return loaded.model.detect_batch(list(images))

        return detect_batch

    @classmethod
    def from_model_dir(cls, path: str | Path, warmup: bool = True, score_floor: float | None = None,
                       batching: BatchSettings | None = None) -> DamagePredictor:
        files = _weights_files(Path(path))
        models = [load_model(weights, score_floor=score_floor) for weights in files.values()]
        predictor = cls(models, batching)
        logger.info("loaded %d model(s) from %s: %s", len(models), path,
                    ", ".join(f"{m.damage_type} ({m.weights_path.name}, {m.backbone}, {m.version})" for m in models))
        if warmup:
            predictor.warmup()
        return predictor

    @classmethod
    def from_weights(cls, path: str | Path, card: ModelCard | None = None, warmup: bool = True,
                     score_floor: float | None = None, batching: BatchSettings | None = None) -> DamagePredictor:
        predictor = cls([load_model(path, card, score_floor=score_floor)], batching)
        if warmup:
            predictor.warmup()
        return predictor

    @property
    def damage_types(self) -> tuple[str, ...]:
        return tuple(m.damage_type for m in self.models)

    def warmup(self) -> None:
        """One detection per model and per batch size the batcher can form (1 when batching is off) on dummy
        images, so no request pays for tracing (or, with XLA, compiling) a graph, and one post-processing of a
        drawn stroke (skimage's thinning and GEOS load on first use: ~100 ms)."""
        from car_damage.answer.geometry import mask_to_polygons
        from car_damage.answer.measure import stroke

        bar = np.zeros((12, 40), dtype=bool)
        bar[4:8, 4:36] = True
        stroke(bar)
        mask_to_polygons(bar, 1.0)
        sizes = batch_sizes_to_warm(self.batching) if self.batching.enabled else [1]
        for loaded in self.models:
            config = loaded.model.config
            side = int(config.IMAGE_MIN_DIM)
            dummy = np.full((side, side * 4 // 3, 3), 127, dtype=np.uint8)
            for size in sizes:
                started = time.perf_counter()
                with self._lock:
                    loaded.model.detect_batch([dummy] * size)
                logger.info("warmed up %s at batch %d in %.0f ms", loaded.damage_type, size,
                            (time.perf_counter() - started) * 1000)

    def close(self) -> None:
        """Stop the batching threads (nothing to do with batching off)."""
        for batcher in self._batchers.values():
            batcher.close()

    def predict(self, rgb: np.ndarray, options: InferenceOptions | None = None, *,
                decode_ms: float | None = None) -> dict[str, Any]:
        """Detect damages in an RGB uint8 [H, W, 3] image; returns the schema-valid response dict.

        ``decode_ms`` (time the caller spent decoding) is reported and counted in ``timings_ms.total``.
        """
        started = time.perf_counter()
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"predict needs an RGB uint8 image [H, W, 3], got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        if min(height, width) < MIN_IMAGE_SIDE or max(height, width) > MAX_ASPECT_RATIO * min(height, width):
            raise ImageDecodeError(f"image is {width}x{height} px; damage detection needs both sides >= "
                                   f"{MIN_IMAGE_SIDE} px and an aspect ratio of at most {MAX_ASPECT_RATIO:g}:1")
        options = options or InferenceOptions()
        selected = self._select(options)

        detections, infos, inference_ms, queue_ms = [], [], 0.0, 0.0
        for loaded in selected:
            threshold = loaded.default_min_score if options.min_score is None else options.min_score
            threshold = max(threshold, loaded.graph_min_score)
            batcher = self._batchers.get(loaded.damage_type)
            if batcher is not None:
                # queue = waiting for the batch to fill and for the model; inference = the batch's model call.
                batched = batcher.detect(rgb)
                result = batched.result
                inference_ms += batched.inference_ms
                queue_ms += batched.queue_ms
            else:
                waited = time.perf_counter()
                with self._lock:
                    # Model time only: waiting for other requests' model calls is reported as "queue".
                    model_started = time.perf_counter()
                    result = loaded.model.detect([rgb])[0]
                    inference_ms += (time.perf_counter() - model_started) * 1000
                queue_ms += (model_started - waited) * 1000
            keep = np.asarray(result["scores"]) >= threshold
            detections.append(ModelDetections(loaded.damage_type, loaded.class_names, result["rois"][keep],
                                              result["class_ids"][keep], result["scores"][keep],
                                              result["masks"][:, :, keep], loaded.grouping))
            infos.append(loaded.info(threshold, options.merge))

        post_started = time.perf_counter()
        timings = {"queue": queue_ms, "inference": inference_ms, "postprocess": 0.0, "total": 0.0}
        if decode_ms is not None:
            timings["decode"] = decode_ms
        response = build_response(rgb.shape[:2], detections, infos, options, timings)
        done = time.perf_counter()
        response["timings_ms"]["postprocess"] = round((done - post_started) * 1000, 3)
        response["timings_ms"]["total"] = round((done - started) * 1000 + (decode_ms or 0.0), 3)
        return response

    def _select(self, options: InferenceOptions) -> list[LoadedModel]:
        if options.types is None:
            return self.models
        unknown = [t for t in options.types if t not in self.damage_types]
        if unknown:
            raise BadOption(f"types: unknown damage type {unknown[0]!r}; this endpoint serves: "
                            f"{', '.join(self.damage_types)}")
        return [m for m in self.models if m.damage_type in options.types]

    def annotate(self, rgb: np.ndarray, response: dict[str, Any]) -> np.ndarray:
        """Splash + outlines of ``response`` on ``rgb`` (RGB uint8)."""
        from car_damage.answer.render import annotate

        return annotate(rgb, response)

    def describe(self) -> list[dict[str, Any]]:
        """The loaded models, as the response lists them (default thresholds)."""
        return [m.info(m.default_min_score).to_json() for m in self.models]
