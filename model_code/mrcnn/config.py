"""Mask R-CNN configuration, attribute-compatible with matterport's ``mrcnn.config.Config``.

Users subclass ``Config`` and override class attributes, exactly as with matterport::

    class ScratchConfig(Config):
        NAME = "scratch"
        NUM_CLASSES = 1 + 1

Derived values (BATCH_SIZE, IMAGE_SHAPE, IMAGE_META_SIZE) are computed per instance in ``__init__`` so they
follow subclass overrides. This is the single place where defaults live; stage modules receive plain values.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: The five loss names: the keys of LOSS_WEIGHTS and the names of the loss layers/metrics.
LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss")

#: Backbones the engine can build by name (a callable is accepted too, as in matterport).
NAMED_BACKBONES = ("resnet50", "resnet101", "tiny")

RESIZE_MODES = ("none", "square", "pad64", "crop")
#: Optimizers the training loop can build (``OPTIMIZER``); SGD with momentum is matterport's.
OPTIMIZERS = ("SGD", "ADAM")
#: Learning-rate schedules over one ``train()`` call (``LEARNING_RATE_SCHEDULE``).
LR_SCHEDULES = ("constant", "cosine")


class Config:
    """Base configuration. Override class attributes in a subclass, then instantiate."""

    NAME: str | None = None
    GPU_COUNT = 1
    IMAGES_PER_GPU = 2
    STEPS_PER_EPOCH = 1000
    VALIDATION_STEPS = 50

    BACKBONE: Any = "resnet101"
    COMPUTE_BACKBONE_SHAPE = None
    BACKBONE_STRIDES = [4, 8, 16, 32, 64]
    FPN_CLASSIF_FC_LAYERS_SIZE = 1024
    TOP_DOWN_PYRAMID_SIZE = 256

    NUM_CLASSES = 1

    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)
    RPN_ANCHOR_RATIOS = [0.5, 1, 2]
    RPN_ANCHOR_STRIDE = 1
    RPN_NMS_THRESHOLD = 0.7
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256
    PRE_NMS_LIMIT = 6000
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000

    USE_MINI_MASK = True
    MINI_MASK_SHAPE = (56, 56)

    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    IMAGE_MIN_SCALE = 0
    IMAGE_CHANNEL_COUNT = 3
    MEAN_PIXEL = np.array([123.7, 116.8, 103.9])

    TRAIN_ROIS_PER_IMAGE = 200
    ROI_POSITIVE_RATIO = 0.33
    POOL_SIZE = 7
    MASK_POOL_SIZE = 14
    MASK_SHAPE = [28, 28]
    MAX_GT_INSTANCES = 100

    RPN_BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])

    DETECTION_MAX_INSTANCES = 100
    DETECTION_MIN_CONFIDENCE = 0.7
    DETECTION_NMS_THRESHOLD = 0.3

    LEARNING_RATE = 0.001
    LEARNING_MOMENTUM = 0.9
    WEIGHT_DECAY = 0.0001
    LOSS_WEIGHTS = {name: 1.0 for name in LOSS_NAMES}

    USE_RPN_ROIS = True
    TRAIN_BN = False
    GRADIENT_CLIP_NORM = 5.0

    # Extensions beyond matterport (defaults keep matterport's behaviour).
    #: Compile the inference graph with XLA (jit_compile=True).
    USE_XLA = False
    #: Inference only: backbone, FPN and RPN compute in fp16 (fp32 weights, Keras "mixed_float16"); proposals,
    #: heads and all outputs stay float32. Pays off on GPUs with fp16 tensor cores; the training graph ignores it.
    MIXED_PRECISION = False
    #: Channels of rpn_conv_shared (matterport hard-codes 512).
    RPN_CONV_CHANNELS = 512
    #: Channels of the mask head convs and deconv (matterport hard-codes 256).
    MASK_HEAD_CHANNELS = 256
    #: "SGD" (matterport: momentum LEARNING_MOMENTUM) or "ADAM" (beta_1 LEARNING_MOMENTUM), which trains a
    #: network from random weights in far fewer steps; both clip the global gradient norm.
    OPTIMIZER = "SGD"
    #: "constant" (matterport) or "cosine": decay LEARNING_RATE to 0 over the steps of each train() call, which
    #: settles the weights at the end of a short run instead of leaving them at the last noisy step.
    LEARNING_RATE_SCHEDULE = "constant"

    def __init__(self) -> None:
        self.BATCH_SIZE = self.IMAGES_PER_GPU * self.GPU_COUNT
        channels = self.IMAGE_CHANNEL_COUNT
        if self.IMAGE_RESIZE_MODE == "crop":
            self.IMAGE_SHAPE = np.array([self.IMAGE_MIN_DIM, self.IMAGE_MIN_DIM, channels])
        else:
            self.IMAGE_SHAPE = np.array([self.IMAGE_MAX_DIM, self.IMAGE_MAX_DIM, channels])
        # image_id(1) + original_shape(3) + image_shape(3) + window(4) + scale(1) + active_class_ids
        self.IMAGE_META_SIZE = 1 + 3 + 3 + 4 + 1 + self.NUM_CLASSES
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for settings the engine cannot honour."""
        if self.IMAGE_RESIZE_MODE not in RESIZE_MODES:
            raise ValueError(f"IMAGE_RESIZE_MODE must be one of {RESIZE_MODES}, got {self.IMAGE_RESIZE_MODE!r}")
        if not callable(self.BACKBONE) and self.BACKBONE not in NAMED_BACKBONES:
            raise ValueError(f"BACKBONE must be one of {NAMED_BACKBONES} or a callable, got {self.BACKBONE!r}")
        if callable(self.BACKBONE) and not callable(self.COMPUTE_BACKBONE_SHAPE):
            raise ValueError("a callable BACKBONE needs a callable COMPUTE_BACKBONE_SHAPE(image_shape)")
        if self.NUM_CLASSES < 1:
            raise ValueError(f"NUM_CLASSES counts the background class and must be >= 1, got {self.NUM_CLASSES}")
        if self.IMAGES_PER_GPU < 1 or self.GPU_COUNT < 1:
            raise ValueError("IMAGES_PER_GPU and GPU_COUNT must be >= 1")
        if len(self.RPN_ANCHOR_SCALES) != len(self.BACKBONE_STRIDES):
            raise ValueError("RPN_ANCHOR_SCALES needs one scale per entry of BACKBONE_STRIDES")
        if self.OPTIMIZER not in OPTIMIZERS:
            raise ValueError(f"OPTIMIZER must be one of {OPTIMIZERS}, got {self.OPTIMIZER!r}")
        if self.LEARNING_RATE_SCHEDULE not in LR_SCHEDULES:
            raise ValueError(f"LEARNING_RATE_SCHEDULE must be one of {LR_SCHEDULES}, got "
                             f"{self.LEARNING_RATE_SCHEDULE!r}")
        unknown = set(self.LOSS_WEIGHTS) - set(LOSS_NAMES)
        if unknown:
            raise ValueError(f"LOSS_WEIGHTS has unknown keys {sorted(unknown)}; known: {LOSS_NAMES}")

    def to_dict(self) -> dict[str, Any]:
        """All public, non-callable attributes (class and instance), as matterport's display() lists them."""
        values = {}
        for name in dir(self):
            if name.startswith("__"):
                continue
            value = getattr(self, name)
            if not callable(value):
                values[name] = value
        return values

    def display(self) -> None:
        """Print every configuration value, one per line, sorted by name (matterport's format)."""
        print("\nConfigurations:")
        for name, value in self.to_dict().items():
            print(f"{name:30} {value}")
        print("\n")
