"""Training data: RPN targets (``targets``), augmentation (``augment``) and the input pipeline (``pipeline``).

Submodules are imported on demand so that ``mrcnn.data.augment`` stays usable without TensorFlow loaded.
"""
