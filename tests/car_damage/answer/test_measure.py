"""measure: oriented boxes and stroke lengths of drawn masks with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from car_damage.answer.measure import box_sides_in_units, oriented_box, stroke, stroke_length_in_units


def _bar(length: int = 100, width: int = 5) -> np.ndarray:
    mask = np.zeros((width + 20, length + 40), dtype=bool)
    mask[10: 10 + width, 20: 20 + length] = True
    return mask


def _band(shape, p0, p1, width) -> np.ndarray:
    """Pixels whose centre lies within width/2 of the segment p0-p1 (x, y) and between its ends."""
    yy, xx = np.mgrid[0: shape[0], 0: shape[1]] + 0.5
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    u = (p1 - p0) / np.hypot(*(p1 - p0))
    along = (xx - p0[0]) * u[0] + (yy - p0[1]) * u[1]
    across = np.abs(-(xx - p0[0]) * u[1] + (yy - p0[1]) * u[0])
    return (along >= 0) & (along <= np.hypot(*(p1 - p0))) & (across <= width / 2)


def test_straight_stroke_100_by_5():
    measured = stroke(_bar())
    assert measured.length_px == pytest.approx(100, abs=2)
    assert measured.width_px == pytest.approx(5, abs=0.5)
    box = oriented_box(_bar())
    assert (box.length, box.width, box.angle_deg) == (100, 5, 0)
    assert (box.center_x, box.center_y) == (70, 12.5)


def test_vertical_and_slanted_strokes():
    vertical = oriented_box(_bar().T)
    assert (vertical.length, vertical.width, vertical.angle_deg) == (100, 5, 90)
    end = (20 + 100 * math.cos(math.radians(30)), 20 + 100 * math.sin(math.radians(30)))
    slanted = _band((160, 160), (20, 20), end, 6)
    measured = stroke(slanted)
    assert measured.length_px == pytest.approx(100, abs=3)  # an 8-neighbour chain would say ~108
    assert measured.width_px == pytest.approx(6, abs=0.7)
    box = oriented_box(slanted)
    assert box.angle_deg == pytest.approx(30, abs=1.5) and box.length == pytest.approx(102, abs=3)


def test_square_boxes_name_the_side_nearer_x():
    square = np.zeros((20, 20), bool)
    square[3:13, 5:15] = True
    box = oriented_box(square, (100, 200))
    assert (box.length, box.width, box.angle_deg, box.center_x, box.center_y) == (10, 10, 0, 110, 208)
    # A diamond of pixel squares, radius 7: its hull's long edges run at 45 and 135 degrees through the outer
    # pixels' corners, 8 * sqrt(2) apart both ways (the axis-aligned square, 15 x 15, is bigger). The two sides are
    # equal: the one nearer +x, 45 degrees, names the angle.
    rows, cols = np.mgrid[0:21, 0:21]
    diamond = np.abs(rows - 10) + np.abs(cols - 10) <= 7
    box = oriented_box(diamond)
    assert box.length == box.width == pytest.approx(8 * math.sqrt(2), abs=1e-6) and box.angle_deg == 45


def test_quarter_circle_arc():
    radius, width = 80, 6
    yy, xx = np.mgrid[0:120, 0:120] + 0.5
    distance = np.hypot(yy - 10, xx - 10)
    arc = (np.abs(distance - radius) <= width / 2) & (yy >= 10) & (xx >= 10)
    measured = stroke(arc)
    expected = math.pi / 2 * radius  # 125.7 along the centre line
    assert measured.length_px == pytest.approx(expected, rel=0.03)
    assert measured.width_px == pytest.approx(width, rel=0.08)
    box = oriented_box(arc)  # the chord direction of a quarter circle from (90, 10) to (10, 90): 135 degrees
    assert box.angle_deg == pytest.approx(135, abs=2)
    assert box.length < measured.length_px


def test_l_shape():
    mask = np.zeros((80, 80), dtype=bool)
    mask[5:10, 5:65] = True   # 60 x 5 arm
    mask[5:45, 60:65] = True  # 40 x 5 arm sharing the corner square
    measured = stroke(mask)
    assert measured.length_px == pytest.approx(57.5 + 37.5, abs=3)  # along the centre lines
    assert measured.width_px == pytest.approx(5, abs=0.5)
    box = oriented_box(mask)
    assert box.length * box.width <= 60 * 40 + 1e-6  # never larger than the axis-aligned box


def test_measurements_in_units_and_origin():
    measured = stroke(_bar(), origin=(100, 200))
    assert measured.path[:, 0].min() >= 100 + 20 and measured.path[:, 1].min() >= 200 + 10
    assert stroke_length_in_units(measured, (0.5, 0.5)) == pytest.approx(measured.length_px * 0.5)
    # anisotropic pixels: a horizontal bar scales with the x size only
    assert stroke_length_in_units(measured, (0.5, 2.0)) == pytest.approx(50, abs=1.5)
    box = oriented_box(_bar())
    assert box_sides_in_units(box, (0.5, 2.0)) == pytest.approx((50, 10))


def test_small_and_huge_masks():
    dot = np.zeros((5, 5), dtype=bool)
    dot[2, 2] = True
    assert stroke(dot).length_px >= 1 and oriented_box(dot).length == 1
    blob = np.ones((1000, 1500), dtype=bool)  # measured on a shrunk copy: fast, and still about right
    measured = stroke(blob)
    assert measured.length_px == pytest.approx(1500, rel=0.35)
    with pytest.raises(ValueError):
        stroke(np.zeros((3, 3), dtype=bool))


def test_branch_length_tells_a_junction_from_a_stroke():
    shape = (200, 200)
    straight = stroke(_band(shape, (20, 100), (180, 100), 6))
    assert straight.branch_px <= straight.width_px  # at most spurs at the blunt ends
    tee = stroke(_band(shape, (20, 100), (180, 100), 6) | _band(shape, (100, 100), (100, 180), 6))
    assert tee.length_px == pytest.approx(160, abs=8)  # the longest path runs along the bar...
    assert 70 <= tee.branch_px <= 85  # ...the stem (80 px from the bar's axis, less half the bar) is the branch
