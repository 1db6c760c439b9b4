"""Masks to the numbers users pay for: polygons, pixel areas, calibrated areas and COCO RLE.

Coordinates. A mask pixel (row r, column c) is the unit square x in [c, c+1], y in [r, r+1] of the
ORIGINAL image (y points down). Polygons trace pixel edges ("crack following"), so their vertices are
integer pixel-corner coordinates and an unsimplified polygon encloses exactly the mask's pixels: a 4 x 3
block at columns 2..5, rows 1..3 is the 4-point ring [[2, 1], [6, 1], [6, 4], [2, 4]] with area 12.

Polygon layout. One polygon per connected component of the mask; a polygon is a list of rings, exterior
first, then its holes; a ring is an open list of [x, y] points (the first point is not repeated). The
exterior has a positive shoelace area in (x, y) image coordinates (clockwise on screen), holes negative.

Connectivity. Foreground components are 4-connected: two blobs touching only at a corner (diagonally) are
two polygons sharing that corner point; blobs sharing an edge are one polygon. A background region is a
hole when it is enclosed by the component, even if it touches the outside at a single corner; such a hole
touches its exterior at one point (valid for OGC/GeoJSON consumers), rings never cross themselves before
simplification.

Simplification. Douglas-Peucker, so every dropped point lies within ``tolerance`` pixels of the segment that
replaced it, and simplified rings never cross or touch (themselves or each other) where the exact ones did not.
Each ring is first simplified alone (plain ``shapely.simplify``, about 40x cheaper than GEOS's topology-preserving
walk); that result is kept when every ring is simple, no two rings whose boxes meet intersect, and the parts form
a valid MultiPolygon. Otherwise, or when two exact rings touch already (blobs sharing a corner, a hole at a
corner), all parts of the damage take GEOS's topology-preserving simplifier together (``preserve_topology=True``:
a point is kept whenever dropping it would make rings cross or touch). The two may keep different vertices and
start a ring at another vertex; both hold the guarantee. A damage whose simplified outline is still not
``shapely.is_valid`` (GEOS's known corner case: a hole tiny against the tolerance) keeps its exact outline.
0 keeps the exact pixel outline (only collinear points are dropped). Vertices stay integer pixel corners (a
subset of the exact outline's); rings of 4 points (rectangles) are kept as they are.
Simplified rings approximate the mask; ``area_px`` always counts pixels.

Calibrated area. ``AreaCalibration`` converts pixels to a physical area, either from the size of the whole
image frame (the old system: the photo covers 14 in wide x 18 in high of car body, so one pixel of a
2119 x 1415 photo is (14 / 2119) x (18 / 1415) = 8.4045e-05 in^2) or from a scale in pixels per unit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from car_damage.answer.rings import FOUR_CONNECTED, pad_border, trace_rings

#: Length units accepted for calibration (areas come out in unit^2).
LENGTH_UNITS = ("mm", "cm", "m", "in", "ft")

logger = logging.getLogger(__name__)

Ring = list[list[int]]
Polygon = list[Ring]


@dataclass(frozen=True)
class AreaCalibration:
    """Pixels -> physical area: either a frame (the whole image's width x height) or a pixel scale."""

    unit: str
    frame_width: float | None = None
    frame_height: float | None = None
    pixels_per_unit: float | None = None

    def __post_init__(self) -> None:
        if self.unit not in LENGTH_UNITS:
            raise ValueError(f"unit {self.unit!r} is not one of {LENGTH_UNITS}")
        has_frame = self.frame_width is not None and self.frame_height is not None
        if has_frame == (self.pixels_per_unit is not None):
            raise ValueError("give exactly one of frame_width+frame_height or pixels_per_unit")
        for value in (self.frame_width, self.frame_height, self.pixels_per_unit):
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"calibration lengths must be positive and finite, got {value}")

    @classmethod
    def from_frame(cls, frame_width: float, frame_height: float, unit: str) -> AreaCalibration:
        return cls(unit=unit, frame_width=float(frame_width), frame_height=float(frame_height))

    @classmethod
    def from_pixels_per_unit(cls, pixels_per_unit: float, unit: str) -> AreaCalibration:
        return cls(unit=unit, pixels_per_unit=float(pixels_per_unit))

    @property
    def area_unit(self) -> str:
        return f"{self.unit}^2"

    @property
    def method(self) -> str:
        return "pixels_per_unit" if self.pixels_per_unit is not None else "frame"

    def pixel_area(self, width_px: int, height_px: int) -> float:
        """Physical area of one pixel of a ``width_px`` x ``height_px`` image, in ``unit``^2."""
        if width_px <= 0 or height_px <= 0:
            raise ValueError(f"image size must be positive, got {width_px}x{height_px}")
        if self.pixels_per_unit is not None:
            return 1.0 / (self.pixels_per_unit * self.pixels_per_unit)
        return (self.frame_width / width_px) * (self.frame_height / height_px)

    def unit_per_pixel(self, width_px: int, height_px: int) -> tuple[float, float]:
        """Physical (width, height) of one pixel in ``unit``: lengths along x and along y (a frame may differ)."""
        if width_px <= 0 or height_px <= 0:
            raise ValueError(f"image size must be positive, got {width_px}x{height_px}")
        if self.pixels_per_unit is not None:
            return 1.0 / self.pixels_per_unit, 1.0 / self.pixels_per_unit
        return self.frame_width / width_px, self.frame_height / height_px

    def area(self, pixels: int, width_px: int, height_px: int) -> float:
        return pixels * self.pixel_area(width_px, height_px)

    def to_json(self, width_px: int, height_px: int) -> dict[str, object]:
        data: dict[str, object] = {"method": self.method, "unit": self.unit}
        if self.pixels_per_unit is not None:
            data["pixels_per_unit"] = self.pixels_per_unit
        else:
            data.update(frame_width=self.frame_width, frame_height=self.frame_height)
        data["pixel_area"] = {"value": self.pixel_area(width_px, height_px), "unit": self.area_unit}
        return data


