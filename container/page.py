"""The web page at ``GET /``: drop a photo, see every damage outlined, counted and measured.

Served by the same Flask app as ``/invocations`` (``create_app`` registers ``page_blueprint``), behind the
same nginx. SageMaker never calls these routes; they are for people looking at a running container.

- ``GET /``: ``static/index.html``.
- ``GET /static/<name>``: the page's script, style sheet and icon; only the files in ``static/`` (no
  sub-folders, no other paths), so nothing else on disk can be reached through this route.
- ``GET /models``: what the page needs to build its controls: the models served and their versions, the
  damage types with their outline colours (the same as the annotated PNG's), the body and pixel limits (for the
  413 message) and the option ranges (from ``car_damage.answer.options``). 503 (the usual JSON) while loading.

Every page response carries a strict Content-Security-Policy: the page runs only its own script and style
sheet (no inline script, no inline handlers, no inline styles), talks only to this origin and shows the photo
from a ``blob:`` URL.
"""

from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, Response, current_app
from werkzeug.exceptions import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX_FILE = "index.html"
#: The only file types the page is made of; anything else in static/ is not served.
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files: revalidate every time, so a new image's page is never mixed with an old cached script.
    "Cache-Control": "no-cache",
}

page_blueprint = Blueprint("page", __name__)


def _static_response(name: str) -> Response:
    suffix = Path(name).suffix
    path = STATIC_DIR / name
    if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES or not path.is_file():
        raise NotFound(f"no page file {name!r}")
    return Response(path.read_bytes(), mimetype=None, content_type=STATIC_TYPES[suffix], headers=PAGE_HEADERS)


@page_blueprint.get("/")
def index() -> Response:
    return _static_response(INDEX_FILE)


@page_blueprint.get("/static/<name>")
def static_file(name: str) -> Response:
    return _static_response(name)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


@page_blueprint.get("/models")
def models() -> Response:
    # Imported here: render pulls in scikit-image, which the /ping path must not wait for at import time.
    from car_damage.answer import options
    from car_damage.answer.render import type_colour

    model = current_app.extensions["model_slot"].get()  # ModelNotReady / the load error: 503 JSON
    settings = current_app.extensions["service_settings"]
    describe = getattr(model, "describe", None)
    served = describe() if callable(describe) else []
    types = list(getattr(model, "damage_types", [m["type"] for m in served]))
    body = {
        "models": served,
        "damage_types": types,
        "colours": {damage_type: _hex(type_colour(damage_type)) for damage_type in types},
        "limits": {"max_body_bytes": settings.max_body_bytes, "max_image_pixels": settings.max_image_pixels},
        "option_ranges": {
            "min_score": list(options.MIN_SCORE_RANGE),
            "polygon_tolerance": list(options.POLYGON_TOLERANCE_RANGE),
            "default_polygon_tolerance": options.DEFAULT_POLYGON_TOLERANCE,
            "units": list(options.LENGTH_UNITS),
            "default_unit": options.DEFAULT_UNIT,
        },
    }
    return Response(json.dumps(body, separators=(",", ":")), mimetype="application/json")
