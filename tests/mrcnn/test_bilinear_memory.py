"""The interpolation caches of ``mrcnn.bilinear`` stay small however many box sizes a service meets (issue 13).

Each pasted mask needs an [out, 30] matrix for its box height and width; cached per (mask side, box side), a
worker that sees photos of many sizes collected one per distinct box side (up to 4096, hundreds of MB).
"""

from __future__ import annotations

import numpy as np

from mrcnn import bilinear, resize

MAX_CACHED_MATRIX_BYTES = 16 * 2**20


def test_pasting_many_box_sizes_keeps_the_matrix_cache_bounded() -> None:
    bilinear._axis_matrix32.cache_clear()
    rng = np.random.default_rng(0)
    masks = rng.random((1, 28, 28)).astype(np.float32)
    sides = range(20, 1520, 3)  # 500 distinct box heights and widths on a 1600 px image
    for side in sides:
        pasted = resize.paste_masks(masks, np.array([[0, 0, side, side]]), (1600, 1600))
        assert not pasted[0, side:, :].any()
    info = bilinear._axis_matrix32.cache_info()
    # The biggest entries are the last ones (largest sides): [side, 30] float32 each.
    assert info.currsize * max(sides) * 30 * 4 <= MAX_CACHED_MATRIX_BYTES, info
    assert info.hits + info.misses >= len(sides)