def tight_crop(mask: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """(crop, top, left) of the smallest box holding every set pixel of a 2-D mask; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    top, left = int(rows[0]), int(cols[0])
    return mask[top: int(rows[-1]) + 1, left: int(cols[-1]) + 1], top, left


def tight_crops(masks: np.ndarray, boxes: np.ndarray | None = None) -> list[tuple[np.ndarray, int, int] | None]:
    """``tight_crop`` of every mask of a stack [H, W, N] (crops as contiguous bool arrays).

    ``boxes`` [N, (y1, x1, y2, x2)] (pixels, ends exclusive), when given, say where each mask lies: mrcnn pastes a
    mask into its box, and scanning a box is far cheaper than scanning a whole image's worth of one channel of the
    stack. They are only a hint: one count over the whole stack checks that no pixel lies outside its box, and
    any that does sends every mask through the full scan.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be a stack [H, W, N], got shape {masks.shape}")
    height, width, count = masks.shape
    regions = [(0, 0, masks[:, :, k]) for k in range(count)]
    if boxes is not None and count:
        boxes = np.asarray(boxes).reshape(count, 4)
        hinted = []
        for k, (y1, x1, y2, x2) in enumerate(boxes.astype(np.int64)):
            y1, x1 = min(max(int(y1), 0), height), min(max(int(x1), 0), width)
            y2, x2 = min(max(int(y2), y1), height), min(max(int(x2), x1), width)
            hinted.append((y1, x1, np.ascontiguousarray(masks[y1:y2, x1:x2, k], dtype=bool)))  # scans run on copies
        if sum(np.count_nonzero(region) for _, _, region in hinted) == np.count_nonzero(masks):
            regions = hinted
    crops: list[tuple[np.ndarray, int, int] | None] = []
    for top, left, region in regions:
        cropped = tight_crop(np.ascontiguousarray(region, dtype=bool))
        if cropped is None:
            crops.append(None)
            continue
        crop, crop_top, crop_left = cropped
        crops.append((np.ascontiguousarray(crop), top + crop_top, left + crop_left))
    return crops


def mask_to_polygons(mask: np.ndarray, tolerance: float = 1.0, *, origin: tuple[int, int] = (0, 0)
                     ) -> list[Polygon]:
    """Boolean mask [H, W] -> polygons (see the module docstring for layout, coordinates, connectivity).

    ``origin`` = (x, y) of the mask's top-left pixel in the image, for callers passing a crop.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    if tolerance < 0 or not np.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    cropped = tight_crop(mask.astype(bool, copy=False))  # labelling a tight crop is much cheaper
    if cropped is None:
        return []
    crop, top, left = cropped
    top, left = top + int(origin[1]), left + int(origin[0])

    rings, ring_pixels, ring_areas = trace_rings(pad_border(crop))
    exterior = ring_areas > 0
    if exterior.all() or np.count_nonzero(exterior) == 1:
        # No hole, or one component (the usual damage): each exterior is a part, holes belong to the one part.
        # Exteriors come in the raster order of their components' first pixels, the order ndimage.label numbers.
        count, ring_labels = int(np.count_nonzero(exterior)), np.maximum(np.cumsum(exterior), 1)
    else:
        labels, count = ndimage.label(crop, structure=FOUR_CONNECTED)
        ring_labels = pad_border(labels).ravel()[ring_pixels]
    exteriors_per_label = np.bincount(ring_labels[exterior], minlength=count + 1)[1:]
    if not (exteriors_per_label == 1).all():  # a 4-connected component has exactly one outer boundary
        raise RuntimeError("a mask component without exactly one exterior ring (internal error)")
    shift = np.array([left - 1, top - 1], dtype=np.int64)  # padded crop -> image coordinates
    parts: list[list[np.ndarray]] = [[] for _ in range(count)]
    for is_exterior in (True, False):  # exterior first, then holes in tracing order
        for ring, label, area in zip(rings, ring_labels, ring_areas, strict=True):
            if (area > 0) == is_exterior:
                parts[label - 1].append(ring + shift)
    if tolerance > 0:
        parts = simplify_polygons(parts, tolerance)
    return [[ring.tolist() for ring in part] for part in parts]


def simplify_polygons(parts: list[list[np.ndarray]], tolerance: float) -> list[list[np.ndarray]]:
    """Topology-preserving simplification of one damage's polygons (rings as [K, 2] int arrays, open, exterior
    first), all parts together; the exact rings back when GEOS's result is not valid (module docstring)."""
    import shapely

    fast = _plain_simplified(parts, tolerance)
    if fast is not None:
        return fast
    geometry = shapely.MultiPolygon([shapely.Polygon(part[0], part[1:]) for part in parts])
    simplified = shapely.simplify(geometry, tolerance, preserve_topology=True)
    pieces = list(simplified.geoms) if isinstance(simplified, shapely.MultiPolygon) else [simplified]
    if len(pieces) != len(parts) or not shapely.is_valid(simplified):
        logger.debug("simplified outline invalid (%s): keeping the exact one", shapely.is_valid_reason(simplified))
        return parts
    result = []
    for piece, part in zip(pieces, parts, strict=True):
        rings = [piece.exterior, *piece.interiors]
        if len(rings) != len(part):
            return parts
        arrays = [np.rint(np.asarray(ring.coords)[:-1]).astype(np.int64) for ring in rings]
        arrays = [_oriented(ring, k == 0) for k, ring in enumerate(arrays)]
        # A rectangle stays a rectangle (GEOS would cut a 4-point ring to a triangle at large tolerances).
        result.append([exact if len(exact) <= 4 else ring for ring, exact in zip(arrays, part, strict=True)])
    restored = shapely.MultiPolygon([shapely.Polygon(p[0], p[1:]) for p in result])
    return result if shapely.is_valid(restored) else parts


