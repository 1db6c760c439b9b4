"""Feature Pyramid Network top-down pathway (matterport layer names).

Shape shorthand:
    B  batch     D  TOP_DOWN_PYRAMID_SIZE
    C2..C5  backbone maps at strides 4..32
    P2 [B, H/4, W/4, D]  P3 [B, H/8, W/8, D]  P4 [B, H/16, W/16, D]  P5 [B, H/32, W/32, D]  P6 [B, H/64, W/64, D]
"""

from __future__ import annotations

from typing import Any

import tf_keras as keras

KL = keras.layers

#: Levels of the pyramid, finest first; P6 only feeds the RPN.
HEAD_LEVELS = (2, 3, 4, 5)


def lateral_name(level: int) -> str:
    """1x1 lateral conv from C<level> to the pyramid width, e.g. ``fpn_c4p4``."""
    return f"fpn_c{level}p{level}"


def output_name(level: int) -> str:
    """3x3 smoothing conv producing P<level>, e.g. ``fpn_p4``; ``fpn_p6`` is the subsampling pool."""
    return f"fpn_p{level}"


def add_name(level: int) -> str:
    return f"fpn_p{level}add"


def upsample_name(level: int) -> str:
    """Upsampling of P<level> towards level-1, e.g. ``fpn_p5upsampled``."""
    return f"fpn_p{level}upsampled"


def fpn_graph(c2: Any, c3: Any, c4: Any, c5: Any, depth: int) -> tuple[list, list]:
    """Top-down FPN: returns (rpn_feature_maps [P2..P6], mrcnn_feature_maps [P2..P5])."""
    laterals = {2: c2, 3: c3, 4: c4, 5: c5}
    merged = {5: KL.Conv2D(depth, (1, 1), name=lateral_name(5))(c5)}
    for level in (4, 3, 2):
        upsampled = KL.UpSampling2D(size=(2, 2), name=upsample_name(level + 1))(merged[level + 1])
        lateral = KL.Conv2D(depth, (1, 1), name=lateral_name(level))(laterals[level])
        merged[level] = KL.Add(name=add_name(level))([upsampled, lateral])
    # Same creation order as matterport (P2, P3, P4, P5), which fixes the saved layer order.
    smoothed = {
        level: KL.Conv2D(depth, (3, 3), padding="SAME", name=output_name(level))(merged[level])
        for level in HEAD_LEVELS
    }
    p6 = KL.MaxPooling2D(pool_size=(1, 1), strides=2, name=output_name(6))(smoothed[5])
    mrcnn_feature_maps = [smoothed[level] for level in HEAD_LEVELS]
    return mrcnn_feature_maps + [p6], mrcnn_feature_maps
