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

Simplification. GEOS's topology-preserving simplifier (``shapely.simplify(..., preserve_topology=True)``:
Douglas-Peucker, so every dropped point lies within ``tolerance`` pixels of the segment that replaced it, but a
point is kept whenever dropping it would make rings cross or touch). All parts of one damage are simplified
together, so they stay apart as well. A damage of one ring without holes first tries plain Douglas-Peucker, about
40x cheaper, and keeps its result when it is valid: for one ring, valid means simple (no crossing, no touching),
the same guarantee. A damage whose simplified outline is not ``shapely.is_valid`` (GEOS's known corner case: a
hole tiny against the tolerance) keeps its exact outline. 0 keeps the exact pixel outline
(only collinear points are dropped). Vertices stay integer pixel corners (a subset of the exact outline's).
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

#: Length units accepted for calibration (areas come out in unit^2).
LENGTH_UNITS = ("mm", "cm", "m", "in", "ft")
#: 4-connectivity structuring element for foreground components.
FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)

# Edge directions in image coordinates (x right, y down): 0 +x, 1 +y, 2 -x, 3 -y. Every boundary edge is
# oriented with its foreground pixel on the walker's right, so (d + 1) % 4 is a right turn, (d + 3) % 4 left.
_DIRECTION_STEPS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.int64)

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

    labels, count = ndimage.label(crop, structure=FOUR_CONNECTED)
    rings, ring_labels, ring_areas = _trace_rings(np.pad(labels, 1))
    exteriors_per_label = np.bincount(ring_labels[ring_areas > 0], minlength=count + 1)[1:]
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

    geometry = shapely.MultiPolygon([shapely.Polygon(part[0], part[1:]) for part in parts])
    simplified = None
    if len(parts) == 1 and len(parts[0]) == 1:
        # One ring: plain Douglas-Peucker is ~40x cheaper than the topology-preserving walk, and a valid polygon
        # without holes has a simple ring (no crossing, no touching), so validity is the whole check.
        candidate = shapely.simplify(geometry.geoms[0], tolerance, preserve_topology=False)
        if isinstance(candidate, shapely.Polygon) and not candidate.interiors and shapely.is_valid(candidate):
            simplified = candidate
    if simplified is None:
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
        # GEOS keeps each ring's direction; make sure of ours: exteriors positive, holes negative (y down).
        arrays = [ring if (_signed_area(ring) > 0) == (k == 0) else ring[::-1] for k, ring in enumerate(arrays)]
        # A rectangle stays a rectangle (GEOS would cut a 4-point ring to a triangle at large tolerances).
        result.append([exact if len(exact) <= 4 else ring for ring, exact in zip(arrays, part, strict=True)])
    restored = shapely.MultiPolygon([shapely.Polygon(p[0], p[1:]) for p in result])
    return result if shapely.is_valid(restored) else parts


def _trace_rings(labels: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Boundary rings of every component of a zero-padded label image (4-connected components).

    Returns (rings as [K, 2] int arrays of corner (x, y) points, the component label of each ring, each
    ring's signed area: positive for exteriors, negative for holes).
    """
    fg = labels > 0
    # One pass over the crop finds the foreground pixels; each of the four edge tests is then a gather at those
    # pixels only (a thin diagonal stroke fills a few percent of its box).
    rows, cols = np.nonzero(fg)
    starts, directions, pixel_labels = [], [], []
    # (neighbour offset (dr, dc), edge start corner (dx, dy) relative to the pixel, direction)
    for (dr, dc), (sx, sy), direction in (
        ((-1, 0), (0, 0), 0),  # top edge, walking +x
        ((0, 1), (1, 0), 1),   # right edge, walking +y
        ((1, 0), (1, 1), 2),   # bottom edge, walking -x
        ((0, -1), (0, 1), 3),  # left edge, walking -y
    ):
        open_side = ~fg[rows + dr, cols + dc]  # the padding keeps every neighbour inside the array
        r, c = rows[open_side], cols[open_side]
        starts.append(np.stack([c + sx, r + sy], axis=1))
        directions.append(np.full(r.size, direction, dtype=np.int64))
        pixel_labels.append(labels[r, c])
    start = np.concatenate(starts).astype(np.int64)
    direction = np.concatenate(directions)
    edge_label = np.concatenate(pixel_labels)
    end = start + _DIRECTION_STEPS[direction]

    width = fg.shape[1] + 1  # corner grid is (H + 1) x (W + 1)
    keys = (start[:, 1] * width + start[:, 0]) * 4 + direction
    order = np.argsort(keys)
    sorted_keys = keys[order]
    end_vertex = end[:, 1] * width + end[:, 0]
    next_edge = np.full(start.shape[0], -1, dtype=np.int64)
    # Preference left > straight > right. At a saddle (two outgoing edges) turning left crosses to the
    # diagonal pixel: allowed only within one component, where it separates the exterior from a hole
    # that touches it at that corner; between two components the walk turns right and stays on its own.
    for turn in (3, 0, 1):
        wanted = end_vertex * 4 + (direction + turn) % 4
        position = np.clip(np.searchsorted(sorted_keys, wanted), 0, len(sorted_keys) - 1)
        candidate = order[position]
        found = (sorted_keys[position] == wanted) & (next_edge < 0) & (edge_label[candidate] == edge_label)
        next_edge[found] = candidate[found]
    if (next_edge < 0).any():
        raise RuntimeError("open boundary while tracing a mask (internal error)")

    edges, cycle_of = _cycle_order(next_edge)
    cycle_starts = np.flatnonzero(np.r_[True, cycle_of[1:] != cycle_of[:-1]])
    previous = np.roll(edges, 1)
    previous[cycle_starts] = edges[np.r_[cycle_starts[1:], len(edges)] - 1]  # wrap within each cycle
    corner = direction[edges] != direction[previous]  # keep corners, drop collinear points
    # Shoelace per ring from consecutive edge endpoints, summed per cycle in one pass.
    cross = start[edges, 0] * end[edges, 1] - end[edges, 0] * start[edges, 1]
    areas = 0.5 * np.add.reduceat(cross, cycle_starts)
    bounds = np.r_[cycle_starts, len(edges)]
    rings = [start[edges[a:b][corner[a:b]]] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return rings, edge_label[edges[cycle_starts]], areas


def _cycle_order(next_edge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges grouped by cycle of the permutation ``next_edge``, each cycle in walking order.

    Returns (edges, cycle id per position). Vectorised pointer jumping: the cycle id is the smallest edge
    index in the cycle; each edge's rank is its distance to the cycle's last edge (list ranking).
    """
    count = len(next_edge)
    rounds = max(1, int(np.ceil(np.log2(count))) + 1)
    representative = np.arange(count)
    jump = next_edge.copy()
    for _ in range(rounds):
        representative = np.minimum(representative, representative[jump])
        jump = jump[jump]
    last = next_edge == representative  # the edge walked just before returning to the representative
    successor = np.where(last, np.arange(count), next_edge)
    distance = (~last).astype(np.int64)
    for _ in range(rounds):
        distance = distance + distance[successor]
        successor = successor[successor]
    edges = np.lexsort((-distance, representative))
    return edges, representative[edges]


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def polygon_area(polygon: Polygon) -> float:
    """Area enclosed by a polygon (exterior minus holes), in square pixels."""
    return float(sum(_signed_area(np.asarray(ring, dtype=np.float64)) for ring in polygon))
