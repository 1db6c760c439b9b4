"""Sizes of one damage mask: the oriented bounding box of every damage, and the stroke of a scratch.

Coordinates are those of ``geometry``: pixel (row r, column c) is the square [c, c+1] x [r, r+1], x right, y down.

Oriented box. The minimum-area rectangle around the mask's pixel squares: GEOS's ``oriented_envelope`` of the row
extremes' corners (the convex hull, then rotating calipers: the optimal rectangle has a side on a hull edge; where
two rectangles tie on area, GEOS's first). ``length`` is the longer side, ``width`` the shorter, ``angle_deg`` the
direction of the long side in [0, 180) (a square: the side nearer +x), measured from +x towards +y (clockwise on
screen, because y points down).

Stroke. A scratch is priced by its length along the stroke, not by its box. The mask is thinned to a one-pixel
skeleton (``skimage.morphology.skeletonize``); per connected part the longest path through the skeleton graph
(8-neighbours, found by two breadth-first sweeps from scipy) is resampled every few pixels (an 8-neighbour chain
counts up to 8 % too much on slanted lines) and measured; each end adds the distance from its end pixel to the
mask's edge (the Euclidean distance transform at that one pixel, minus half a pixel), because thinning stops
about half a width short of the ends. The length of a damage is the sum over its parts; ``width`` is area /
length (the mean width). ``branch_px`` is the skeleton off those longest paths: spurs, or a second stroke
meeting this one. A straight 100 x 5 px bar measures 100 x 5.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order

from car_damage.answer.rings import pad_border

#: Path points kept when measuring along the skeleton (every n-th point, plus the last).
RESAMPLE_STEP = 4
#: Skeleton points at each end used for the end's direction.
TANGENT_POINTS = 8
#: Thinning costs (pixels x half-width) passes: wide or huge masks are measured on a mask shrunk so that the
#: stroke is about this many pixels wide (a 1000 x 1500 px blob took 6 s at full size).
TARGET_WIDTH_PX = 4.0
#: ... and at most this many pixels in the shrunk crop.
MAX_MEASURED_PIXELS = 1_000_000
_NEIGHBOURS = ((0, 1), (1, -1), (1, 0), (1, 1))  # half of the 8-neighbourhood: each edge once


@dataclass(frozen=True)
class OrientedBox:
    center_x: float
    center_y: float
    length: float
    width: float
    angle_deg: float

    def direction(self) -> np.ndarray:
        angle = math.radians(self.angle_deg)
        return np.array([math.cos(angle), math.sin(angle)])


@dataclass(frozen=True)
class StrokeEnd:
    """One end of a skeleton path: the end pixel's centre (x, y) and the unit direction pointing out of the stroke."""

    point: np.ndarray
    direction: np.ndarray


@dataclass(frozen=True)
class Stroke:
    """Length along the stroke and mean width, in pixels; ``ends`` of every part's longest path; ``path`` its
    points (x, y), all parts concatenated."""

    length_px: float
    width_px: float
    ends: tuple[StrokeEnd, ...]
    path: np.ndarray
    #: The parts' resampled paths (x, y pixel centres), for lengths in anisotropic units.
    polylines: tuple[np.ndarray, ...] = ()
    #: Length added beyond each end of ``ends`` (same order), in pixels.
    end_corrections: tuple[float, ...] = ()
    #: Skeleton length off the parts' longest paths, in pixels: side branches (a junction, a cross) and spurs.
    branch_px: float = 0.0
    #: The mask's oriented box (image coordinates), measured on the way: callers need not measure it again.
    box: OrientedBox | None = None


def _corner_points(crop: np.ndarray) -> np.ndarray:
    """Corners (x, y) of the leftmost and rightmost pixel of every row: enough for the convex hull."""
    rows = np.flatnonzero(crop.any(axis=1))
    first = np.argmax(crop[rows], axis=1)
    last = crop.shape[1] - 1 - np.argmax(crop[rows, ::-1], axis=1)
    xs = np.concatenate([first, first, last + 1, last + 1])
    ys = np.concatenate([rows, rows + 1, rows, rows + 1])
    return np.stack([xs, ys], axis=1).astype(np.float64)  # corners shared by neighbouring rows repeat: harmless


