"""Mask R-CNN on TensorFlow 2 / tf-keras, API- and weight-compatible with matterport's ``mrcnn``.

Importing the package is cheap: TensorFlow is only imported by the modules that need it
(``mrcnn.model``, ``mrcnn.graph``, ``mrcnn.layers.*``, ``mrcnn.weights``), so ``import mrcnn.utils``
or ``from mrcnn.config import Config`` stay light.
"""

__version__ = "0.1.0"
