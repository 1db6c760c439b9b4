"""Per-request inference options, parsed from SageMaker custom attributes and/or the query string.

SageMaker forwards only ``X-Amzn-SageMaker-Custom-Attributes`` (``key=value;key=value``, at most 1024
visible ASCII characters, values may be URL-encoded) to the container, so every option can travel there.
The same keys are accepted in the query string for local use (``/invocations?min_score=0.8``). When a key
appears in both, the HEADER WINS: it is the channel SageMaker guarantees, and a proxy or client library
that adds query parameters must not override what the caller put in CustomAttributes.

| key               | type / range                               | default                                  |
|-------------------|--------------------------------------------|------------------------------------------|
| min_score         | float in [0, 1]                            | each model's DETECTION_MIN_CONFIDENCE    |
| types             | comma list of damage types (e.g. scratch)  | every loaded model                       |
| max_instances     | int in [1, 1000]                           | no cap beyond the models' own            |
| polygon_tolerance | float px in [0, 50]                        | 1.0                                      |
| masks             | none or rle                                | none                                     |
| merge             | none or overlap (damage grouping)          | each model card's operating point        |
| frame_width       | float > 0 (with frame_height)              | no calibration                           |
| frame_height      | float > 0 (with frame_width)               | no calibration                           |
| pixels_per_unit   | float > 0 (instead of the frame)           | no calibration                           |
| unit              | mm, cm, m, in or ft                        | in (the old system's unit)               |

Unknown keys and bad values raise ``errors.BadOption`` naming the key and what is accepted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from car_damage.answer.geometry import LENGTH_UNITS, AreaCalibration
from car_damage.errors import BadOption
from car_damage.model.card import MERGE_MODES

MIN_SCORE_RANGE = (0.0, 1.0)
MAX_INSTANCES_RANGE = (1, 1000)
POLYGON_TOLERANCE_RANGE = (0.0, 50.0)
DEFAULT_POLYGON_TOLERANCE = 1.0
MASK_FORMATS = ("none", "rle")
DEFAULT_UNIT = "in"
#: Calibration lengths above this are surely a typo (a frame 10 km wide).
MAX_CALIBRATION_VALUE = 1e7
#: A damage type name as it appears in ``mask_cnn_<type>.h5``.
TYPE_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
OPTION_KEYS = (
    "min_score", "types", "max_instances", "polygon_tolerance", "masks", "merge",
    "frame_width", "frame_height", "pixels_per_unit", "unit",
)


@dataclass(frozen=True)
class InferenceOptions:
    """What a request may change; ``None`` means "use the model's own setting"."""

    min_score: float | None = None
    types: tuple[str, ...] | None = None
    max_instances: int | None = None
    polygon_tolerance: float = DEFAULT_POLYGON_TOLERANCE
    masks: str = "none"
    calibration: AreaCalibration | None = None
    #: ``none`` or ``overlap``; None: each model card's operating point (overlap unless the card says otherwise).
    merge: str | None = None

    def __post_init__(self) -> None:
        # Constructed directly (not only via from_mapping): the same ranges hold.
        if self.min_score is not None and not MIN_SCORE_RANGE[0] <= self.min_score <= MIN_SCORE_RANGE[1]:
            raise BadOption(f"min_score={self.min_score} is outside [0, 1]")
        if self.max_instances is not None and not (
            MAX_INSTANCES_RANGE[0] <= self.max_instances <= MAX_INSTANCES_RANGE[1]
        ):
            raise BadOption(f"max_instances={self.max_instances} is outside {list(MAX_INSTANCES_RANGE)}")
        if not POLYGON_TOLERANCE_RANGE[0] <= self.polygon_tolerance <= POLYGON_TOLERANCE_RANGE[1]:
            raise BadOption(
                f"polygon_tolerance={self.polygon_tolerance} is outside {list(POLYGON_TOLERANCE_RANGE)} px"
            )
        if self.masks not in MASK_FORMATS:
            raise BadOption(f"masks={self.masks!r} is not one of {', '.join(MASK_FORMATS)}")
        if self.merge is not None and self.merge not in MERGE_MODES:
            raise BadOption(f"merge={self.merge!r} is not one of {', '.join(MERGE_MODES)}")
        if self.types is not None and not self.types:
            raise BadOption("types is empty; omit it to run every model")

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, str], *, known_types: Iterable[str] | None = None
    ) -> InferenceOptions:
        """Parse string options (custom attributes or query args); ``known_types`` restricts ``types``."""
        unknown = sorted(set(values) - set(OPTION_KEYS))
        if unknown:
            raise BadOption(f"unknown option {unknown[0]!r}; accepted options: {', '.join(OPTION_KEYS)}")
        raw = {key: _as_text(key, value) for key, value in values.items()}
        return cls(
            min_score=_parse_float(raw, "min_score", *MIN_SCORE_RANGE),
            types=_parse_types(raw.get("types"), known_types),
            max_instances=_parse_int(raw, "max_instances", *MAX_INSTANCES_RANGE),
            polygon_tolerance=_parse_float(raw, "polygon_tolerance", *POLYGON_TOLERANCE_RANGE,
                                           default=DEFAULT_POLYGON_TOLERANCE),
            masks=_parse_choice(raw, "masks", MASK_FORMATS, default="none"),
            calibration=_parse_calibration(raw),
            merge=_parse_choice(raw, "merge", MERGE_MODES, default=None),
        )

    def to_json(self) -> dict[str, object]:
        """The effective options, echoed in the response."""
        return {
            "min_score": self.min_score,
            "types": list(self.types) if self.types is not None else None,
            "max_instances": self.max_instances,
            "polygon_tolerance": self.polygon_tolerance,
            "masks": self.masks,
            "merge": self.merge,
        }


def parse_custom_attributes(header_value: str | None) -> dict[str, str]:
    """``"min_score=0.8; types=scratch%2Cdent"`` -> ``{"min_score": "0.8", "types": "scratch,dent"}``.

    Empty segments are skipped; keys are stripped and lower-cased; values are URL-decoded. A segment
    without ``=``, an empty key or a key given twice raises ``BadOption``.
    """
    parsed: dict[str, str] = {}
    if not header_value:
        return parsed
    for segment in header_value.split(";"):
        segment = segment.strip()
        if not segment:
            continue
        key, sep, value = segment.partition("=")
        key = unquote(key).strip().lower()
        if not sep or not key:
            raise BadOption(
                f"custom attribute {segment!r} is not key=value; expected e.g. 'min_score=0.8;types=scratch'"
            )
        if key in parsed:
            raise BadOption(f"option {key!r} is given twice in the custom attributes")
        parsed[key] = unquote(value).strip()
    return parsed


def options_from_request(
    custom_attributes: str | None,
    query: Mapping[str, str] | None = None,
    *,
    known_types: Iterable[str] | None = None,
) -> InferenceOptions:
    """Merge the query string and the custom-attributes header (header wins) into InferenceOptions."""
    merged = {key.strip().lower(): value for key, value in (query or {}).items()}
    merged.update(parse_custom_attributes(custom_attributes))
    return InferenceOptions.from_mapping(merged, known_types=known_types)


def _as_text(key: str, value: object) -> str:
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise BadOption(f"option {key!r} is given {len(value)} times; give it once")
        value = value[0]
    if not isinstance(value, str):
        raise BadOption(f"option {key!r} must be a string value, got {type(value).__name__}")
    return value.strip()


def _parse_float(raw: Mapping[str, str], key: str, low: float, high: float,
                 default: float | None = None) -> float | None:
    text = raw.get(key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadOption(f"{key}={text!r} is not a number; expected a number in [{low:g}, {high:g}]") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise BadOption(f"{key}={text!r} is out of range; expected a number in [{low:g}, {high:g}]")
    return value


def _parse_positive(raw: Mapping[str, str], key: str) -> float | None:
    text = raw.get(key)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadOption(f"{key}={text!r} is not a number; expected a positive length") from None
    if not math.isfinite(value) or not 0.0 < value <= MAX_CALIBRATION_VALUE:
        raise BadOption(f"{key}={text!r} is out of range; expected a number in (0, {MAX_CALIBRATION_VALUE:g}]")
    return value


def _parse_int(raw: Mapping[str, str], key: str, low: int, high: int) -> int | None:
    text = raw.get(key)
    if text is None:
        return None
    try:
        value = int(text, 10)
    except ValueError:
        raise BadOption(f"{key}={text!r} is not an integer; expected an integer in [{low}, {high}]") from None
    if not low <= value <= high:
        raise BadOption(f"{key}={text!r} is out of range; expected an integer in [{low}, {high}]")
    return value


def _parse_choice(raw: Mapping[str, str], key: str, choices: tuple[str, ...], default: str | None) -> str | None:
    text = raw.get(key)
    if text is None:
        return default
    value = text.lower()
    if value not in choices:
        raise BadOption(f"{key}={text!r} is not accepted; expected one of: {', '.join(choices)}")
    return value


def _parse_types(text: str | None, known_types: Iterable[str] | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise BadOption("types is empty; expected a comma-separated list such as 'scratch,dent'")
    known = sorted(known_types) if known_types is not None else None
    for name in names:
        if not TYPE_NAME_PATTERN.match(name):
            raise BadOption(f"types: {name!r} is not a damage type name (letters, digits, '_' or '-')")
        if known is not None and name not in known:
            raise BadOption(f"types: unknown damage type {name!r}; this endpoint serves: {', '.join(known)}")
    return tuple(dict.fromkeys(names))  # de-duplicated, order kept


def _parse_calibration(raw: Mapping[str, str]) -> AreaCalibration | None:
    frame_width = _parse_positive(raw, "frame_width")
    frame_height = _parse_positive(raw, "frame_height")
    pixels_per_unit = _parse_positive(raw, "pixels_per_unit")
    unit_text = raw.get("unit")
    unit = _parse_choice(raw, "unit", LENGTH_UNITS, default=DEFAULT_UNIT)
    has_frame = frame_width is not None or frame_height is not None
    if has_frame and (frame_width is None or frame_height is None):
        missing = "frame_height" if frame_height is None else "frame_width"
        raise BadOption(f"{missing} is missing: frame_width and frame_height go together")
    if has_frame and pixels_per_unit is not None:
        raise BadOption("give either frame_width+frame_height or pixels_per_unit, not both")
    if not has_frame and pixels_per_unit is None:
        if unit_text is not None:
            raise BadOption("unit needs a calibration: frame_width+frame_height or pixels_per_unit")
        return None
    if has_frame:
        return AreaCalibration.from_frame(frame_width, frame_height, unit)
    return AreaCalibration.from_pixels_per_unit(pixels_per_unit, unit)