def _plain_simplified(parts: list[list[np.ndarray]], tolerance: float) -> list[list[np.ndarray]] | None:
    """Plain Douglas-Peucker, ring by ring (about 40x cheaper than GEOS's topology-preserving walk), when it gives
    the same guarantee: every ring stays simple, no two rings meet, and the parts stay a valid MultiPolygon.
    None when it does not, or when two rings touch already (a corner shared by two blobs, a hole at a corner):
    those take the topology-preserving walk."""
    import shapely

    rings = [ring for part in parts for ring in part]
    if len(rings) == 1:  # the usual damage: one ring, nothing else to meet
        ring = rings[0]
        if len(ring) <= 4:  # a rectangle stays a rectangle
            return parts
        candidate = shapely.simplify(shapely.Polygon(ring), tolerance, preserve_topology=False)
        if candidate.is_empty or not isinstance(candidate, shapely.Polygon) or candidate.interiors or \
                not shapely.is_valid(candidate):
            return None
        return [[_oriented(np.rint(np.asarray(candidate.exterior.coords)[:-1]).astype(np.int64), True)]]
    low = np.array([ring.min(axis=0) for ring in rings])
    high = np.array([ring.max(axis=0) for ring in rings])
    first, second = np.triu_indices(len(rings), 1)
    # Rings in disjoint boxes cannot meet, before or after: DP keeps a subset of a ring's points, inside its box.
    near = ~((high[first] < low[second]) | (high[second] < low[first])).any(axis=1)
    first, second = first[near], second[near]
    lengths = np.array([len(ring) for ring in rings])
    exact = shapely.linearrings(np.concatenate(rings), indices=np.repeat(np.arange(len(rings)), lengths))
    if shapely.intersects(exact[first], exact[second]).any():
        return None
    simplified = shapely.simplify(shapely.polygons(exact), tolerance, preserve_topology=False)
    simplified = np.where(lengths <= 4, shapely.polygons(exact), simplified)  # a rectangle stays a rectangle
    if (shapely.is_empty(simplified) | ~shapely.is_valid(simplified)).any() or \
            (shapely.get_num_interior_rings(simplified) > 0).any():
        return None
    outlines = shapely.get_exterior_ring(simplified)
    if shapely.intersects(outlines[first], outlines[second]).any():
        return None
    points, owner = shapely.get_coordinates(outlines, return_index=True)
    bounds = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1], True])
    result, k = [], 0
    for part in parts:
        result.append([])
        for position in range(len(part)):
            ring = np.rint(points[bounds[k]: bounds[k + 1] - 1]).astype(np.int64)  # open: drop the closing point
            result[-1].append(_oriented(ring, position == 0))
            k += 1
    if len(rings) > len(parts) or len(first):  # a hole left outside its shell, a part moved into another's hole
        if not shapely.is_valid(shapely.MultiPolygon([shapely.Polygon(p[0], p[1:]) for p in result])):
            return None
    return result


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]) + x[-1] * y[0] - x[0] * y[-1])


def _oriented(ring: np.ndarray, exterior: bool) -> np.ndarray:
    """GEOS keeps each ring's direction; make sure of ours: exteriors positive, holes negative (y down)."""
    return ring if (_signed_area(ring) > 0) == exterior else ring[::-1]


def polygon_area(polygon: Polygon) -> float:
    """Area enclosed by a polygon (exterior minus holes), in square pixels."""
    return float(sum(_signed_area(np.asarray(ring, dtype=np.float64)) for ring in polygon))
