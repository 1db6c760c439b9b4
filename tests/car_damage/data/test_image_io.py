"""image_io: decoding by content, colour modes, EXIF, truncation, bombs, base64 JSON."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from car_damage.data.images import decode_base64_json, decode_image, encode_image
from car_damage.errors import ImageDecodeError, PayloadTooLarge


def _gradient(height: int = 24, width: int = 32) -> np.ndarray:
    """A smooth RGB image (lossy codecs stay close to it)."""
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[:, :, 0] = np.linspace(0, 250, width, dtype=np.uint8)[None, :]
    rgb[:, :, 1] = np.linspace(0, 200, height, dtype=np.uint8)[:, None]
    rgb[:, :, 2] = 90
    return rgb


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "fmt, max_error", [("PNG", 0), ("BMP", 0), ("TIFF", 0), ("JPEG", 4), ("WEBP", 6)]
)
def test_every_container_decodes_to_rgb_uint8(fmt, max_error):
    rgb = _gradient()
    out = decode_image(_encode(Image.fromarray(rgb), fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {})))
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    assert np.abs(out.astype(int) - rgb).mean() <= max_error


def test_decodes_by_content_not_by_name():
    # Bytes are all that reach decode_image; a JPEG is a JPEG whatever the client called it.
    jpeg = _encode(Image.fromarray(_gradient()), "JPEG")
    assert decode_image(jpeg).shape == (24, 32, 3)


def test_grey_palette_and_one_bit():
    grey = np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) % 256
    out = decode_image(_encode(Image.fromarray(grey.astype(np.uint8), "L"), "PNG"))
    assert (out == grey[:, :, None]).all()

    palette_image = Image.new("P", (4, 2))
    palette_image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette_image.putdata([0, 1, 0, 1, 1, 0, 1, 0])
    out = decode_image(_encode(palette_image, "PNG"))
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [0, 0, 255]

    bits = Image.fromarray(np.array([[True, False], [False, True]]))
    out = decode_image(_encode(bits, "PNG"))
    assert out[:, :, 0].tolist() == [[255, 0], [0, 255]]


def test_alpha_is_composited_on_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = [10, 20, 30, 255]   # opaque: kept
    rgba[0, 1] = [0, 0, 0, 0]        # transparent black: becomes white
    rgba[1, 0] = [200, 0, 0, 128]    # half: 200*128/255 + 255*127/255
    out = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert abs(int(out[1, 0, 0]) - round(200 * 128 / 255 + 255 * 127 / 255)) <= 1
    assert abs(int(out[1, 0, 1]) - round(255 * 127 / 255)) <= 1

    grey_alpha = Image.fromarray(np.array([[[50, 255], [0, 0]]], dtype=np.uint8), "LA")
    out = decode_image(_encode(grey_alpha, "PNG"))
    assert out[0, 0].tolist() == [50, 50, 50] and out[0, 1].tolist() == [255, 255, 255]


def test_fully_opaque_alpha_is_dropped():
    rgb = _gradient()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, dtype=np.uint8)])
    out = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (out == rgb).all() and out.flags["C_CONTIGUOUS"]


def test_sixteen_bit_grey_is_scaled_not_clipped():
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    out = decode_image(_encode(Image.fromarray(values), "PNG"))
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]  # v * 255 / 65535, rounded
    out_tiff = decode_image(_encode(Image.fromarray(values), "TIFF"))
    assert out_tiff[0, :, 0].tolist() == [0, 1, 128, 255]


def test_cmyk_jpeg_and_tiff_become_rgb():
    rgb = _gradient()
    cmyk = Image.fromarray(rgb).convert("CMYK")
    for data in (_encode(cmyk, "JPEG", quality=95), _encode(cmyk, "TIFF")):
        out = decode_image(data)
        assert out.shape == (24, 32, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - rgb).mean() < 4


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize(
    "orientation, shape, marker_corner",
    [(1, (20, 30), (0, 0)), (3, (20, 30), (1, 1)), (6, (30, 20), (0, 1)), (8, (30, 20), (1, 0))],
)
def test_exif_orientation_is_applied(fmt, orientation, shape, marker_corner):
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[:6, :6] = [255, 0, 0]  # red block at the top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = orientation  # 3: rotate 180, 6: rotate 90 CW to display, 8: rotate 90 CCW
    out = decode_image(_encode(Image.fromarray(rgb), fmt, exif=exif.tobytes()))
    assert out.shape[:2] == shape
    row = 2 if marker_corner[0] == 0 else shape[0] - 3
    col = 2 if marker_corner[1] == 0 else shape[1] - 3
    assert out[row, col, 0] > 200 and out[row, col, 1] < 60  # the red block is where a viewer shows it


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n garbage", b"\xff\xd8\xff"])
def test_empty_and_garbage_are_decode_errors(data):
    with pytest.raises(ImageDecodeError):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "TIFF"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_images_are_rejected_not_grey(fmt, keep):
    data = _encode(Image.fromarray(_gradient(64, 64)), fmt)
    with pytest.raises(ImageDecodeError, match="truncated|corrupt"):
        decode_image(data[: int(len(data) * keep)])


def test_refuses_to_run_with_truncated_loading_switched_on(monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(_encode(Image.fromarray(_gradient()), "PNG"))


def test_truncated_png_pixel_data_is_rejected():
    data = _encode(Image.fromarray(_gradient(64, 64)), "PNG", compress_level=0)
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) // 2])


def test_pixel_limit_is_checked_from_the_header():
    # A 4000 x 4000 black PNG is ~50 kB on the wire; the limit fires before 48 MB of pixels are decoded.
    bomb = _encode(Image.new("L", (4000, 4000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge, match="4000x4000"):
        decode_image(bomb, max_pixels=1_000_000)
    assert decode_image(_encode(Image.new("L", (100, 100)), "PNG"), max_pixels=10_000).shape == (100, 100, 3)


def test_pillow_bomb_guard_maps_to_payload_too_large(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow errors above 2 x this
    with pytest.raises(PayloadTooLarge):
        decode_image(_encode(Image.new("L", (100, 100)), "PNG"), max_pixels=10**9)


def test_encode_image_round_trips():
    rgb = _gradient()
    assert (decode_image(encode_image(rgb, "png")) == rgb).all()
    assert encode_image(rgb, "jpeg")[:2] == b"\xff\xd8"
    with pytest.raises(ValueError):
        encode_image(rgb, "gif")
    with pytest.raises(ValueError):
        encode_image(rgb.astype(np.float32))


def test_base64_json_body():
    png = encode_image(_gradient(), "png")
    encoded = base64.b64encode(png).decode()
    assert decode_base64_json(json.dumps({"image": encoded})) == png
    assert decode_base64_json(json.dumps({"image": "data:image/png;base64," + encoded}).encode()) == png
    wrapped = "\n".join(encoded[i: i + 76] for i in range(0, len(encoded), 76))
    assert decode_base64_json(json.dumps({"image": wrapped})) == png
    urlsafe = base64.urlsafe_b64encode(png).decode().rstrip("=")
    assert decode_base64_json(json.dumps({"image": urlsafe})) == png


@pytest.mark.parametrize(
    "body",
    [b"", b"{not json", b"[1, 2]", b'{"img": "AAAA"}', b'{"image": 5}', b'{"image": "@@@@"}', b'{"image": ""}'],
)
def test_bad_base64_json_bodies(body):
    with pytest.raises(ImageDecodeError):
        decode_base64_json(body)


def test_real_test_photos_decode(test_images_dir):
    photos = sorted(p for p in test_images_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    assert len(photos) >= 10
    for photo in photos:
        rgb = decode_image(photo.read_bytes())
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8, photo.name
        with Image.open(photo) as reference:
            assert rgb.shape[:2] == (reference.height, reference.width), photo.name
