"""Image bytes in, RGB uint8 out (and back): what the service accepts, decoded by content, never by header.

Accepted containers: JPEG (and MPO, which phones write), PNG, WebP, BMP, TIFF and GIF (first frame). The
format is sniffed from the bytes by Pillow; the Content-Type the client sent is not trusted. Everything comes
back as a C-contiguous ``uint8`` array of shape ``[H, W, 3]`` in display orientation:

- EXIF orientation is applied (``ImageOps.exif_transpose``), so a portrait phone photo is upright.
- Transparency (RGBA, LA, PA, palette with a transparent index) is composited onto WHITE: the pixels under
  alpha 0 are whatever the encoder left there (often black), while a white backdrop is what the image looks
  like in a viewer and keeps cut-out car photos from gaining a black frame the model may call damage.
- Grey, 1-bit and palette images are expanded to three equal/looked-up channels.
- 16-bit samples are scaled to 8 bits (``round(v * 255 / 65535)``), never clipped; 32-bit integer and float
  grey images (rare TIFFs) are stretched linearly from their own min..max.
- CMYK and YCbCr are converted to RGB with Pillow's converters.

Failure modes are typed (see ``car_damage.errors``): empty, unknown, corrupt or truncated data raise
``ImageDecodeError`` (HTTP 400); images whose header declares more than ``max_pixels`` pixels raise
``PayloadTooLarge`` (HTTP 413) before a single pixel is decoded, so a 100 kB PNG that inflates to 10 GB
(a decompression bomb) costs nothing. Pillow's ``LOAD_TRUNCATED_IMAGES`` stays False and every image is
fully loaded here, so a cut-off upload is an error rather than a half-grey picture.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import struct

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps

from car_damage.errors import ImageDecodeError, PayloadTooLarge

logger = logging.getLogger(__name__)
Image.init()  # register every plugin now, not lazily on first use (thread-safety of the first request)

#: Largest image (width x height, after decoding) accepted by default: 40 MP covers every phone camera.
DEFAULT_MAX_PIXELS = 40_000_000
#: Pillow plugins tried when sniffing the bytes (JPEG also opens MPO); nothing else (EPS, PSD...) is parsed.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
#: Output encoders for ``encode_image``.
ENCODE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG"}
#: Composite colour for transparent pixels (see the module docstring).
ALPHA_BACKGROUND = (255, 255, 255)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)
# Everything a decoder may raise on hostile bytes; anything else is a bug and must surface as one.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
                  ZeroDivisionError)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes (format sniffed from content) to an upright RGB ``uint8`` array ``[H, W, 3]``.

    Raises:
        ImageDecodeError: empty, unknown, corrupt or truncated data.
        PayloadTooLarge: the image declares more than ``max_pixels`` pixels (checked from the header,
            before decoding) or Pillow's own decompression-bomb guard fires.
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageDecodeError(f"image data must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageDecodeError("empty body: no image bytes received")
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone flipped the global: truncated uploads would pass as grey
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; refusing to decode partial images")

    # No warnings.catch_warnings() here: it mutates process-global state and the service decodes on
    # several threads. Pillow's own guard (DecompressionBombError above 2 x Image.MAX_IMAGE_PIXELS) is
    # mapped to 413; ``max_pixels`` (default below Pillow's limit) is the check that normally fires.
    try:
        image = Image.open(io.BytesIO(bytes(data)), formats=ACCEPTED_FORMATS)  # reads the header only
    except _BOMB_ERRORS as exc:
        raise PayloadTooLarge(f"image too large to decode safely: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"not a supported image ({len(data)} bytes); accepted: JPEG, PNG, WebP, BMP, TIFF"
        ) from exc
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(f"corrupt image header: {exc}") from exc

    with image:
        width, height = image.size
        _check_size(width, height, max_pixels)
        try:
            image.load()  # decode every pixel now: truncation surfaces here, not later
            image = _apply_exif_orientation(image)
            rgb = _to_rgb_array(image)
        except _BOMB_ERRORS as exc:
            raise PayloadTooLarge(f"image too large to decode safely: {exc}") from exc
        except ImageDecodeError:
            raise
        except _DECODE_ERRORS as exc:
            raise ImageDecodeError(f"corrupt or truncated {image.format} image: {exc}") from exc
    return rgb


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels"
        )


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip per the EXIF Orientation tag; a malformed EXIF block is ignored like viewers do."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
        if orientation in (None, 1):
            return image  # exif_transpose would copy the pixels for nothing
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, KeyError, TypeError, struct.error) as exc:
        logger.warning("ignoring unreadable EXIF orientation: %s", exc)
        return image


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> C-contiguous uint8 [H, W, 3] (see the module docstring for the rules)."""
    mode = image.mode
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image if mode == "RGBA" else image.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] == 255:  # an alpha that hides nothing (common in PNG exports)
            return np.asarray(rgba.convert("RGB"), dtype=np.uint8)
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return np.ascontiguousarray(np.asarray(Image.alpha_composite(background, rgba).convert("RGB")))
    if mode in _SIXTEEN_BIT_MODES or mode == "I" or mode == "F":
        grey = _scale_wide_grey(np.asarray(image), mode)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    try:
        converted = image.convert("RGB")  # 1, L, P, CMYK, YCbCr, RGBX, HSV
    except ValueError as exc:
        raise ImageDecodeError(f"unsupported colour mode {mode!r}") from exc
    return np.ascontiguousarray(np.asarray(converted, dtype=np.uint8))


