"""rings: boundary rings traced on hand-computed masks, and the two cycle walks agreeing."""

from __future__ import annotations

import numpy as np
import pytest

from car_damage.answer import rings
from car_damage.answer.rings import pad_border, trace_rings


def _traced(mask: np.ndarray):
    found, pixels, areas = trace_rings(pad_border(np.asarray(mask, dtype=bool)))
    return [ring.tolist() for ring in found], pixels, areas.tolist()


def test_a_block_is_one_exterior_ring_from_its_top_left_corner():
    found, _, areas = _traced(np.ones((2, 3)))  # padded: the block sits at columns 1..3, rows 1..2
    assert found == [[[1, 1], [4, 1], [4, 3], [1, 3]]] and areas == [6.0]


def test_a_ring_of_pixels_has_an_exterior_and_a_hole():
    mask = np.ones((3, 3))
    mask[1, 1] = 0
    found, pixels, areas = _traced(mask)
    assert areas == [9.0, -1.0]  # exterior first (lowest edge), then the hole, running the other way
    assert found[1] == [[2, 3], [3, 3], [3, 2], [2, 2]]  # from the top edge of the pixel below it
    assert pad_border(mask).ravel()[pixels].all()  # each ring names a pixel of its own component


def test_pixels_touching_at_a_corner_are_two_rings():
    found, _, areas = _traced(np.eye(2))
    assert areas == [1.0, 1.0]
    assert found == [[[1, 1], [2, 1], [2, 2], [1, 2]], [[2, 2], [3, 2], [3, 3], [2, 3]]]


def test_a_hole_touching_the_outside_at_a_corner_stays_a_hole():
    mask = np.ones((3, 3))
    mask[0, 0] = mask[1, 1] = 0  # the centre meets the cut corner diagonally: a saddle inside one component
    found, _, areas = _traced(mask)
    assert areas == [8.0, -1.0]  # the exterior turns left at the saddle and leaves the centre as a hole
    assert found[1] == [[2, 3], [3, 3], [3, 2], [2, 2]]
    assert [2, 2] in found[0]  # the point where the hole touches the exterior


@pytest.mark.parametrize("count", [1, 7, 50, 2000])
def test_python_and_scipy_cycle_walks_agree(count, monkeypatch):
    permutation = np.random.default_rng(count).permutation(count)
    walked, starts = rings._cycles(permutation)
    monkeypatch.setattr(rings, "PYTHON_WALK_EDGES", -1)
    scipy_walked, scipy_starts = rings._cycles(permutation)
    assert np.array_equal(walked, scipy_walked) and np.array_equal(starts, scipy_starts)
    assert sorted(walked.tolist()) == list(range(count))
    # Each cycle starts at its lowest edge, cycles in order of it, and each step follows the permutation.
    bounds = np.r_[starts, count]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        cycle = walked[a:b]
        assert cycle[0] == cycle.min() and np.array_equal(permutation[cycle], np.roll(cycle, -1))
    assert np.all(np.diff(walked[starts]) > 0)
