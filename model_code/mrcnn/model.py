"""``MaskRCNN``: matterport's model class on TF 2 (``import mrcnn.model as modellib`` works unchanged).

Shape shorthand:
    B  BATCH_SIZE     H, W  molded size     N  detections kept for one image     h, w  that image's original size
    detect() -> one dict per image: rois int32 [N, (y1, x1, y2, x2)] original pixels, class_ids int32 [N],
    scores float32 [N], masks bool [h, w, N]

Inference runs through ``mrcnn.graph.InferenceRunner`` (one tf.function, heads only on real rows);
``keras_model`` is matterport's inference (or training) Keras model holding the weights.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mrcnn import weights as weights_io
from mrcnn.anchors import get_anchors as _normalized_anchors
from mrcnn.graph import InferenceRunner, build_inference_graphs
from mrcnn.image_meta import compose_image_meta, parse_image_meta  # noqa: F401  (matterport re-exports)
from mrcnn.layers.backbone import conv_block, identity_block, resnet_graph  # noqa: F401
from mrcnn.layers.detection import DetectionLayer  # noqa: F401
from mrcnn.layers.heads import build_fpn_mask_graph, fpn_classifier_graph  # noqa: F401
from mrcnn.layers.proposal import ProposalLayer  # noqa: F401
from mrcnn.layers.roi_align import PyramidROIAlign  # noqa: F401
from mrcnn.layers.rpn import build_rpn_model, rpn_graph  # noqa: F401
from mrcnn.weights import LoadReport

logger = logging.getLogger(__name__)

MODES = ("training", "inference")
#: A checkpoint path written by train(): <model_dir>/<name>YYYYmmddTHHMM/mask_rcnn_<name>_<epoch>.h5
CHECKPOINT_PATTERN = re.compile(
    r".*[/\\][\w-]+(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})[/\\]mask\_rcnn\_[\w-]+(\d{4})\.h5")
CHECKPOINT_PREFIX = "mask_rcnn"


def log(text: str, array: np.ndarray | None = None) -> None:
    """matterport's debugging helper: print text and, for an array, its shape, min, max and dtype."""
    if array is not None:
        text = text.ljust(25)
        text += f"shape: {str(array.shape):20}  "
        if array.size:
            text += f"min: {array.min():10.5f}  max: {array.max():10.5f}"
        else:
            text += f"min: {'':10}  max: {'':10}"
        text += f"  {array.dtype}"
    print(text)


def _molding():
    # Imported lazily: mrcnn.molding is owned by the NumPy side of the engine.
    from mrcnn import molding

    return molding