def _scale_wide_grey(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit -> 8-bit by the full-scale ratio; 32-bit int / float grey by their own value range."""
    values = values.astype(np.float64)
    if mode in _SIXTEEN_BIT_MODES or (mode == "I" and values.min() >= 0 and values.max() <= 65535):
        scaled = values * (255.0 / 65535.0)
    else:
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            raise ImageDecodeError(f"{mode} image holds no finite values")
        low, high = float(finite.min()), float(finite.max())
        if mode == "F" and low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0  # already a 0..1 intensity image: keep its absolute levels
        span = high - low if high > low else 1.0
        scaled = (np.nan_to_num(values, nan=low, posinf=high, neginf=low) - low) * (255.0 / span)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def encode_image(rgb: np.ndarray, fmt: str = "png", *, jpeg_quality: int = 90) -> bytes:
    """Encode an RGB (or grey) uint8 array as PNG or JPEG bytes."""
    key = fmt.lower()
    if key not in ENCODE_FORMATS:
        raise ValueError(f"unsupported output format {fmt!r}; use one of {sorted(ENCODE_FORMATS)}")
    array = np.asarray(rgb)
    if array.dtype != np.uint8:
        raise ValueError(f"encode_image needs uint8 pixels, got {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"encode_image needs [H, W] or [H, W, 3], got shape {array.shape}")
    buffer = io.BytesIO()
    options = {"quality": jpeg_quality} if ENCODE_FORMATS[key] == "JPEG" else {}
    Image.fromarray(array).save(buffer, format=ENCODE_FORMATS[key], **options)
    return buffer.getvalue()


def decode_base64_json(body: bytes | str) -> bytes:
    """``{"image": "<base64>"}`` (standard or URL-safe alphabet, optional ``data:...;base64,`` prefix) -> bytes.

    Raises ImageDecodeError for anything else: invalid JSON, a missing or non-string ``image`` field, or
    invalid base64. The decoded bytes still go through ``decode_image``.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageDecodeError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict) or "image" not in payload:
        raise ImageDecodeError('JSON body must be an object with an "image" field holding base64 bytes')
    text = payload["image"]
    if not isinstance(text, str):
        raise ImageDecodeError(f'"image" must be a base64 string, got {type(text).__name__}')
    if text.startswith("data:"):
        _, sep, text = text.partition(",")
        if not sep:
            raise ImageDecodeError('"image" data URL has no "," before its base64 payload')
    text = "".join(text.split())  # line-wrapped base64 (MIME style) is common
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)  # tolerate stripped padding
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageDecodeError(f'"image" is not valid base64: {exc}') from exc
    if not data:
        raise ImageDecodeError('"image" is empty')
    return data