def oriented_box(crop: np.ndarray, origin: tuple[int, int] = (0, 0)) -> OrientedBox:
    """Minimum-area rectangle around the set pixels of ``crop`` (``origin`` = its top-left (x, y) in the image)."""
    import shapely

    crop = np.asarray(crop, dtype=bool)
    if crop.ndim != 2 or not crop.any():
        raise ValueError("oriented_box needs a non-empty 2-D mask")
    # GEOS's minimum rectangle (hull, then rotating calipers, in one call) of the corner points read as a line;
    # its four corners are then read in plain Python (numpy's per-call cost is most of the time on 4 points).
    rectangle = shapely.oriented_envelope(shapely.linestrings(_corner_points(crop)))
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = rectangle.exterior.coords[:4]
    sides = ((x1 - x0, y1 - y0), (x2 - x1, y2 - y1))
    extents = [math.hypot(dx, dy) for dx, dy in sides]
    angles = [math.degrees(math.atan2(dy, dx)) % 180.0 for dx, dy in sides]
    if abs(extents[0] - extents[1]) <= 1e-9 * max(extents):  # a square: the side nearer +x names the angle
        long_side = 0 if angles[0] <= angles[1] else 1
    else:
        long_side = 0 if extents[0] > extents[1] else 1
    degrees = 0.0 if angles[long_side] > 180.0 - 1e-6 else angles[long_side]
    # GEOS's rotations leave ulp noise on axis-aligned boxes; nine decimals are far below a pixel.
    return OrientedBox(round((x0 + x1 + x2 + x3) / 4 + origin[0], 9), round((y0 + y1 + y2 + y3) / 4 + origin[1], 9),
                       round(extents[long_side], 9), round(extents[1 - long_side], 9), round(degrees, 6))


def _longest_paths(skeleton: np.ndarray) -> list[np.ndarray]:
    """Per connected part of a skeleton (unset border), the (approximately) longest path as an ordered [K, 2]
    (row, col) array.

    Two breadth-first sweeps over the 8-neighbour graph (the farthest node from any node is one end of a longest
    path on a tree); hop counts pick the ends, the length is measured on the path itself afterwards.
    """
    width = skeleton.shape[1]
    pixels = np.flatnonzero(skeleton)
    count = pixels.size
    if count == 0:
        return []
    index = np.full(skeleton.size, -1, dtype=np.int32)
    index[pixels] = np.arange(count, dtype=np.int32)
    heads, tails = [], []
    for dr, dc in _NEIGHBOURS:  # the unset border keeps every neighbour inside the array
        other = index[pixels + dr * width + dc]
        linked = other >= 0
        heads.append(np.flatnonzero(linked).astype(np.int32))
        tails.append(other[linked])
    head, tail = np.concatenate(heads), np.concatenate(tails)
    # Both directions of every edge, as CSR built directly (int32, as scipy's graph routines take it): the sweeps
    # then run directed, with no conversion or transpose per call (scipy's set-up dominated small skeletons).
    sources, targets = np.concatenate([head, tail]), np.concatenate([tail, head])
    by_source = np.argsort(sources, kind="stable")
    degree = np.bincount(sources, minlength=count)
    indptr = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(degree, out=indptr[1:])
    neighbours = targets[by_source]
    rows, cols = np.divmod(pixels, width)
    chain = _simple_chain(degree, neighbours, indptr)
    if chain is not None:
        return [np.stack([rows[chain], cols[chain]], axis=1)]
    graph = csr_matrix((np.ones(neighbours.size), neighbours, indptr), shape=(count, count))
    paths = []
    reached = np.zeros(count, dtype=bool)
    while not reached.all():
        start = int(np.argmin(reached))  # the first pixel (raster order) of the next part
        part = breadth_first_order(graph, start, directed=True, return_predecessors=False)
        reached[part] = True
        first = int(part[-1])
        order, predecessors = breadth_first_order(graph, first, directed=True)
        node, previous = int(order[-1]), predecessors.tolist()
        chain = [node]
        while node != first:
            node = previous[node]
            chain.append(node)
        paths.append(np.stack([rows[chain], cols[chain]], axis=1))
    return paths


