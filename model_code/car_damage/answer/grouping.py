"""Damage grouping: the detections a person would call one damage become one.

Mask R-CNN returns a long or curved scratch as several overlapping boxes (box NMS keeps them, because pieces of a
thin diagonal stroke have boxes that overlap little). Two detections of the SAME damage type are joined when

1. **their masks overlap**: intersection / smaller mask >= ``containment`` (a fragment lying mostly inside another
   detection), or
2. **one continues the other** (stroke types only, ``gap_px`` > 0): an end of one stroke's skeleton lies within
   ``gap_px`` + half their widths of the other stroke's skeleton, the other stroke runs in the same direction
   there (within ``angle_deg``), and the end's line passes through it (lateral offset <= the larger width).
   Two parallel scratches 20 px apart fail the offset test however small the gap; a scratch ending across
   another fails the direction test.

Grouping is greedy in score order and never chains two groups through one piece (``group_pieces``). Types are
never joined: a scratch inside a dent stays two damages. A group
has the union mask, the best score (and that detection's class), the union of the boxes and ``parts`` = how
many detections it holds. ``merge="none"`` returns every detection as its own group.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from car_damage.answer.measure import Stroke, oriented_box, stroke
from car_damage.model.card import MERGE_MODES, OperatingPoint

#: Damage types / class names measured as strokes (length along the skeleton) and joined across gaps.
STROKE_NAMES = ("scratch", "scratches")
#: A detection counts as a stroke for gap joining when its length is at least this many times its mean width.
MIN_STROKE_ELONGATION = 3.0


@dataclass(frozen=True)
class GroupingSettings:
    """What joins two detections; the values come from the model card's operating point."""

    mode: str = "overlap"
    containment: float = OperatingPoint.merge_containment
    gap_px: float = OperatingPoint.merge_gap_px
    angle_deg: float = OperatingPoint.merge_angle_deg
    branch_widths: float = OperatingPoint.merge_branch_widths
    spanning_cover: float = OperatingPoint.merge_spanning_cover

    def __post_init__(self) -> None:
        if self.mode not in MERGE_MODES:
            raise ValueError(f"merge mode {self.mode!r} is not one of {MERGE_MODES}")
        if not 0.0 < self.containment <= 1.0:
            raise ValueError(f"merge containment must be in (0, 1], got {self.containment}")
        if self.gap_px < 0 or not 0.0 <= self.angle_deg <= 90.0:
            raise ValueError(f"merge gap must be >= 0 and angle in [0, 90], got {self.gap_px}, {self.angle_deg}")
        if self.branch_widths < 0 or not 0.0 < self.spanning_cover <= 1.0:
            raise ValueError(f"merge branch must be >= 0 and spanning cover in (0, 1], got {self.branch_widths}, "
                             f"{self.spanning_cover}")

    @classmethod
    def from_operating_point(cls, point: OperatingPoint, mode: str | None = None) -> GroupingSettings:
        return cls(mode or point.merge, point.merge_containment, point.merge_gap_px, point.merge_angle_deg,
                   point.merge_branch_widths, point.merge_spanning_cover)

    def to_json(self) -> dict[str, object]:
        return {"mode": self.mode, "containment": self.containment, "gap_px": self.gap_px,
                "angle_deg": self.angle_deg, "branch_widths": self.branch_widths,
                "spanning_cover": self.spanning_cover}


@dataclass
class Piece:
    """One detection as the grouping sees it: a tight crop of its mask and where it sits in the image."""

    crop: np.ndarray
    top: int
    left: int
    area_px: int
    is_stroke_type: bool = False
    _stroke: Stroke | None = None
    _blobs: list[Piece] | None = None

    @property
    def bottom(self) -> int:
        return self.top + self.crop.shape[0]

    @property
    def right(self) -> int:
        return self.left + self.crop.shape[1]

    @property
    def measured_stroke(self) -> Stroke | None:
        """The stroke if it was measured already (grouping measures only the pieces it has to)."""
        return self._stroke

    def stroke(self) -> Stroke:
        if self._stroke is None:
            self._stroke = stroke(self.crop, (self.left, self.top))
        return self._stroke


def is_stroke_name(*names: str) -> bool:
    return any(name.lower() in STROKE_NAMES for name in names)


def _intersection(a: Piece, b: Piece) -> int:
    top, bottom = max(a.top, b.top), min(a.bottom, b.bottom)
    left, right = max(a.left, b.left), min(a.right, b.right)
    if top >= bottom or left >= right:
        return 0
    window_a = a.crop[top - a.top: bottom - a.top, left - a.left: right - a.left]
    window_b = b.crop[top - b.top: bottom - b.top, left - b.left: right - b.left]
    return int(np.count_nonzero(window_a & window_b))


def _near(a: Piece, b: Piece, margin: float) -> bool:
    return (a.top - margin < b.bottom and b.top - margin < a.bottom and
            a.left - margin < b.right and b.left - margin < a.right)


