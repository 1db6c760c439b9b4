"""Errors that carry their HTTP status, so the service maps them to a JSON body without guessing.

The domain raises these (decoding, options, model loading); ``container/predictor.py`` turns any
``ServiceError`` into ``{"error": <error>, "detail": <detail>}`` with ``status``.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base: an error with an HTTP status, a short machine-readable ``error`` and a human ``detail``."""

    status = 500
    error = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def to_json(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}


class BadRequest(ServiceError, ValueError):
    status = 400
    error = "bad_request"


class ImageDecodeError(BadRequest):
    """Empty, truncated or undecodable image bytes, or a base64/JSON body that does not hold an image."""

    error = "invalid_image"


class BadOption(BadRequest):
    """An option (custom attribute or query parameter) with an unknown name or an invalid value."""

    error = "invalid_option"


class PayloadTooLarge(ServiceError):
    """Too many bytes, or too many pixels once decoded (decompression bombs)."""

    status = 413
    error = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status = 415
    error = "unsupported_media_type"


class NotAcceptable(ServiceError):
    status = 406
    error = "not_acceptable"


class ModelNotReady(ServiceError):
    status = 503
    error = "model_not_ready"


class ModelLoadError(ServiceError):
    """A model file that is missing, corrupt or contradicts its sidecar; the detail says exactly which."""

    status = 503
    error = "model_load_failed"
