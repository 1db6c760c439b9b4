"""geometry: polygons and areas against hand-computed masks, calibration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from car_damage.answer.geometry import (
    AreaCalibration,
    mask_to_polygons,
    polygon_area,
    tight_crop,
    tight_crops,
)


def test_square_is_an_exact_four_point_polygon():
    mask = np.zeros((8, 10), dtype=bool)
    mask[1:4, 2:6] = True  # rows 1..3, columns 2..5: 4 wide, 3 high
    for tolerance in (0.0, 1.0, 5.0):
        polygons = mask_to_polygons(mask, tolerance)
        assert polygons == [[[[2, 1], [6, 1], [6, 4], [2, 4]]]]
    assert polygon_area(polygons[0]) == 12 == mask.sum()


def test_single_pixel_and_empty_mask():
    mask = np.zeros((3, 3), dtype=bool)
    assert mask_to_polygons(mask) == []
    mask[2, 0] = True
    assert mask_to_polygons(mask) == [[[[0, 2], [1, 2], [1, 3], [0, 3]]]]


def test_ring_with_a_hole():
    mask = np.zeros((7, 7), dtype=bool)
    mask[1:6, 1:6] = True
    mask[3, 3] = False  # a 1-pixel hole in a 5 x 5 square
    polygons = mask_to_polygons(mask, 0)
    assert len(polygons) == 1
    exterior, hole = polygons[0]
    assert exterior == [[1, 1], [6, 1], [6, 6], [1, 6]]
    assert sorted(map(tuple, hole)) == [(3, 3), (3, 4), (4, 3), (4, 4)]
    assert polygon_area([exterior]) == 25 and polygon_area([hole]) == -1  # holes wind the other way
    assert polygon_area(polygons[0]) == mask.sum() == 24


def test_blobs_touching_at_an_edge_are_one_polygon():
    mask = np.zeros((4, 6), dtype=bool)
    mask[0:2, 0:2] = True
    mask[1:3, 2:4] = True  # shares the edge x=2, y in [1, 2]
    polygons = mask_to_polygons(mask, 0)
    assert len(polygons) == 1 and len(polygons[0]) == 1
    assert polygons[0][0] == [[0, 0], [2, 0], [2, 1], [4, 1], [4, 3], [2, 3], [2, 2], [0, 2]]
    assert polygon_area(polygons[0]) == 8


def test_blobs_touching_at_a_corner_are_two_polygons():
    mask = np.zeros((4, 4), dtype=bool)
    mask[0:2, 0:2] = True
    mask[2:4, 2:4] = True  # touches the first blob only at the point (2, 2)
    polygons = mask_to_polygons(mask, 0)
    assert polygons == [[[[0, 0], [2, 0], [2, 2], [0, 2]]], [[[2, 2], [4, 2], [4, 4], [2, 4]]]]


def test_checkerboard_is_one_polygon_per_pixel():
    mask = (np.indices((4, 5)).sum(axis=0) % 2).astype(bool)  # every set pixel touches others at corners only
    polygons = mask_to_polygons(mask, 0)
    assert len(polygons) == mask.sum() == 10
    assert all(len(p) == 1 and len(p[0]) == 4 and polygon_area(p) == 1 for p in polygons)


def test_hole_touching_the_outside_at_a_corner_is_still_a_hole():
    mask = np.array(
        [
            [1, 1, 1, 0],
            [1, 0, 1, 1],
            [1, 1, 1, 1],
        ],
        dtype=bool,
    )  # the hole at (1, 1) is enclosed; the notch at (3, 0) touches the outside only at corners
    polygons = mask_to_polygons(mask, 0)
    assert len(polygons) == 1
    exterior, hole = polygons[0]
    assert exterior == [[0, 0], [3, 0], [3, 1], [4, 1], [4, 3], [0, 3]]
    assert polygon_area([hole]) == -1
    diagonal_hole = np.array([[1, 1, 1, 0], [1, 1, 0, 1], [1, 1, 1, 1]], dtype=bool)
    exterior, hole = mask_to_polygons(diagonal_hole, 0)[0]  # hole (2, 1) meets the notch at corner (3, 1)
    assert [3, 1] in exterior and [3, 1] in hole and polygon_area([hole]) == -1


def test_polygon_area_equals_pixel_count_on_random_masks():
    rng = np.random.default_rng(7)
    for _ in range(100):
        mask = rng.random((rng.integers(1, 25), rng.integers(1, 25))) < rng.uniform(0.2, 0.8)
        polygons = mask_to_polygons(mask, 0)
        assert sum(polygon_area(p) for p in polygons) == mask.sum()
        assert len(polygons) == ndimage.label(mask)[1]  # one polygon per 4-connected component
        for polygon in polygons:
            assert polygon_area(polygon[:1]) > 0 and all(polygon_area([h]) < 0 for h in polygon[1:])


def _distance_to_ring(point: np.ndarray, ring: np.ndarray) -> float:
    starts, ends = ring, np.roll(ring, -1, axis=0)
    segment = ends - starts
    t = np.clip(((point - starts) * segment).sum(1) / np.maximum((segment**2).sum(1), 1e-12), 0, 1)
    return float(np.min(np.hypot(*(starts + t[:, None] * segment - point).T)))


def test_simplification_stays_within_tolerance():
    yy, xx = np.mgrid[0:60, 0:60]
    disk = (yy - 30) ** 2 + (xx - 30) ** 2 <= 25**2
    exact = np.array(mask_to_polygons(disk, 0)[0][0], dtype=float)
    simple = mask_to_polygons(disk, 1.0)[0][0]
    assert len(simple) < len(exact) / 2
    assert all(isinstance(v, int) for point in simple for v in point)
    simple_array = np.array(simple, dtype=float)
    assert max(_distance_to_ring(p, simple_array) for p in exact) <= 1.0 + 1e-9  # Douglas-Peucker bound
    # The area may move by at most tolerance x perimeter (in practice much less).
    perimeter = np.abs(np.diff(np.vstack([exact, exact[:1]]), axis=0)).sum()
    assert abs(polygon_area([simple]) - disk.sum()) < 0.5 * perimeter


def _shapely_multipolygon(polygons):
    import shapely

    return shapely.MultiPolygon([shapely.Polygon(p[0], p[1:]) for p in polygons])


def _hard_masks() -> dict[str, np.ndarray]:
    """Masks where a hand-written Douglas-Peucker makes rings cross or touch."""
    corner = np.zeros((30, 30), bool)
    corner[2:14, 2:14] = corner[14:28, 14:28] = True  # two blobs touching at one corner
    border_hole = np.ones((20, 30), bool)
    border_hole[1:5, 1:6] = False  # a hole one pixel from the image border
    border_hole[8:12, 0:28] = False  # and a cut running out of the mask
    border_hole[14:18, 10:12] = False
    spurs = np.zeros((40, 40), bool)
    spurs[10:30, 10:30] = True
    spurs[5:10, 20] = spurs[20, 30:38] = spurs[30:36, 12] = True  # one-pixel spurs
    spurs[15:25, 15:25] = False
    spurs[19:21, 19:21] = True  # an island inside the hole
    comb = np.zeros((30, 60), bool)
    comb[:, ::2] = True
    comb[0] = comb[-1] = True  # thin teeth: holes one pixel wide next to each other
    rng = np.random.default_rng(5)
    speckle = ndimage_smooth(rng.random((80, 80)) > 0.55)
    sliver = np.zeros((5, 20), bool)
    sliver[3, 8:] = sliver[4, 7:] = True  # two rows, one step: plain Douglas-Peucker collapses it to nothing
    return {"corner": corner, "border_hole": border_hole, "spurs": spurs, "comb": comb, "speckle": speckle,
            "sliver": sliver}


def ndimage_smooth(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_opening(mask, iterations=1) | ndimage.binary_erosion(mask)


@pytest.mark.parametrize("name", ["corner", "border_hole", "spurs", "comb", "speckle", "sliver"])
@pytest.mark.parametrize("tolerance", [0.0, 1.0, 3.0, 10.0])
def test_simplified_polygons_are_valid_on_hard_masks(name, tolerance):
    import shapely

    mask = _hard_masks()[name]
    polygons = mask_to_polygons(mask, tolerance)
    assert polygons and all(isinstance(v, int) for p in polygons for ring in p for point in ring for v in point)
    for polygon in polygons:
        shape = shapely.Polygon(polygon[0], polygon[1:])
        assert shapely.is_valid(shape), shapely.is_valid_reason(shape)
        assert all(len(ring) >= 3 for ring in polygon)
        assert _signed_area_of(polygon[0]) > 0 and all(_signed_area_of(hole) < 0 for hole in polygon[1:])
    together = _shapely_multipolygon(polygons)
    assert shapely.is_valid(together), shapely.is_valid_reason(together)  # parts never cross or overlap
    if tolerance == 0:
        assert polygon_area_total(polygons) == mask.sum()


def _signed_area_of(ring) -> float:
    points = np.asarray(ring, dtype=float)
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def polygon_area_total(polygons) -> float:
    return sum(polygon_area(p) for p in polygons)


def test_coordinates_are_in_the_original_frame():
    mask = np.zeros((100, 200), dtype=bool)
    mask[90:95, 150:160] = True
    ((exterior,),) = mask_to_polygons(mask)
    assert exterior == [[150, 90], [160, 90], [160, 95], [150, 95]]


def test_bad_inputs():
    with pytest.raises(ValueError):
        mask_to_polygons(np.zeros((2, 2, 2), dtype=bool))
    with pytest.raises(ValueError):
        mask_to_polygons(np.zeros((2, 2), dtype=bool), -1)


def test_old_system_calibrated_area():
    # w=2119 h=1415 mask pixels 50043 fraction 0.016690 single pixel 8.4045e-05 in^2 total 4.2059 in^2
    calibration = AreaCalibration.from_frame(frame_width=14, frame_height=18, unit="in")
    assert calibration.pixel_area(2119, 1415) == pytest.approx(8.4045e-05, abs=5e-10)
    assert round(calibration.area(50043, 2119, 1415), 4) == 4.2059
    assert round(50043 / (2119 * 1415), 6) == 0.016690
    assert calibration.to_json(2119, 1415)["pixel_area"]["unit"] == "in^2"


def test_pixels_per_unit_calibration():
    calibration = AreaCalibration.from_pixels_per_unit(4.0, "mm")
    assert calibration.area(32, 10, 10) == 2.0  # 32 px / 16 px per mm^2
    with pytest.raises(ValueError):
        AreaCalibration(unit="in")
    with pytest.raises(ValueError):
        AreaCalibration(unit="in", pixels_per_unit=-1.0)


def test_simplified_polygons_are_valid_on_random_masks():
    """The hand-written Douglas-Peucker this replaced gave invalid outlines on 51 of 820 such cases."""
    import shapely
    from scipy import ndimage

    rng = np.random.default_rng(1)
    for _ in range(100):
        noise = rng.random((40, 40)) > 0.5
        mask = ndimage.binary_opening(noise) | ndimage.binary_erosion(noise)
        for tolerance in (1.0, 3.0):
            polygons = mask_to_polygons(mask, tolerance)
            together = _shapely_multipolygon(polygons)
            assert shapely.is_valid(together), shapely.is_valid_reason(together)


def test_tight_crops_take_boxes_as_a_hint_only():
    masks = np.zeros((20, 30, 3), bool)
    masks[2:5, 3:9, 0] = True
    masks[10:12, 20:25, 1] = True  # the third mask stays empty
    expected = [tight_crop(masks[..., k]) for k in range(3)]

    def same(crops) -> bool:
        return all((a is None and b is None) or (a[1:] == b[1:] and np.array_equal(a[0], b[0]))
                   for a, b in zip(crops, expected, strict=True))

    assert same(tight_crops(masks))
    assert same(tight_crops(masks, np.array([[0, 0, 6, 10], [9, 18, 14, 30], [0, 0, 20, 30]])))  # boxes hold them
    # A box that cuts its mask (or lies elsewhere) is not trusted: every mask is scanned whole.
    assert same(tight_crops(masks, np.array([[3, 3, 5, 9], [0, 0, 1, 1], [0, 0, 0, 0]])))
    assert same(tight_crops(masks, np.array([[-5, -5, 99, 99], [9, 18, 14, 30], [5, 5, 2, 2]])))
    assert all(crop is None or crop[0].flags.c_contiguous for crop in tight_crops(masks, None))
    with pytest.raises(ValueError, match="stack"):
        tight_crops(masks[..., 0])
