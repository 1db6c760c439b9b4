"""The Flask app behind nginx: SageMaker's inference contract for the car-damage model.

Routes (see ``docs/service.md``):
- ``GET /ping``: 200 with an empty body once the model is loaded and warmed up; 503 with a JSON reason before
  that, or for good when loading failed. It never waits on the model or on inference.
- ``POST /invocations``: one image (raw bytes of any supported format, decoded by content, or JSON
  ``{"image": "<base64>"}``) -> damage JSON, or the annotated image when ``Accept`` asks for PNG/JPEG.
  Options come from ``X-Amzn-SageMaker-Custom-Attributes`` (``key=value;key=value``) and the query string
  (the header wins when both name the same key: it is the channel SageMaker guarantees).
- ``GET /execution-parameters``: what Batch Transform should send us.
- ``GET /``, ``GET /static/<name>``, ``GET /models``: the web page for people (``page.py``).
Every error is ``{"error": ..., "detail": ...}`` with the status of the ``car_damage.errors.ServiceError`` it
came from; anything unexpected is a 500 that is logged with its traceback and never shows one to the caller.

``create_app`` takes the predictor (anything with ``predict(rgb, options)`` and ``annotate(rgb, response)``,
normally ``car_damage.answer.predictor.DamagePredictor``) or a loader callable run on a background thread, so the HTTP
layer is testable on its own and ``wsgi.py`` can answer ``/ping`` while TensorFlow loads.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from flask import Flask, Response, g, request
from page import page_blueprint
from werkzeug.exceptions import HTTPException

from car_damage.answer.batching import GPU_DEFAULT_MAX_BATCH, GPU_DEFAULT_WAIT_MS
from car_damage.answer.options import InferenceOptions, options_from_request
from car_damage.data.images import DEFAULT_MAX_PIXELS, decode_base64_json, decode_image, encode_image
from car_damage.errors import (
    ImageDecodeError,
    ModelLoadError,
    ModelNotReady,
    NotAcceptable,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
)

logger = logging.getLogger("container.predictor")
#: One JSON line per request goes to this logger; ``configure_logging`` sends it to stdout.
request_logger = logging.getLogger("container.requests")

# --- Content types -----------------------------------------------------------------------------------------
CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_PNG = "image/png"
CONTENT_TYPE_JPEG = "image/jpeg"
#: Bodies holding the image bytes themselves; the format is sniffed from the bytes, never taken from here.
RAW_IMAGE_CONTENT_TYPES = frozenset({
    CONTENT_TYPE_JPEG, CONTENT_TYPE_PNG, "image/webp", "image/bmp", "image/tiff",
    "application/x-image", "application/octet-stream",
    # What `curl --data-binary @car.jpg` sends when no -H 'Content-Type: ...' is given.
    "application/x-www-form-urlencoded",
})
#: Response types in order of preference (``*/*`` and a missing Accept get the first).
RESPONSE_CONTENT_TYPES = (CONTENT_TYPE_JSON, CONTENT_TYPE_PNG, CONTENT_TYPE_JPEG)
_IMAGE_RESPONSE_FORMATS = {CONTENT_TYPE_PNG: "png", CONTENT_TYPE_JPEG: "jpeg"}

# --- Headers ------------------------------------------------------------------------------------------------
HEADER_CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
HEADER_REQUEST_ID = "X-Amzn-RequestId"
HEADER_DAMAGE_COUNT = "X-Damage-Count"

# --- Environment variables (read by ServiceSettings.from_env; `serve` exports the resolved values) ------------
ENV_MODEL_DIR = "MODEL_DIR"
ENV_MAX_BODY_MB = "MAX_BODY_MB"
ENV_MAX_IMAGE_PIXELS = "MAX_IMAGE_PIXELS"
ENV_WORKERS = "MODEL_SERVER_WORKERS"
ENV_MAX_CONCURRENT_TRANSFORMS = "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"
ENV_MAX_PAYLOAD_IN_MB = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
#: Set by `serve` for the workers: their private run dir, and the GPU ids to spread the workers over.
ENV_RUN_DIR = "SERVE_RUN_DIR"
ENV_GPU_DEVICES = "SERVE_GPU_DEVICES"
#: Micro-batching in each worker (car_damage.answer.batching): images per detect() call (1 = off) and how long
#: the first image of a batch waits for more. Default: off on CPU, 8 images / 5 ms with a GPU.
ENV_MAX_BATCH = "MAX_BATCH"
ENV_BATCH_WAIT_MS = "BATCH_WAIT_MS"

DEFAULT_MODEL_DIR = "/opt/ml/model"
#: SageMaker's real-time request cap (InvokeEndpoint Body max = 6,291,456 bytes).
DEFAULT_MAX_BODY_MB = 6
#: Batch Transform: MaxConcurrentTransforms x MaxPayloadInMB must stay <= this.
BATCH_CONCURRENCY_PAYLOAD_PRODUCT_MAX = 100
BATCH_STRATEGY = "SINGLE_RECORD"  # one image per request; images cannot be split into records
MIB = 1024 * 1024


class Predictor(Protocol):
    def predict(self, rgb: np.ndarray, options: InferenceOptions | None = None,
                decode_ms: float | None = None) -> dict: ...

    def annotate(self, rgb: np.ndarray, response: dict) -> np.ndarray: ...


def _env_int(environ: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"environment variable {name}={value} must be >= {minimum}")
    return value


@dataclass(frozen=True)
class ServiceSettings:
    """Limits of the HTTP layer; ``from_env`` is the one place that reads them from the environment."""

    max_body_bytes: int = DEFAULT_MAX_BODY_MB * MIB
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_concurrent_transforms: int = 1
    max_batch: int = 1  # 1: batching off
    batch_wait_ms: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        environ = os.environ if environ is None else environ
        payload_default = _env_int(environ, ENV_MAX_PAYLOAD_IN_MB, DEFAULT_MAX_BODY_MB)
        body_mb = _env_int(environ, ENV_MAX_BODY_MB, payload_default)
        workers = _env_int(environ, ENV_WORKERS, 1)
        on_gpu = bool(environ.get(ENV_GPU_DEVICES, "").strip())  # `serve` lists the GPUs it found
        max_batch = _env_int(environ, ENV_MAX_BATCH, GPU_DEFAULT_MAX_BATCH if on_gpu else 1)
        return cls(
            max_body_bytes=body_mb * MIB,
            max_image_pixels=_env_int(environ, ENV_MAX_IMAGE_PIXELS, DEFAULT_MAX_PIXELS),
            # One request per worker keeps each GPU busy, one batch per worker when batching; a job's own value
            # (when SageMaker sets it) wins.
            max_concurrent_transforms=_env_int(environ, ENV_MAX_CONCURRENT_TRANSFORMS, workers * max_batch),
            max_batch=max_batch,
            batch_wait_ms=_env_int(environ, ENV_BATCH_WAIT_MS, GPU_DEFAULT_WAIT_MS if on_gpu else 0, minimum=0),
        )

    def execution_parameters(self) -> dict[str, Any]:
        """The Batch Transform answer, kept inside MaxConcurrentTransforms x MaxPayloadInMB <= 100."""
        payload_mb = max(1, min(BATCH_CONCURRENCY_PAYLOAD_PRODUCT_MAX, self.max_body_bytes // MIB))
        concurrency = max(1, min(self.max_concurrent_transforms,
                                 BATCH_CONCURRENCY_PAYLOAD_PRODUCT_MAX // payload_mb))
        return {"MaxConcurrentTransforms": concurrency, "BatchStrategy": BATCH_STRATEGY,
                "MaxPayloadInMB": payload_mb,
                # Not read by Batch Transform: how this endpoint batches (for operators and benchmarks).
                "MicroBatching": {ENV_MAX_BATCH: self.max_batch, ENV_BATCH_WAIT_MS: self.batch_wait_ms}}


class ModelSlot:
    """The predictor, or why there is none yet; filled once, by ``load`` on a background thread."""

    def __init__(self, predictor: Predictor | None = None) -> None:
        self._predictor = predictor
        self._error: ServiceError | None = None
        self._started = time.monotonic()
        self.thread: threading.Thread | None = None

    def start_loading(self, loader: Callable[[], Predictor]) -> threading.Thread:
        self.thread = threading.Thread(target=self.load, args=(loader,), name="model-loader", daemon=True)
        self.thread.start()
        return self.thread

    def load(self, loader: Callable[[], Predictor]) -> None:
        started = time.monotonic()
        try:
            predictor = loader()
        except ServiceError as exc:
            self._error = exc
            logger.error("model load failed, /ping stays 503: %s", exc.detail)
        except Exception as exc:  # noqa: BLE001 - any loader failure must keep the worker alive and say why
            logger.exception("model load failed with an unexpected error, /ping stays 503")
            self._error = ModelLoadError(f"unexpected {type(exc).__name__} while loading the model: {exc}")
        else:
            self._predictor = predictor
            logger.info("model loaded and warmed up in %.1f s; /ping now answers 200",
                        time.monotonic() - started)

    @property
    def ready(self) -> bool:
        return self._predictor is not None

    def get(self) -> Predictor:
        """The predictor, or raise the load error / ModelNotReady (both 503)."""
        if self._predictor is not None:
            return self._predictor
        if self._error is not None:
            raise self._error
        raise ModelNotReady(f"the model is still loading ({time.monotonic() - self._started:.0f} s so far)")


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at emit time (so test capture and redirection both work)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def configure_logging(level: int = logging.INFO) -> None:
    """Request lines (JSON) to stdout; everything else (with tracebacks) to stderr. Idempotent."""
    if not any(isinstance(h, _StdoutHandler) for h in request_logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        request_logger.addHandler(handler)
    request_logger.setLevel(logging.INFO)
    request_logger.propagate = False
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)


def _json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status=status, mimetype=CONTENT_TYPE_JSON)


def _error_response(error: str, detail: str, status: int) -> Response:
    g.error = error
    return _json_response({"error": error, "detail": detail}, status)


def _negotiate_response_type() -> str:
    """The response content type from Accept: JSON by default, PNG/JPEG on request, else 406."""
    if not request.headers.get("Accept", "").strip():
        return CONTENT_TYPE_JSON
    best = request.accept_mimetypes.best_match(RESPONSE_CONTENT_TYPES)
    if best is None:
        raise NotAcceptable(f"cannot answer with Accept: {request.headers['Accept']!r}; "
                            f"use one of {', '.join(RESPONSE_CONTENT_TYPES)}")
    return best


def _request_options(model: Predictor) -> InferenceOptions:
    """Options from the custom-attributes header and the query string (the header wins on the same key)."""
    return options_from_request(request.headers.get(HEADER_CUSTOM_ATTRIBUTES),
                                request.args.to_dict(flat=False),
                                known_types=getattr(model, "damage_types", None))


def _check_declared_length(max_bytes: int) -> None:
    """413 from Content-Length alone, before a byte of the body is read."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {max_bytes} bytes "
                              f"({ENV_MAX_BODY_MB}={max_bytes // MIB})")