def _local_direction(path: np.ndarray, index: int) -> np.ndarray:
    lo, hi = max(0, index - 4), min(len(path) - 1, index + 4)
    step = path[hi] - path[lo]
    norm = float(np.hypot(*step))
    return step / norm if norm > 0 else np.array([1.0, 0.0])


def _continues(a: Stroke, b: Stroke, settings: GroupingSettings) -> bool:
    """True when an end of ``a`` runs on into ``b`` (module docstring, rule 2)."""
    if len(b.path) == 0:
        return False
    cos_limit = math.cos(math.radians(settings.angle_deg))
    reach = settings.gap_px + (a.width_px + b.width_px) / 2
    lateral_limit = max(a.width_px, b.width_px)
    for end in a.ends:
        offsets = b.path - end.point
        distances = np.hypot(offsets[:, 0], offsets[:, 1])
        nearest = int(np.argmin(distances))
        if distances[nearest] > reach:
            continue
        direction = _local_direction(b.path, nearest)
        if abs(float(direction @ end.direction)) < cos_limit:
            continue
        offset = offsets[nearest]
        lateral = abs(float(offset[0] * end.direction[1] - offset[1] * end.direction[0]))
        if lateral <= lateral_limit:
            return True
    return False


def _elongated(measured: Stroke) -> bool:
    return measured.length_px >= MIN_STROKE_ELONGATION * measured.width_px


def group_pieces(pieces: Sequence[Piece], settings: GroupingSettings) -> list[list[int]]:
    """Indices of ``pieces`` (ONE damage type, best score first) grouped into damages (``grouped_pieces``)."""
    return [members for members, _ in grouped_pieces(pieces, settings)]


def grouped_pieces(pieces: Sequence[Piece], settings: GroupingSettings) -> list[tuple[list[int], Piece]]:
    """(indices, union piece) per damage: ``pieces`` (ONE damage type, best score first) grouped, each group in
    input order; the union piece keeps the stroke measured while grouping.

    Greedy, best score first. A group's anchors are its best piece and the pieces that continue its stroke
    (rule 2); a piece joins the group whose anchor it overlaps most (rule 1), or else the first group with an
    anchor it continues, or starts a new group. A piece that joined by overlap is no anchor, and a piece joins at
    most one group, so a stray detection spanning two touching scratches cannot chain them into one damage.
    Stroke types stay strokes (rule 3): a detection whose mask falls apart into separate blobs is grouped blob
    by blob; a piece does not join a group when their union branches; and a group whose pixels lie almost all
    inside other groups is a detection spanning two strokes: it is dropped (its index is in no group).
    """
    if settings.mode == "none":
        return [([i], piece) for i, piece in enumerate(pieces)]
    owners: list[int] = []
    blobs: list[Piece] = []
    for i, piece in enumerate(pieces):
        if piece._blobs is None:  # kept on the piece: a calibration sweep groups the same pieces many times
            piece._blobs = _blobs(piece) if piece.is_stroke_type else [piece]
        parts = piece._blobs
        owners += [i] * len(parts)
        blobs += parts
    return [(sorted({owners[b] for b in group}), union) for group, union in _grouped_blobs(blobs, settings)]


#: A blob of a detection's mask is grouped on its own when it holds at least this fraction of the mask; smaller
#: blobs stay with the largest one.
MIN_BLOB_FRACTION = 0.15
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _blobs(piece: Piece) -> list[Piece]:
    """The piece itself, or one piece per large 8-connected blob of its mask (rule 3)."""
    from scipy import ndimage

    from car_damage.answer.geometry import tight_crop

    labels, count = ndimage.label(piece.crop, structure=_EIGHT_CONNECTED)
    if count < 2:
        return [piece]
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    large = np.flatnonzero(sizes >= MIN_BLOB_FRACTION * piece.area_px) + 1
    if len(large) < 2:
        return [piece]
    largest = int(np.argmax(sizes)) + 1
    small = np.isin(labels, large, invert=True) & (labels > 0)
    result = []
    for label in large:
        crop, top, left = tight_crop((labels == label) | (small if label == largest else False))
        result.append(Piece(crop, piece.top + top, piece.left + left, int(np.count_nonzero(crop)),
                            piece.is_stroke_type))
    return result


def _grouped_blobs(pieces: Sequence[Piece], settings: GroupingSettings) -> list[tuple[list[int], Piece]]:
    """``grouped_pieces`` once every piece is one blob: (piece indices, union) per damage."""
    groups: list[list[int]] = []
    anchors: list[list[int]] = []
    unions: list[Piece] = []
    for i, piece in enumerate(pieces):
        overlaps = []
        for g, group_anchors in enumerate(anchors):
            best = 0.0
            for m in group_anchors:
                other = pieces[m]
                if _near(piece, other, 1):
                    best = max(best, _intersection(piece, other) / max(1, min(piece.area_px, other.area_px)))
            if best >= settings.containment:
                overlaps.append((best, g))
        joined = -1
        for g, continued in _candidates(i, pieces, anchors, overlaps, settings):
            merged = _joined(unions[g], piece)
            if piece.is_stroke_type and merged is not unions[g] and _branches(merged, settings.branch_widths):
                continue
            joined = g
            groups[g].append(i)
            unions[g] = merged
            if continued:
                anchors[g].append(i)
            break
        if joined < 0:
            groups.append([i])
            anchors.append([i])
            unions.append(piece)
    kept = _without_spanning(unions, settings.spanning_cover) if any(p.is_stroke_type for p in pieces) else \
        range(len(groups))
    return [(groups[g], unions[g]) for g in kept]