class MaskRCNN:
    """matterport's Mask R-CNN model class: build, load weights, detect, train (delegated to mrcnn.training)."""

    def __init__(self, mode: str, config: Any, model_dir: str | os.PathLike) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not config.NAME:
            raise ValueError("config.NAME must be set (it names log directories and checkpoints)")
        self.mode = mode
        self.config = config
        self.model_dir = os.fspath(model_dir)
        self._runner: InferenceRunner | None = None
        self.set_log_dir()
        self.keras_model = self.build(mode=mode, config=config)

    # ----------------------------------------------------------------------------------------------- build
    def build(self, mode: str, config: Any) -> Any:
        """Build the Keras model for ``mode`` (training via mrcnn.training_graph, imported lazily)."""
        if mode == "training":
            from mrcnn.distribute import make_strategy
            from mrcnn.training_graph import build_training_model

            strategy = make_strategy(config)  # GPU_COUNT > 1: variables mirrored over the devices
            if strategy is None:
                return build_training_model(config)
            with strategy.scope():
                return build_training_model(config)
        graphs = build_inference_graphs(config)
        self._runner = InferenceRunner(graphs, config)
        return graphs.keras_model

    # ---------------------------------------------------------------------------------------------- paths
    def set_log_dir(self, model_path: str | os.PathLike | None = None) -> None:
        """Set log_dir, checkpoint_path and epoch; a checkpoint path restores its date and epoch (matterport)."""
        self.epoch = 0
        now = datetime.datetime.now()
        if model_path:
            match = CHECKPOINT_PATTERN.match(os.fspath(model_path))
            if match:
                now = datetime.datetime(*(int(match.group(i)) for i in range(1, 6)))
                # The file's epoch number is 1-based (Keras), so it is already the next epoch to run.
                self.epoch = int(match.group(6))
                logger.info("Re-starting from epoch %d", self.epoch)
        name = self.config.NAME.lower()
        self.log_dir = os.path.join(self.model_dir, f"{name}{now:%Y%m%dT%H%M}")
        self.checkpoint_path = os.path.join(self.log_dir, f"{CHECKPOINT_PREFIX}_{name}_{{epoch:04d}}.h5")

    def find_last(self) -> str:
        """Path of the last checkpoint of the last training run of this config under model_dir."""
        name = self.config.NAME.lower()
        dir_names = sorted(d for d in next(os.walk(self.model_dir))[1] if d.startswith(name)) \
            if os.path.isdir(self.model_dir) else []
        if not dir_names:
            raise FileNotFoundError(errno.ENOENT, f"Could not find model directory under {self.model_dir}")
        dir_name = os.path.join(self.model_dir, dir_names[-1])
        checkpoints = sorted(f for f in next(os.walk(dir_name))[2] if f.startswith(CHECKPOINT_PREFIX))
        if not checkpoints:
            raise FileNotFoundError(errno.ENOENT, f"Could not find weight files in {dir_name}")
        return os.path.join(dir_name, checkpoints[-1])

    # -------------------------------------------------------------------------------------------- weights
    def load_weights(self, filepath: str | os.PathLike, by_name: bool = False,
                     exclude: Iterable[str] | None = None) -> LoadReport:
        """Load matterport-format weights (see mrcnn.weights.load_weights); returns the LoadReport."""
        report = weights_io.load_weights(self.keras_model, filepath, by_name=by_name, exclude=exclude)
        self.set_log_dir(filepath)
        return report

    def save_weights(self, filepath: str | os.PathLike) -> None:
        """Write the weights in matterport's HDF5 layout."""
        weights_io.save_weights(self.keras_model, filepath)

    def get_imagenet_weights(self) -> str:
        """Download (once) the ImageNet ResNet-50 weights matterport starts from; returns the local path."""
        from mrcnn.download import download_imagenet_weights

        return download_imagenet_weights()

    # ------------------------------------------------------------------------------------------- inference
    def get_anchors(self, image_shape: Sequence[int]) -> np.ndarray:
        """Normalised anchors [A, 4] for a molded image shape (cached per shape)."""
        return _normalized_anchors(self.config, tuple(int(v) for v in image_shape))

    def _check_inference(self, images: Sequence[np.ndarray]) -> None:
        if self.mode != "inference":
            raise ValueError("Create model in inference mode.")
        if len(images) != self.config.BATCH_SIZE:
            raise ValueError(f"len(images) must be equal to BATCH_SIZE ({self.config.BATCH_SIZE}), got {len(images)}")

    def _run(self, molded_images: np.ndarray, image_metas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image_shape = molded_images[0].shape
        for shape in (g.shape for g in molded_images[1:]):
            if shape != image_shape:
                raise ValueError("After resizing, all images must have the same size. Check IMAGE_RESIZE_MODE "
                                 "and image sizes.")
        anchors = self.get_anchors(image_shape)
        anchors = np.broadcast_to(anchors, (len(molded_images),) + anchors.shape)
        return self._runner(np.asarray(molded_images, np.float32), np.asarray(image_metas, np.float32), anchors)

    @staticmethod
    def _result(detections: np.ndarray, mrcnn_mask: np.ndarray, original_shape: Sequence[int],
                image_shape: Sequence[int], window: Sequence[int]) -> dict[str, np.ndarray]:
        rois, class_ids, scores, masks = _molding().unmold_detections(detections, mrcnn_mask, original_shape,
                                                                      image_shape, window)
        return {"rois": np.asarray(rois, np.int32), "class_ids": np.asarray(class_ids, np.int32),
                "scores": np.asarray(scores, np.float32), "masks": np.asarray(masks, dtype=bool)}

    def detect(self, images: Sequence[np.ndarray], verbose: int = 0) -> list[dict[str, np.ndarray]]:
        """Detect instances in BATCH_SIZE images (any size; molded per config). One result dict per image."""
        self._check_inference(images)
        return self._detect(images, verbose)

    def detect_batch(self, images: Sequence[np.ndarray], verbose: int = 0) -> list[dict[str, np.ndarray]]:
        """Like detect() but for any number of images (>= 1) in one graph call, whatever BATCH_SIZE is: the
        service's micro-batches. Needs a resize mode that molds every image to one shape ('square', 'crop')."""
        if self.mode != "inference":
            raise ValueError("Create model in inference mode.")
        if len(images) == 0:
            raise ValueError("detect_batch needs at least one image")
        return self._detect(images, verbose)

    def _detect(self, images: Sequence[np.ndarray], verbose: int) -> list[dict[str, np.ndarray]]:
        if verbose:
            logger.info("Processing %d images", len(images))
        molded_images, image_metas, windows = _molding().mold_inputs(list(images), self.config)
        detections, mrcnn_mask = self._run(molded_images, image_metas)
        return [self._result(detections[i], mrcnn_mask[i], image.shape, molded_images[i].shape, windows[i])
                for i, image in enumerate(images)]

    def detect_molded(self, molded_images: np.ndarray, image_metas: np.ndarray,
                      verbose: int = 0) -> list[dict[str, np.ndarray]]:
        """Detect on images already molded (mean subtracted, resized); the window is the whole image."""
        self._check_inference(molded_images)
        if verbose:
            logger.info("Processing %d molded images", len(molded_images))
        detections, mrcnn_mask = self._run(molded_images, image_metas)
        results = []
        for i, image in enumerate(molded_images):
            window = np.array([0, 0, image.shape[0], image.shape[1]], np.int32)
            results.append(self._result(detections[i], mrcnn_mask[i], image.shape, image.shape, window))
        return results

    # -------------------------------------------------------------------------------------------- training
    def compile(self, learning_rate: float, momentum: float, total_steps: int | None = None) -> None:
        """matterport's compile(); ``total_steps`` is needed by a "cosine" LEARNING_RATE_SCHEDULE."""
        from mrcnn.training import compile_model

        compile_model(self, learning_rate, momentum, total_steps)

    def train(self, train_dataset: Any, val_dataset: Any, learning_rate: float, epochs: int, layers: str,
              augmentation: Any = None, custom_callbacks: list | None = None,
              no_augmentation_sources: list | None = None, verbose: int = 1, seed: int | None = None) -> Any:
        """matterport's train(); ``verbose`` (Keras progress) and ``seed`` (reproducible sampling) are extras."""
        if self.mode != "training":
            raise ValueError("Create model in training mode.")
        from mrcnn.training import train

        return train(self, train_dataset, val_dataset, learning_rate, epochs, layers, augmentation=augmentation,
                     custom_callbacks=custom_callbacks, no_augmentation_sources=no_augmentation_sources,
                     verbose=verbose, seed=seed)

    # ------------------------------------------------------------------------------------------ inspection
    def get_trainable_layers(self) -> list:
        """Layers that own weights; TimeDistributed wrappers are unwrapped (matterport)."""
        layers = []
        for layer in self.keras_model.layers:
            inner = getattr(layer, "layer", None)
            candidate = inner if layer.__class__.__name__ == "TimeDistributed" and inner is not None else layer
            if candidate.get_weights():
                layers.append(candidate)
        return layers
