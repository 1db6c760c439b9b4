"""Boundary rings of a binary mask, by crack following on the pixel-corner grid (``geometry`` turns them into
polygons).

Coordinates are those of ``geometry``: pixel (row r, column c) is the square [c, c+1] x [r, r+1], x right, y down.
Corners are numbered row by row on the (H + 1) x (W + 1) corner grid of an H x W mask. Every boundary edge is
oriented with its foreground pixel on the walker's right; directions in image coordinates are 0 +x, 1 +y, 2 -x,
3 -y, so (d + 1) % 4 is a right turn and (d + 3) % 4 a left one. Exteriors then have a positive shoelace area in
(x, y) and holes a negative one.

Shape shorthand: E boundary edges; rings are [K, 2] int arrays of corner (x, y) points, open (the first point is
not repeated), collinear points dropped.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: 4-connectivity structuring element for foreground components.
FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def pad_border(array: np.ndarray, value: int = 0) -> np.ndarray:
    """A 2-D array with a one-pixel border of ``value`` (``np.pad`` costs ten times more on a damage's crop)."""
    out = np.full((array.shape[0] + 2, array.shape[1] + 2), value, dtype=array.dtype)
    out[1:-1, 1:-1] = array
    return out


def trace_rings(fg: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Boundary rings of the 4-connected components of a zero-padded boolean mask.

    Returns (rings as [K, 2] int arrays of corner (x, y) points; for each ring the flat index, in ``fg``, of a
    pixel of the component it bounds; each ring's signed area: positive for exteriors, negative for holes).
    Corners are numbered row by row on the (H + 1) x (W + 1) corner grid; edges are numbered top edges first,
    then right, bottom and left edges, each group in raster order, and every ring starts at its lowest edge.
    """
    height, width = fg.shape
    corner_width = width + 1
    flat = fg.ravel()
    pixels = np.flatnonzero(flat)  # one pass over the crop; each edge test is then a gather at these pixels
    top_left = pixels + pixels // width  # corner id of each pixel's top-left corner: row * (W + 1) + col
    starts, directions, owners = [], [], []
    # (neighbour offset, edge start corner relative to the top-left corner, direction 0 +x, 1 +y, 2 -x, 3 -y)
    for neighbour, corner, direction in ((-width, 0, 0), (1, 1, 1), (width, corner_width + 1, 2),
                                         (-1, corner_width, 3)):
        open_side = ~flat[pixels + neighbour]  # the padding keeps every neighbour inside the array
        owners.append(pixels[open_side])
        starts.append(top_left[open_side] + corner)
        directions.append(np.full(owners[-1].size, direction, dtype=np.int64))
    start, direction, owner = np.concatenate(starts), np.concatenate(directions), np.concatenate(owners)
    end = start + np.array([1, corner_width, -1, -corner_width])[direction]
    count = start.size

    by_corner = np.full((height + 1) * corner_width, -1, dtype=np.int64)
    by_corner[start] = np.arange(count)
    if (by_corner[start] == np.arange(count)).all():  # every corner starts at most one edge: no saddle
        next_edge = by_corner[end]
    else:
        next_edge = _linked_at_saddles(fg, start, end, direction, owner)
    if (next_edge < 0).any():
        raise RuntimeError("open boundary while tracing a mask (internal error)")

    edges, cycle_starts = _cycles(next_edge)
    cycle_ends = np.r_[cycle_starts[1:], count]
    turns = direction[edges]
    before = np.empty_like(turns)
    before[1:] = turns[:-1]
    before[cycle_starts] = turns[cycle_ends - 1]  # wrap within each cycle
    corner = turns != before  # keep corners, drop collinear points
    start_y, start_x = np.divmod(start[edges], corner_width)
    end_y, end_x = np.divmod(end[edges], corner_width)
    areas = 0.5 * np.add.reduceat(start_x * end_y - end_x * start_y, cycle_starts)  # shoelace per ring
    points = np.stack([start_x[corner], start_y[corner]], axis=1)
    rings = np.split(points, np.cumsum(np.add.reduceat(corner.astype(np.int64), cycle_starts))[:-1])
    return rings, owner[edges[cycle_starts]], areas


def _linked_at_saddles(fg: np.ndarray, start: np.ndarray, end: np.ndarray, direction: np.ndarray,
                       owner: np.ndarray) -> np.ndarray:
    """The edge that follows each edge when some corner starts two (a saddle: two pixels touching diagonally).

    Preference left > straight > right. At a saddle, turning left crosses to the diagonal pixel: allowed only
    within one component, where it separates the exterior from a hole that touches it at that corner; between two
    components the walk turns right and stays on its own.
    """
    labels = pad_border(ndimage.label(fg[1:-1, 1:-1], structure=FOUR_CONNECTED)[0]).ravel()
    edge_label = labels[owner]
    keys = start * 4 + direction
    order = np.argsort(keys)
    sorted_keys = keys[order]
    next_edge = np.full(start.size, -1, dtype=np.int64)
    for turn in (3, 0, 1):
        wanted = end * 4 + (direction + turn) % 4
        position = np.clip(np.searchsorted(sorted_keys, wanted), 0, len(sorted_keys) - 1)
        candidate = order[position]
        found = (sorted_keys[position] == wanted) & (next_edge < 0) & (edge_label[candidate] == edge_label)
        next_edge[found] = candidate[found]
    return next_edge


#: Up to this many boundary edges the cycles are walked in Python; above it scipy's compiled walk wins (its
#: set-up costs about as much as a Python walk of this many steps).
PYTHON_WALK_EDGES = 800


def _cycles(next_edge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges grouped by cycle of the permutation ``next_edge``, cycles by their lowest edge, each in walking order
    from that edge; returns (edges, start position of each cycle)."""
    count = next_edge.size
    if count <= PYTHON_WALK_EDGES:
        following, order, starts, seen = next_edge.tolist(), [], [], bytearray(count)
        for first in range(count):
            if seen[first]:
                continue
            starts.append(len(order))
            edge = first
            while not seen[edge]:
                seen[edge] = 1
                order.append(edge)
                edge = following[edge]
        return np.array(order, dtype=np.int64), np.array(starts, dtype=np.int64)

    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import depth_first_order

    graph = csr_matrix((np.ones(count), next_edge.astype(np.int32), np.arange(count + 1, dtype=np.int32)),
                       shape=(count, count))
    walks, walked, visited, edge = [], 0, None, 0
    while True:  # a damage has few rings: one walk each (scipy's connected components cost more than that)
        walks.append(depth_first_order(graph, edge, directed=True, return_predecessors=False))
        walked += walks[-1].size
        if walked == count:
            break
        visited = np.zeros(count, dtype=bool) if visited is None else visited
        visited[walks[-1]] = True
        edge = int(np.argmin(visited))  # the lowest edge not walked yet starts the next cycle
    return np.concatenate(walks), np.cumsum([0] + [walk.size for walk in walks[:-1]])
