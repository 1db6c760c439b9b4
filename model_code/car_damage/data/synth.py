"""Synthetic car-damage photographs with exact VIA 2.x polygons: the demo's embedded dataset.

Each image is a painted car panel (base colour, gradient lighting, soft specular reflections, a horizon
reflection, panel gaps, orange-peel texture and sensor noise) carrying scratches (thin curved strokes,
brighter or darker than the paint) and dents (shaded elliptical depressions). Every damage starts as a
polygon with integer vertices; the polygon is rasterised with ``skimage.draw.polygon`` (the rasteriser the
VIA loaders use) and the damage is painted on exactly those pixels, so the mask a loader rebuilds from the
JSON *is* the drawn damage. Images are PNG (lossless) so no compression blurs that relation.

Determinism: image ``i`` of split ``s`` is drawn from ``numpy.random.default_rng([seed, s, i])``, so the
same seed gives byte-identical files and JSON, and an image does not change when ``n`` changes.

    python -m car_damage synth --out data/synth --n 200 --size 256
    python -m car_damage.cli.synth --out data/synth --n 200
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.draw import polygon as rasterise_polygon

logger = logging.getLogger(__name__)

#: Bump when the drawing changes, so caches keyed by ``SynthSettings.fingerprint()`` are rebuilt.
GENERATOR_VERSION = 4
ANNOTATION_FILE = "via_region_data.json"
DAMAGE_KINDS = ("scratch", "dent")
SPLITS = ("train", "val")
#: Car paint colours (RGB in 0..1): red, blue, silver, black, white, green, grey, yellow, dark blue.
PAINT_COLOURS = np.array(
    [
        [0.62, 0.06, 0.07], [0.10, 0.22, 0.55], [0.70, 0.72, 0.74], [0.07, 0.07, 0.08], [0.90, 0.90, 0.88],
        [0.12, 0.36, 0.20], [0.38, 0.40, 0.42], [0.85, 0.68, 0.10], [0.06, 0.10, 0.25],
    ]
)
#: Vertices sampled along a scratch's centre line (each side of the outline gets this many).
SCRATCH_SAMPLES = 20
DENT_VERTICES = 24


@dataclass(frozen=True)
class SynthSettings:
    """What to draw. Lengths are fractions of the image's shorter side unless named ``*_px``."""

    n: int = 200
    val_fraction: float = 0.2
    height: int = 256
    width: int = 256
    seed: int = 0
    scratches: tuple[int, int] = (1, 3)
    dents: tuple[int, int] = (0, 1)
    scratch_length: tuple[float, float] = (0.2, 0.55)
    scratch_width_px: tuple[float, float] = (5.0, 10.0)
    scratch_bend: float = 0.08
    dent_size: tuple[float, float] = (0.06, 0.14)
    panel_gap_probability: float = 0.35
    attribute: str = "damage"

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"n must be >= 2 (at least one train and one val image), got {self.n}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if min(self.height, self.width) < 64 or max(self.height, self.width) > 4096:
            raise ValueError(f"image size must be 64..4096 px per side, got {self.height}x{self.width}")
        for name in ("scratches", "dents", "scratch_length", "scratch_width_px", "dent_size"):
            low, high = getattr(self, name)
            if low < 0 or low > high:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high, got {(low, high)}")
        if self.scratches[1] + self.dents[1] == 0:
            raise ValueError("at least one scratch or dent per image is needed")
        if not self.attribute:
            raise ValueError("attribute (the region attribute that names the damage type) must not be empty")

    @property
    def num_val(self) -> int:
        return max(1, min(self.n - 1, round(self.n * self.val_fraction)))

    def fingerprint(self) -> str:
        """A short hash of every setting and the generator version (a cache key)."""
        payload = json.dumps({"version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class Damage:
    """One drawn damage: its type, the integer polygon written to the JSON, and its rasterised mask."""

    kind: str
    xs: list[int]
    ys: list[int]
    mask: np.ndarray = field(repr=False)


@dataclass
class SynthSample:
    """A rendered image, the same panel before any damage was painted, and the damages."""

    image: np.ndarray
    background: np.ndarray
    damages: list[Damage]


def polygon_mask(xs: Sequence[float], ys: Sequence[float], height: int, width: int) -> np.ndarray:
    """The boolean mask a VIA loader builds from a polygon (``skimage.draw.polygon``, rows=y, cols=x)."""
    mask = np.zeros((height, width), dtype=bool)
    rows, cols = rasterise_polygon(np.asarray(ys, float), np.asarray(xs, float), shape=(height, width))
    mask[rows, cols] = True
    return mask


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about -1..1: a random ``cells`` grid upsampled bilinearly."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    image = Image.fromarray(grid, mode="F").resize((width, height), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def render_panel(rng: np.random.Generator, height: int, width: int, gap_probability: float) -> np.ndarray:
    """An undamaged painted panel, float32 RGB in 0..1."""
    size = min(height, width)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    colour = np.clip(PAINT_COLOURS[rng.integers(len(PAINT_COLOURS))] + rng.normal(0, 0.04, 3), 0.02, 0.97)
    # Gradient lighting across the panel, plus a gentle vignette.
    angle = rng.uniform(0, 2 * np.pi)
    along = ((xs - width / 2) * np.cos(angle) + (ys - height / 2) * np.sin(angle)) / size
    radius = np.hypot(xs - width / 2, ys - height / 2) / size
    light = 1.0 + rng.uniform(0.2, 0.6) * along - rng.uniform(0.0, 0.3) * radius**2
    image = colour[None, None, :] * light[..., None]
    # Specular reflections: soft bright bands of white light (added, as specular light is).
    for _ in range(rng.integers(1, 4)):
        theta = rng.uniform(0, np.pi)
        offset = rng.uniform(-0.5, 0.5) * size
        bend = rng.uniform(-1.5, 1.5) / size
        across = (xs - width / 2) * np.cos(theta) + (ys - height / 2) * np.sin(theta)
        along_band = -(xs - width / 2) * np.sin(theta) + (ys - height / 2) * np.cos(theta)
        distance = across - offset - bend * along_band**2
        sigma = rng.uniform(0.04, 0.2) * size
        image += rng.uniform(0.1, 0.45) * np.exp(-((distance / sigma) ** 2))[..., None]
    # A reflected horizon: a soft step between a lighter "sky" and a darker "ground" half.
    if rng.random() < 0.5:
        theta = rng.uniform(-0.3, 0.3)
        level = rng.uniform(0.2, 0.8) * height
        distance = ys - level - np.tan(theta) * (xs - width / 2)
        step = 1.0 / (1.0 + np.exp(-distance / rng.uniform(3.0, 10.0)))
        image *= (1.0 - rng.uniform(0.1, 0.35) * step)[..., None]
    # Panel gaps: a long straight dark groove with a lit lip beside it (a straight distractor).
    if rng.random() < gap_probability:
        theta = rng.uniform(0, np.pi)
        offset = rng.uniform(-0.35, 0.35) * size
        distance = (xs - width / 2) * np.cos(theta) + (ys - height / 2) * np.sin(theta) - offset
        groove = np.exp(-((distance / rng.uniform(1.0, 2.0)) ** 2))
        lip = np.exp(-(((distance - 3.0) / 1.5) ** 2))
        image = image * (1.0 - 0.8 * groove)[..., None] + 0.15 * lip[..., None]
    # Orange-peel paint texture and metallic flake / sensor noise.
    image *= (1.0 + 0.03 * _smooth_noise(rng, height, width, max(4, size // 16)))[..., None]
    image += rng.normal(0.0, rng.uniform(0.005, 0.02), image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _bezier(points: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions and tangents of a cubic Bezier curve (points [4, 2] as x, y) at parameters t."""
    p0, p1, p2, p3 = points
    s = 1.0 - t[:, None]
    tt = t[:, None]
    position = s**3 * p0 + 3 * s**2 * tt * p1 + 3 * s * tt**2 * p2 + tt**3 * p3
    tangent = 3 * s**2 * (p1 - p0) + 6 * s * tt * (p2 - p1) + 3 * tt**2 * (p3 - p2)
    return position, tangent


def scratch_polygon(rng: np.random.Generator, settings: SynthSettings) -> tuple[list[int], list[int]] | None:
    """The outline of a tapered, gently curved stroke inside the image, or None when it fell outside."""
    height, width = settings.height, settings.width
    size = min(height, width)
    length = rng.uniform(*settings.scratch_length) * size
    start = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    bends = rng.normal(0.0, settings.scratch_bend * length, 2)
    controls = np.stack(
        [
            start,
            start + direction * length / 3 + normal * bends[0],
            start + direction * 2 * length / 3 + normal * bends[1],
            start + direction * length,
        ]
    )
    t = np.linspace(0.0, 1.0, SCRATCH_SAMPLES)
    centre, tangent = _bezier(controls, t)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-6)
    side = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    # Tapered ends (never to zero, so the tips still rasterise) and a slowly varying width.
    full_width = rng.uniform(*settings.scratch_width_px)
    taper = 0.35 + 0.65 * np.sin(np.pi * t) ** 0.6
    wobble = 1.0 + 0.15 * np.sin(2 * np.pi * (rng.uniform(1, 3) * t + rng.uniform()))
    half = (full_width / 2 * taper * wobble)[:, None]
    outline = np.concatenate([centre + side * half, (centre - side * half)[::-1]])
    outline = np.rint(outline).astype(int)
    if outline[:, 0].min() < 0 or outline[:, 1].min() < 0:
        return None
    if outline[:, 0].max() > width - 1 or outline[:, 1].max() > height - 1:
        return None
    return outline[:, 0].tolist(), outline[:, 1].tolist()


def paint_scratch(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> None:
    """Paint a scratch on exactly the ``mask`` pixels: exposed primer (bright) or a deep gouge (dark)."""
    local = float(_luminance(image[mask]).mean())
    bright = rng.random() < 0.6
    if bright and local > 0.6:
        bright = False  # a bright scratch on white paint would be invisible; real ones look dark there
    if not bright and local < 0.3:
        bright = True
    if bright:
        target = np.array([rng.uniform(0.85, 1.0)] * 3) + rng.normal(0, 0.02, 3)
    else:
        target = np.array([rng.uniform(0.02, 0.12)] * 3) + rng.normal(0, 0.01, 3)
    pixels = image[mask]
    strength = rng.uniform(0.75, 0.95) * (1.0 + rng.uniform(-0.15, 0.1, (len(pixels), 1)))
    image[mask] = np.clip(pixels + (target - pixels) * np.clip(strength, 0.6, 1.0), 0.0, 1.0)


def dent_polygon(rng: np.random.Generator, settings: SynthSettings) -> tuple[list[int], list[int], dict]:
    """An elliptical outline (centre, semi-axes, rotation returned for shading)."""
    height, width = settings.height, settings.width
    size = min(height, width)
    semi_major = rng.uniform(*settings.dent_size) * size
    semi_minor = semi_major * rng.uniform(0.45, 0.9)
    margin = semi_major + 1
    centre = np.array([rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)])
    rotation = rng.uniform(0, np.pi)
    phi = np.linspace(0, 2 * np.pi, DENT_VERTICES, endpoint=False)
    local = np.stack([semi_major * np.cos(phi), semi_minor * np.sin(phi)], axis=1)
    turn = np.array([[np.cos(rotation), -np.sin(rotation)], [np.sin(rotation), np.cos(rotation)]])
    outline = np.rint(centre + local @ turn.T).astype(int)
    outline[:, 0] = np.clip(outline[:, 0], 0, width - 1)
    outline[:, 1] = np.clip(outline[:, 1], 0, height - 1)
    geometry = {"centre": centre, "axes": (semi_major, semi_minor), "rotation": rotation}
    return outline[:, 0].tolist(), outline[:, 1].tolist(), geometry


def paint_dent(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, geometry: dict) -> None:
    """Shade a paraboloid depression lit from one side: the far wall lit, the near wall in shadow."""
    rows, cols = np.nonzero(mask)
    cx, cy = geometry["centre"]
    semi_major, semi_minor = geometry["axes"]
    rotation = geometry["rotation"]
    dx, dy = cols - cx, rows - cy
    u = (dx * np.cos(rotation) + dy * np.sin(rotation)) / semi_major
    v = (-dx * np.sin(rotation) + dy * np.cos(rotation)) / semi_minor
    light = rng.uniform(0, 2 * np.pi)
    facing = u * np.cos(light) + v * np.sin(light)  # -1..1: which wall faces the light
    depth = np.clip(1.0 - (u**2 + v**2), 0.0, 1.0)
    # The floor of the dent is duller; the walls brighten or darken with their slope towards the light.
    shade = rng.uniform(0.25, 0.4) * facing - rng.uniform(0.08, 0.15) * (0.4 + depth)
    image[rows, cols] = np.clip(image[rows, cols] * (1.0 + shade[:, None]) + 0.1 * np.maximum(shade, 0)[:, None],
                                0.0, 1.0)


def render_sample(rng: np.random.Generator, settings: SynthSettings) -> SynthSample:
    """One image with its damages; at least one damage is always drawn."""
    height, width = settings.height, settings.width
    panel = render_panel(rng, height, width, settings.panel_gap_probability)
    image = panel.copy()
    damages: list[Damage] = []
    num_dents = int(rng.integers(settings.dents[0], settings.dents[1] + 1))
    num_scratches = int(rng.integers(settings.scratches[0], settings.scratches[1] + 1))
    if num_dents + num_scratches == 0:
        num_scratches = 1 if settings.scratches[1] > 0 else 0
        num_dents = 0 if num_scratches else 1
    # Dents first: a scratch running across a dent is drawn on top of it, as it would be on a car.
    for _ in range(num_dents):
        xs, ys, geometry = dent_polygon(rng, settings)
        mask = polygon_mask(xs, ys, height, width)
        if mask.any():
            paint_dent(rng, image, mask, geometry)
            damages.append(Damage("dent", xs, ys, mask))
    for _ in range(num_scratches):
        for _attempt in range(20):
            outline = scratch_polygon(rng, settings)
            if outline is not None:
                break
        if outline is None:
            continue
        mask = polygon_mask(*outline, height, width)
        if mask.any():
            paint_scratch(rng, image, mask)
            damages.append(Damage("scratch", outline[0], outline[1], mask))
    to_uint8 = lambda array: np.rint(array * 255.0).astype(np.uint8)  # noqa: E731
    return SynthSample(image=to_uint8(image), background=to_uint8(panel), damages=damages)


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), index])


def via_entry(filename: str, size_bytes: int, damages: Sequence[Damage], attribute: str) -> dict:
    """One image's record in VIA 2.x export form (regions as a list)."""
    regions = [
        {
            "shape_attributes": {"name": "polygon", "all_points_x": list(d.xs), "all_points_y": list(d.ys)},
            "region_attributes": {attribute: d.kind},
        }
        for d in damages
    ]
    return {"filename": filename, "size": size_bytes, "regions": regions, "file_attributes": {}}


@dataclass
class SynthReport:
    """What ``generate`` wrote."""

    out: Path
    images: dict[str, int]
    damages: dict[str, int]
    seconds: float


def generate(out: str | Path, settings: SynthSettings) -> SynthReport:
    """Write ``out/train`` and ``out/val``, each with PNG images and ``via_region_data.json``."""
    out = Path(out)
    started = time.perf_counter()
    counts = {split: 0 for split in SPLITS}
    damage_counts = {kind: 0 for kind in DAMAGE_KINDS}
    sizes = {"train": settings.n - settings.num_val, "val": settings.num_val}
    for split in SPLITS:
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        annotations: dict[str, dict] = {}
        for index in range(sizes[split]):
            sample = render_sample(sample_rng(settings.seed, split, index), settings)
            filename = f"synth_{split}_{index:05d}.png"
            path = folder / filename
            Image.fromarray(sample.image).save(path, format="PNG", compress_level=1)
            size_bytes = path.stat().st_size
            annotations[f"{filename}{size_bytes}"] = via_entry(filename, size_bytes, sample.damages, settings.attribute)
            counts[split] += 1
            for damage in sample.damages:
                damage_counts[damage.kind] += 1
        (folder / ANNOTATION_FILE).write_text(json.dumps(annotations, indent=1) + "\n")
    seconds = time.perf_counter() - started
    logger.info("wrote %s images and %s damages to %s in %.1fs", counts, damage_counts, out, seconds)
    return SynthReport(out=out, images=counts, damages=damage_counts, seconds=seconds)
