"""data.rle: COCO run-length encoding against hand-computed masks and pycocotools."""

from __future__ import annotations

import numpy as np

from car_damage.data.rle import _decode_counts, _encode_counts, mask_to_rle, rle_to_mask


def test_rle_hand_computed():
    mask = np.array([[0, 1], [1, 1]], dtype=bool)  # column-major: 0, 1, 1, 1
    assert rle_to_mask({"size": [2, 2], "counts": [1, 3]}).tolist() == mask.tolist()
    rle = mask_to_rle(mask)
    assert rle["size"] == [2, 2] and (rle_to_mask(rle) == mask).all()
    assert mask_to_rle(np.ones((1, 3), bool))["counts"] == mask_to_rle(np.ones((1, 3), bool))["counts"]
    assert rle_to_mask(mask_to_rle(np.ones((1, 3), bool))).all()


def test_rle_count_strings_round_trip_large_and_decreasing_counts():
    rng = np.random.default_rng(4)
    for high in (3, 40, 5000, 10**9):
        counts = [int(c) for c in rng.integers(0, high, size=12)]
        assert _decode_counts(_encode_counts(counts)) == counts
    assert _encode_counts([]) == ""


def test_rle_matches_pycocotools():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(3)
    for _ in range(50):
        mask = rng.random((rng.integers(1, 40), rng.integers(1, 40))) < rng.random()
        reference = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        ours = mask_to_rle(mask)
        assert ours["counts"] == reference["counts"].decode()
        assert (mask_utils.decode({"size": ours["size"], "counts": ours["counts"]}) == mask).all()
        assert (rle_to_mask(ours) == mask).all()