def _branches(union: Piece, branch_widths: float) -> bool:
    """True when the union's skeleton has more side branch than ``branch_widths`` stroke widths (thinning leaves
    spurs about one width long at blunt ends and bumps; a longer branch is a second scratch meeting this one)."""
    measured = union.stroke()
    return measured.branch_px > branch_widths * max(measured.width_px, 1.0)


def _candidates(i: int, pieces: Sequence[Piece], anchors: list[list[int]], overlaps: list[tuple[float, int]],
                settings: GroupingSettings) -> Iterator[tuple[int, bool]]:
    """(group, by continuation) that piece ``i`` may join, in order: overlapping groups, most overlap first,
    then groups with an anchor it continues (strokes are measured only when it comes to that)."""
    for _, g in sorted(overlaps, key=lambda item: -item[0]):
        yield g, False
    piece = pieces[i]
    if not piece.is_stroke_type:
        return
    for g, group_anchors in enumerate(anchors):
        if any(pieces[m].is_stroke_type and _near(piece, pieces[m], settings.gap_px + 1)
               and _joins_stroke(piece, pieces[m], settings) for m in group_anchors):
            yield g, True


def _joined(union: Piece, piece: Piece) -> Piece:
    """The union of a group's union and a piece (the group's own union when the piece adds no pixel)."""
    if _intersection(union, piece) == piece.area_px:
        return union
    crop, top, left = union_crop([union, piece])
    return Piece(crop, top, left, int(np.count_nonzero(crop)), union.is_stroke_type)


def _without_spanning(unions: list[Piece], cover: float) -> list[int]:
    """Groups kept after dropping, worst first, each with a fraction ``cover`` of its pixels inside those kept."""
    kept = list(range(len(unions)))
    for g in kept[::-1]:  # groups start in score order: the worst-scored group first
        others = [unions[k] for k in kept if k != g and _near(unions[g], unions[k], 1)]
        if not others:
            continue
        crop, top, left = union_crop(others)
        if _intersection(unions[g], Piece(crop, top, left, 0)) >= cover * unions[g].area_px:  # pixels in others
            kept.remove(g)
    return kept


def _joins_stroke(a: Piece, b: Piece, settings: GroupingSettings) -> bool:
    sa, sb = a.stroke(), b.stroke()
    return _elongated(sa) and _elongated(sb) and (_continues(sa, sb, settings) or _continues(sb, sa, settings))


def union_crop(pieces: Sequence[Piece]) -> tuple[np.ndarray, int, int]:
    """(union mask crop, top, left) of several pieces."""
    top, left = min(p.top for p in pieces), min(p.left for p in pieces)
    bottom, right = max(p.bottom for p in pieces), max(p.right for p in pieces)
    union = np.zeros((bottom - top, right - left), dtype=bool)
    for p in pieces:
        union[p.top - top: p.bottom - top, p.left - left: p.right - left] |= p.crop
    return union, top, left


def pieces_from_masks(masks: np.ndarray, stroke_type: bool) -> list[Piece]:
    """Full-size masks [H, W, N] -> pieces (empty masks give pieces of area 0; callers drop them first)."""
    from car_damage.answer.geometry import tight_crop

    pieces = []
    for k in range(masks.shape[-1]):
        cropped = tight_crop(masks[..., k].astype(bool, copy=False))
        if cropped is None:
            pieces.append(Piece(np.zeros((0, 0), bool), 0, 0, 0, stroke_type))
            continue
        crop, top, left = cropped
        pieces.append(Piece(crop, top, left, int(np.count_nonzero(crop)), stroke_type))
    return pieces


def merge_masks(masks: np.ndarray, scores: np.ndarray, settings: GroupingSettings, stroke_type: bool
                ) -> tuple[list[list[int]], np.ndarray]:
    """Group full-size masks [H, W, N] of one type; returns (groups, merged masks [H, W, G]) with each group's
    members listed best score first. Used by evaluation, where detections come as full-size masks."""
    pieces = pieces_from_masks(masks, stroke_type)
    order = np.argsort(-np.asarray(scores), kind="stable")
    kept = [int(i) for i in order if pieces[i].area_px > 0]
    grouped = grouped_pieces([pieces[i] for i in kept], settings)
    merged = np.zeros(masks.shape[:2] + (len(grouped),), dtype=bool)
    for g, (_, union) in enumerate(grouped):
        merged[union.top: union.bottom, union.left: union.right, g] = union.crop
    return [[kept[i] for i in group] for group, _ in grouped], merged


__all__ = ["GroupingSettings", "Piece", "group_pieces", "merge_masks", "oriented_box", "union_crop"]