def _read_body(max_bytes: int) -> bytes:
    """The request body, refusing more than ``max_bytes`` of what actually arrives (chunked, lying length)."""
    data = request.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes "
                              f"({ENV_MAX_BODY_MB}={max_bytes // MIB})")
    return data


def _image_bytes(body: bytes, mimetype: str) -> bytes:
    if mimetype == CONTENT_TYPE_JSON:
        try:
            return decode_base64_json(body)
        except RecursionError:  # json raises this (not ValueError) for [[[[...]]]] bombs
            raise ImageDecodeError("JSON body nests too deeply; send {\"image\": \"<base64>\"}") from None
    if not body:
        raise ImageDecodeError("empty body: no image bytes received")
    return body


def create_app(predictor: Predictor | None = None, *, loader: Callable[[], Predictor] | None = None,
               settings: ServiceSettings | None = None) -> Flask:
    """The service app. Give ``predictor`` (ready at once) or ``loader`` (run on a background thread)."""
    if (predictor is None) == (loader is None):
        raise ValueError("create_app needs exactly one of predictor= or loader=")
    settings = settings or ServiceSettings()
    slot = ModelSlot(predictor)
    app = Flask(__name__, static_folder=None)  # page_blueprint serves the page's files, with its headers
    app.extensions["model_slot"] = slot
    app.extensions["service_settings"] = settings

    @app.before_request
    def _start_request() -> None:
        g.started = time.perf_counter()
        g.request_id = request.headers.get(HEADER_REQUEST_ID) or uuid.uuid4().hex
        g.error = None
        g.response_info = {}

    @app.after_request
    def _finish_request(response: Response) -> Response:
        response.headers[HEADER_REQUEST_ID] = g.request_id
        if request.path == "/invocations":
            # SageMaker returns this header to the caller; echo what was asked (empty if nothing).
            response.headers[HEADER_CUSTOM_ATTRIBUTES] = request.headers.get(HEADER_CUSTOM_ATTRIBUTES, "")
        if request.path != "/ping" or response.status_code != 200:  # health checks would drown the log
            line = {
                "event": "request", "request_id": g.request_id, "method": request.method,
                "path": request.path, "status": response.status_code,
                "content_type": request.mimetype or None, "accept": request.headers.get("Accept"),
                "bytes_in": request.content_length or 0,
                "bytes_out": response.calculate_content_length() or 0,
                "duration_ms": round((time.perf_counter() - g.started) * 1000.0, 2),
                "error": g.error, **g.response_info,
            }
            request_logger.info(json.dumps(line, separators=(",", ":")))
        return response

    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        return _error_response(exc.error, exc.detail, exc.status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        name = (exc.name or "error").lower().replace(" ", "_")
        return _error_response(name, exc.description or name, exc.code or 500)

    @app.errorhandler(Exception)
    def _internal_error(exc: Exception) -> Response:
        logger.exception("request %s failed", g.get("request_id", "?"))
        return _error_response("internal_error",
                               f"internal error; see the service log for request id {g.get('request_id')}", 500)

    @app.get("/ping")
    def ping() -> Response:
        if slot.ready:
            return Response(b"", status=200, mimetype=CONTENT_TYPE_JSON)
        try:
            slot.get()
        except ServiceError as exc:
            return _error_response(exc.error, exc.detail, exc.status)
        raise RuntimeError("model slot is neither ready nor failed")  # unreachable by construction

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        return _json_response(settings.execution_parameters())

    @app.post("/invocations")
    def invocations() -> Response:
        mimetype = request.mimetype  # lower-cased, parameters (charset=...) removed
        if mimetype and mimetype != CONTENT_TYPE_JSON and mimetype not in RAW_IMAGE_CONTENT_TYPES:
            raise UnsupportedMediaType(
                f"Content-Type {mimetype!r} is not supported; send image bytes (image/jpeg, image/png, "
                f"image/webp, image/bmp, image/tiff, application/x-image, application/octet-stream) or "
                f'{CONTENT_TYPE_JSON} {{"image": "<base64>"}}')
        response_type = _negotiate_response_type()
        _check_declared_length(settings.max_body_bytes)
        model = slot.get()
        options = _request_options(model)
        body = _read_body(settings.max_body_bytes)
        decode_started = time.perf_counter()
        rgb = decode_image(_image_bytes(body, mimetype), max_pixels=settings.max_image_pixels)
        decode_ms = (time.perf_counter() - decode_started) * 1000.0
        # The predictor never sees the bytes: decoding is timed here and reported through it.
        result = model.predict(rgb, options, decode_ms=decode_ms)
        g.response_info = {"damage_count": result.get("damage_count"), "timings_ms": result.get("timings_ms"),
                           "image": [int(rgb.shape[1]), int(rgb.shape[0])]}
        if response_type == CONTENT_TYPE_JSON:
            response = _json_response(result)
        else:
            rendered = model.annotate(rgb, result)
            response = Response(encode_image(rendered, _IMAGE_RESPONSE_FORMATS[response_type]),
                                mimetype=response_type)
        response.headers[HEADER_DAMAGE_COUNT] = str(result.get("damage_count", ""))
        return response

    app.register_blueprint(page_blueprint)
    if loader is not None:
        slot.start_loading(loader)
    return app
