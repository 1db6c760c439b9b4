"""Training input pipeline: load, resize, augment, build targets, batch; prefetched by a background thread.

Shape shorthand (one batch, the inputs of the training model in matterport's order):
    images        [B, H, W, 3] float32, molded (mean pixel subtracted)
    image_meta    [B, META] float32
    rpn_match     [B, A, 1] int32          rpn_bbox   [B, R, 4] float32 (R = RPN_TRAIN_ANCHORS_PER_IMAGE)
    gt_class_ids  [B, G] int32             gt_boxes   [B, G, 4] float32 pixels (G = MAX_GT_INSTANCES)
    gt_masks      [B, h, w, G] bool        (h, w) = MINI_MASK_SHAPE with USE_MINI_MASK, else (H, W)

Loading failures are logged with the image id and its reference and the image is skipped; after
``max_errors`` failures the generator raises ``SampleLoadError`` naming the last image (matterport skips
and raises after 5 as well). Images without any instance are skipped, as in matterport.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from mrcnn import utils
from mrcnn.anchors import compute_backbone_shapes, generate_pyramid_anchors
from mrcnn.config import Config
from mrcnn.data.augment import AugmentFn
from mrcnn.data.targets import build_rpn_targets
from mrcnn.image_meta import compose_image_meta
from mrcnn.molding import mold_image

logger = logging.getLogger(__name__)

#: Failures tolerated (each logged) before the generator gives up, as in matterport.
DEFAULT_MAX_ERRORS = 5

Batch = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class SampleLoadError(RuntimeError):
    """Raised when too many images failed to load; names the image that failed last."""

    def __init__(self, image_id: int, reference: str, message: str) -> None:
        super().__init__(f"image {image_id} ({reference}): {message}")
        self.image_id = image_id
        self.reference = reference


@dataclass
class TrainingSample:
    """One image ready for target building: resized (not molded) image and its instances."""

    image: np.ndarray  # [H, W, 3] uint8
    image_meta: np.ndarray  # [META] float32
    class_ids: np.ndarray  # [N] int32
    boxes: np.ndarray  # [N, 4] int32 pixels
    masks: np.ndarray  # [h, w, N] bool (mini masks with USE_MINI_MASK)


def _image_reference(dataset, image_id: int) -> str:
    info = dataset.image_info[image_id]
    return str(info.get("path") or info.get("id") or image_id)


def load_image_gt(
    dataset, config: Config, image_id: int, augmentation: AugmentFn | None = None
) -> TrainingSample:
    """Load one image and its masks, resize both, augment, drop emptied instances, compute boxes and meta."""
    image = dataset.load_image(image_id)
    masks, class_ids = dataset.load_mask(image_id)
    masks = np.asarray(masks)
    class_ids = np.asarray(class_ids, dtype=np.int32).reshape(-1)
    if masks.ndim != 3 or masks.shape[2] != class_ids.shape[0]:
        raise ValueError(f"load_mask returned masks {masks.shape} for {class_ids.shape[0]} class ids")
    original_shape = image.shape
    image, window, scale, padding, crop = utils.resize_image(
        image,
        min_dim=config.IMAGE_MIN_DIM,
        min_scale=config.IMAGE_MIN_SCALE,
        max_dim=config.IMAGE_MAX_DIM,
        mode=config.IMAGE_RESIZE_MODE,
    )
    masks = utils.resize_mask(masks, scale, padding, crop)
    if augmentation is not None:
        shapes = (image.shape, masks.shape)
        image, masks = augmentation(image, masks.astype(bool))
        if (image.shape, masks.shape) != shapes:
            raise ValueError(f"augmentation changed shapes {shapes} -> {(image.shape, masks.shape)}")
    masks = masks.astype(bool)
    keep = np.sum(masks, axis=(0, 1)) > 0
    masks, class_ids = masks[:, :, keep], class_ids[keep]
    boxes = utils.extract_bboxes(masks).astype(np.int32)

    active_class_ids = np.zeros([dataset.num_classes], dtype=np.int32)
    source = dataset.image_info[image_id]["source"]
    active_class_ids[dataset.source_class_ids[source]] = 1
    if config.USE_MINI_MASK:
        masks = utils.minimize_mask(boxes, masks, config.MINI_MASK_SHAPE)
    image_meta = compose_image_meta(image_id, original_shape, image.shape, window, scale, active_class_ids)
    return TrainingSample(
        image=image,
        image_meta=np.asarray(image_meta, dtype=np.float32),
        class_ids=class_ids,
        boxes=boxes,
        masks=masks.astype(bool),
    )


def training_anchors(config: Config) -> np.ndarray:
    """[A, 4] pixel anchors for config.IMAGE_SHAPE, in the order the RPN predicts them."""
    image_shape = tuple(int(v) for v in config.IMAGE_SHAPE)
    return np.asarray(
        generate_pyramid_anchors(
            config.RPN_ANCHOR_SCALES,
            config.RPN_ANCHOR_RATIOS,
            compute_backbone_shapes(config, image_shape),
            config.BACKBONE_STRIDES,
            config.RPN_ANCHOR_STRIDE,
        ),
        dtype=np.float32,
    )


def mask_shape(config: Config) -> tuple[int, int]:
    """Spatial shape of the gt_masks input."""
    if config.USE_MINI_MASK:
        return int(config.MINI_MASK_SHAPE[0]), int(config.MINI_MASK_SHAPE[1])
    return int(config.IMAGE_SHAPE[0]), int(config.IMAGE_SHAPE[1])


def empty_batch(config: Config, num_anchors: int) -> Batch:
    """Zero-filled arrays of one batch (the padding every sample is written into)."""
    batch, max_gt = config.BATCH_SIZE, config.MAX_GT_INSTANCES
    height, width, channels = (int(v) for v in config.IMAGE_SHAPE)
    return (
        np.zeros([batch, height, width, channels], np.float32),
        np.zeros([batch, config.IMAGE_META_SIZE], np.float32),
        np.zeros([batch, num_anchors, 1], np.int32),
        np.zeros([batch, config.RPN_TRAIN_ANCHORS_PER_IMAGE, 4], np.float32),
        np.zeros([batch, max_gt], np.int32),
        np.zeros([batch, max_gt, 4], np.float32),
        np.zeros([batch, *mask_shape(config), max_gt], bool),
    )


def batch_signature(config: Config, num_anchors: int) -> tuple[tf.TensorSpec, ...]:
    """tf.data output signature matching ``empty_batch``."""
    return tuple(tf.TensorSpec(array.shape, tf.as_dtype(array.dtype)) for array in empty_batch(config, num_anchors))


class TrainingBatches:
    """Endless iterator of training batches (matterport's data_generator, without the thread pool).

    dataset: an ``mrcnn.utils.Dataset`` (prepared).  augmentation: ``augmentation(image, masks)`` or None.
    no_augmentation_sources: dataset sources that are never augmented.  seed: reproducible order/sampling.
    """

    def __init__(
        self,
        dataset,
        config: Config,
        shuffle: bool = True,
        augmentation: AugmentFn | None = None,
        no_augmentation_sources: list[str] | None = None,
        seed: int | None = None,
        max_errors: int = DEFAULT_MAX_ERRORS,
    ) -> None:
        if len(dataset.image_ids) == 0:
            raise ValueError("the dataset has no images (did you call dataset.prepare()?)")
        if augmentation is not None and (hasattr(augmentation, "to_deterministic") or not callable(augmentation)):
            # imgaug augmenters are callable but with another signature; refuse them instead of misapplying.
            raise TypeError(
                "augmentation must be a callable(image, masks) -> (image, masks) such as "
                f"mrcnn.data.augment.Augmenter(); got {type(augmentation).__name__}"
            )
        self.dataset = dataset
        self.config = config
        self.shuffle = shuffle
        self.augmentation = augmentation
        self.no_augmentation_sources = set(no_augmentation_sources or ())
        self.max_errors = max_errors
        self.rng = np.random.default_rng(seed)
        self.anchors = training_anchors(config)

    def samples(self) -> Iterator[tuple[int, TrainingSample]]:
        """Endless (image_id, sample) stream with error accounting; skips images without instances."""
        image_ids = np.copy(self.dataset.image_ids)
        errors = 0
        while True:
            if self.shuffle:
                self.rng.shuffle(image_ids)
            yielded = False
            for image_id in image_ids:
                image_id = int(image_id)
                source = self.dataset.image_info[image_id]["source"]
                augment = None if source in self.no_augmentation_sources else self.augmentation
                try:
                    sample = load_image_gt(self.dataset, self.config, image_id, augment)
                    self._check_shape(sample)
                except Exception as exc:
                    errors += 1
                    reference = _image_reference(self.dataset, image_id)
                    logger.exception("error loading image %d (%s)", image_id, reference)
                    if errors > self.max_errors:
                        raise SampleLoadError(image_id, reference, f"{type(exc).__name__}: {exc}") from exc
                    continue
                if not np.any(sample.class_ids > 0):
                    logger.debug("skipping image %d: no instances", image_id)
                    continue
                yielded = True
                yield image_id, sample
            if not yielded and errors == 0:
                raise ValueError("no image of the dataset has an instance with a positive class id")

    def _check_shape(self, sample: TrainingSample) -> None:
        expected = tuple(int(v) for v in self.config.IMAGE_SHAPE)
        if sample.image.shape != expected:
            raise ValueError(
                f"resized image has shape {sample.image.shape}, the training graph needs {expected}; "
                f"use IMAGE_RESIZE_MODE 'square' or 'crop' (got {self.config.IMAGE_RESIZE_MODE!r})"
            )

    def __iter__(self) -> Iterator[Batch]:
        config = self.config
        stream = self.samples()
        while True:
            arrays = empty_batch(config, self.anchors.shape[0])
            images, metas, rpn_match, rpn_bbox, gt_class_ids, gt_boxes, gt_masks = arrays
            for slot in range(config.BATCH_SIZE):
                _, sample = next(stream)
                class_ids, boxes, masks = sample.class_ids, sample.boxes, sample.masks
                targets = build_rpn_targets(
                    self.anchors, class_ids, boxes, config.RPN_TRAIN_ANCHORS_PER_IMAGE,
                    config.RPN_BBOX_STD_DEV, self.rng,
                )
                if class_ids.shape[0] > config.MAX_GT_INSTANCES:
                    keep = self.rng.choice(class_ids.shape[0], config.MAX_GT_INSTANCES, replace=False)
                    class_ids, boxes, masks = class_ids[keep], boxes[keep], masks[:, :, keep]
                count = class_ids.shape[0]
                images[slot] = mold_image(sample.image.astype(np.float32), config)
                metas[slot] = sample.image_meta
                rpn_match[slot, :, 0] = targets.rpn_match
                rpn_bbox[slot] = targets.rpn_bbox
                gt_class_ids[slot, :count] = class_ids
                gt_boxes[slot, :count] = boxes
                gt_masks[slot, :, :, :count] = masks
            yield arrays


def make_dataset(
    dataset,
    config: Config,
    shuffle: bool = True,
    augmentation: AugmentFn | None = None,
    no_augmentation_sources: list[str] | None = None,
    seed: int | None = None,
    prefetch: int = 4,
) -> tf.data.Dataset:
    """tf.data pipeline of training batches ``(inputs,)``; batches are built ahead of the training step.

    For ``tf.data`` users; ``mrcnn.training`` feeds its step from a ``BatchFeed``, which is faster (the
    ``from_generator`` stream doubled the step time of a small model on 2 CPU cores).
    """
    batches = TrainingBatches(dataset, config, shuffle, augmentation, no_augmentation_sources, seed)
    signature = batch_signature(config, batches.anchors.shape[0])

    def generate():
        for arrays in batches:
            yield (arrays,)

    return tf.data.Dataset.from_generator(generate, output_signature=(signature,)).prefetch(prefetch)


class BatchFeed:
    """``TrainingBatches`` built ahead by a background thread into a bounded queue (``prefetch`` batches).

    The training loop takes batches with ``next_batch()`` and passes them to the compiled step as tensors.
    Measured on 2 CPU cores (docs/benchmarks.md), this halves the step time of the demo model against
    ``make_dataset`` (tf.data ``from_generator``): the step itself runs as fast as on in-memory data.
    An error of the producer (``SampleLoadError``, a dataset without instances) is raised by the next
    ``next_batch()`` call, and by every later one. ``close()`` stops the thread; use it as a context manager.
    """

    _POLL_SECONDS = 0.1

    def __init__(self, batches: TrainingBatches, prefetch: int = 4) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self._batches = batches
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._produce, name="mrcnn-batch-feed", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for batch in self._batches:
                if not self._offer(batch):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it in the training loop
            self._offer(exc)

    def _offer(self, item: object) -> bool:
        """Put ``item`` unless the feed is closed meanwhile (then False)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=self._POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def next_batch(self) -> Batch:
        if self._error is not None:
            raise self._error
        if self._stop.is_set():
            raise RuntimeError("the batch feed is closed")
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._error = item
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=10)

    def __enter__(self) -> BatchFeed:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