def _simple_chain(degree: np.ndarray, neighbours: np.ndarray, indptr: np.ndarray) -> np.ndarray | None:
    """The sweeps' path when the skeleton is one open chain (the usual scratch): walked in Python, end to end,
    and oriented as the two sweeps orient it (from the end farther from the first pixel, which is where the
    first sweep starts). None for anything else: branches, loops, several parts, or a first pixel halfway."""
    count = degree.size
    if count < 2 or degree.max() > 2 or np.count_nonzero(degree == 1) != 2 or degree.min() < 1:
        return None
    first_neighbour = neighbours[indptr[:-1]].tolist()
    second_neighbour = np.where(degree == 2, neighbours[np.minimum(indptr[:-1] + 1, len(neighbours) - 1)], -1).tolist()
    node, previous = int(np.argmin(degree)), -1  # an end
    order = [node]
    for _ in range(count - 1):
        step = first_neighbour[node] if first_neighbour[node] != previous else second_neighbour[node]
        previous, node = node, step
        if node < 0:
            return None
        order.append(node)
    if len(set(order)) != count:  # a loop beside the chain: not all pixels walked once
        return None
    position = order.index(0)  # pixel 0 is the first sweep's start
    if 2 * position == count - 1:  # as far from both ends: the sweeps' tie rule decides; let them
        return None
    return np.array(order if 2 * position < count - 1 else order[::-1])


