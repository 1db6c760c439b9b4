"""Keras layers and graph builders of the Mask R-CNN network, one module per stage.

backbone (ResNet-50/101 with matterport names, "tiny", callable), fpn, rpn (nested model "rpn_model"),
proposal (ProposalLayer "ROI"), roi_align (PyramidROIAlign), heads (classifier and mask heads),
detection (DetectionLayer "mrcnn_detection"). Import the submodule you need; this package module
imports nothing so that ``import mrcnn`` does not pull in TensorFlow.
"""