def _polyline_length(points: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> float:
    steps = np.diff(points, axis=0) * np.asarray(scale)
    return float(np.sqrt((steps ** 2).sum(axis=1)).sum())


def _resampled(path_xy: np.ndarray) -> np.ndarray:
    """Every ``RESAMPLE_STEP``-th point and the last."""
    kept = path_xy[::RESAMPLE_STEP]
    return kept if (len(path_xy) - 1) % RESAMPLE_STEP == 0 else np.concatenate([kept, path_xy[-1:]])


def _end(path_xy: np.ndarray, at_start: bool, fallback: np.ndarray) -> StrokeEnd:
    chain = path_xy if at_start else path_xy[::-1]
    point = chain[0]
    inner = chain[min(len(chain) - 1, TANGENT_POINTS)]
    direction = point - inner
    norm = math.hypot(float(direction[0]), float(direction[1]))
    direction = direction / norm if norm > 0 else (fallback if at_start else -fallback)
    return StrokeEnd(point.astype(np.float64), direction)


def edge_distance(mask: np.ndarray, pixel: np.ndarray) -> float:
    """Distance from the centre of set pixel (row, col) to the nearest unset pixel's centre: the Euclidean
    distance transform at one pixel, found in a square window that doubles until it holds the answer (a pixel
    outside a window of half-side h is farther than h). ``mask`` must have an unset border."""
    row, col = int(pixel[0]), int(pixel[1])
    half = 2
    while True:
        top, left = max(row - half, 0), max(col - half, 0)
        whole = half >= max(mask.shape)
        rows, cols = np.nonzero(~mask[top: row + half + 1, left: col + half + 1])
        if rows.size:
            nearest = float(np.sqrt(((rows + top - row) ** 2 + (cols + left - col) ** 2).min()))
            if nearest <= half or whole:
                return nearest
        elif whole:
            raise ValueError("edge_distance needs a mask with an unset pixel")
        half *= 2


def stroke(crop: np.ndarray, origin: tuple[int, int] = (0, 0), box: OrientedBox | None = None) -> Stroke:
    """Length along the stroke, mean width and ends of the set pixels of ``crop`` (see the module docstring)."""
    from skimage.morphology import skeletonize

    crop = np.asarray(crop, dtype=bool)
    area = int(np.count_nonzero(crop))
    if area == 0:
        raise ValueError("stroke needs a non-empty mask")
    box = box or oriented_box(crop, origin)
    factor = max(1, int(area / max(box.length, 1.0) // TARGET_WIDTH_PX),
                 math.ceil(math.sqrt(crop.size / MAX_MEASURED_PIXELS)))
    if factor > 1:
        height, width = -(-crop.shape[0] // factor) * factor, -(-crop.shape[1] // factor) * factor
        blocks = np.zeros((height, width), dtype=np.uint8)
        blocks[: crop.shape[0], : crop.shape[1]] = crop
        # Pixels per block: whole rows of each band first (contiguous, ~6x faster than one reduction over both).
        total = np.uint16 if factor * factor <= np.iinfo(np.uint16).max else np.uint32
        bands = blocks.reshape(height // factor, factor, width).sum(axis=1, dtype=total)
        shrunk = bands.reshape(height // factor, width // factor, factor).sum(axis=2) * 2 >= factor ** 2
        if shrunk.any():
            small_box = dataclasses.replace(box, length=box.length / factor, width=box.width / factor)
            small = stroke(shrunk, (0, 0), small_box)
            scale = float(factor)
            origin_xy = np.array(origin, dtype=np.float64)
            polylines = tuple(line * scale + origin_xy for line in small.polylines)
            ends = tuple(StrokeEnd(end.point * scale + origin_xy, end.direction) for end in small.ends)
            length = small.length_px * scale
            return Stroke(length, area / length, ends, small.path * scale + origin_xy, polylines,
                          tuple(c * scale for c in small.end_corrections), small.branch_px * scale, box)
    padded = pad_border(crop)
    skeleton = skeletonize(padded)
    shift = np.array([origin[0] - 1, origin[1] - 1], dtype=np.float64)  # padded (col, row) -> image (x, y)
    length, ends, paths, polylines, corrections = 0.0, [], [], [], []
    for path in _longest_paths(skeleton):
        xy = path[:, ::-1].astype(np.float64) + shift + 0.5  # pixel centres
        # Thinning stops short of each end: add the end pixel's distance to the edge (centre to edge: -0.5).
        end_gaps = (0.0, 0.0) if len(path) == 1 else \
            tuple(max(edge_distance(padded, p) - 0.5, 0.0) for p in (path[0], path[-1]))
        resampled = _resampled(xy)
        part_length = _polyline_length(resampled) + sum(end_gaps)
        if len(path) == 1:
            part_length = max(part_length, 1.0)
        length += part_length
        ends += [_end(xy, True, -box.direction()), _end(xy, False, -box.direction())]
        paths.append(xy)
        polylines.append(resampled)
        corrections += list(end_gaps)
    if length <= 0:  # no skeleton (cannot happen for a non-empty mask, but never divide by zero)
        length = max(box.length, 1.0)
    branch = float(np.count_nonzero(skeleton) - sum(len(path) for path in paths))
    return Stroke(float(length), area / length, tuple(ends), np.concatenate(paths) if paths else np.zeros((0, 2)),
                  tuple(polylines), tuple(corrections), branch, box)


def stroke_length_in_units(measured: Stroke, scale: tuple[float, float]) -> float:
    """The stroke's length with x and y pixels of different physical sizes (``scale`` = unit per pixel in x, y)."""
    ends = sum(gap * math.hypot(end.direction[0] * scale[0], end.direction[1] * scale[1])
               for gap, end in zip(measured.end_corrections, measured.ends, strict=True))
    return sum(_polyline_length(line, scale) for line in measured.polylines) + ends


def box_sides_in_units(box: OrientedBox, scale: tuple[float, float]) -> tuple[float, float]:
    """(length, width) of an oriented box with x and y pixels of different physical sizes."""
    u = box.direction()
    along = math.hypot(u[0] * scale[0], u[1] * scale[1])
    across = math.hypot(u[1] * scale[0], u[0] * scale[1])
    return box.length * along, box.width * across
