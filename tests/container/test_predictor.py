"""The Flask app through its test client, with a small REAL model (tiny config, seeded random weights).

Covers every accepted content type, every option (header and query), Accept negotiation, each error status
and the response schema. Tests of readiness use real loader callables (blocking, failing) around the same
real predictor.
"""

from __future__ import annotations

import base64
import io
import json
import threading

import numpy as np
import predictor as service
import pytest
from PIL import Image

from car_damage.errors import ModelLoadError

WIDTH, HEIGHT = 160, 120
#: The old system's frame: 14 in wide, 18 in high (area = px * 18 / h * 14 / w).
FRAME_WIDTH_IN, FRAME_HEIGHT_IN = 14.0, 18.0


def photo(mode: str = "RGB") -> Image.Image:
    """A 16 px checkerboard: the seeded tiny model finds several 'damages' of varied scores in it."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    grey = (((y // 16 + x // 16) % 2) * 200 + 30).astype(np.uint8)
    image = Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))
    return image.convert(mode) if mode != "RGB" else image


def encoded(fmt: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    photo(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def validate(body: dict) -> None:
    from car_damage.answer.response import validate_response

    validate_response(body)


@pytest.fixture(scope="module")
def app(real_predictor):
    service.configure_logging()
    application = service.create_app(real_predictor)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, data: bytes, content_type: str | None = "image/png", *, headers=None, query: str = ""):
    headers = dict(headers or {})
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post("/invocations" + query, data=data, headers=headers)


# --- content types -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("content_type", "fmt", "mode"), [
    ("image/jpeg", "JPEG", "RGB"),
    ("image/png", "PNG", "RGBA"),
    ("image/webp", "WEBP", "RGB"),
    ("image/bmp", "BMP", "RGB"),
    ("image/tiff", "TIFF", "CMYK"),
    ("application/x-image", "PNG", "L"),
    ("application/octet-stream", "JPEG", "L"),
    ("image/png", "JPEG", "RGB"),  # a JPEG under a PNG header (as users send): decoded by content
    ("image/jpeg; charset=binary", "PNG", "P"),
    (None, "PNG", "RGB"),  # no Content-Type at all
    ("application/x-www-form-urlencoded", "JPEG", "RGB"),  # `curl --data-binary @car.jpg` without -H
])
def test_every_raw_image_content_type_gives_a_valid_response(client, content_type, fmt, mode) -> None:
    response = post(client, encoded(fmt, mode), content_type)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    validate(body)
    assert body["image"] == {"width": WIDTH, "height": HEIGHT}
    assert body["damage_count"] == len(body["damages"])
    assert response.headers[service.HEADER_DAMAGE_COUNT] == str(body["damage_count"])
    assert set(body["timings_ms"]) == {"decode", "queue", "inference", "postprocess", "total"}
    assert body["timings_ms"]["total"] >= body["timings_ms"]["decode"] + body["timings_ms"]["inference"] - 1e-6


def test_json_base64_body_matches_the_raw_body(client) -> None:
    raw = encoded("PNG")
    from_raw = post(client, raw).get_json()
    for text in (base64.b64encode(raw).decode(), "data:image/png;base64," + base64.b64encode(raw).decode()):
        response = post(client, json.dumps({"image": text}).encode(), "application/json")
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        validate(body)
        assert body["damages"] == from_raw["damages"]  # same pixels, same model, same answer


def test_text_plain_is_415_and_says_what_is_accepted(client) -> None:
    response = post(client, encoded("PNG"), "text/plain")
    assert response.status_code == 415
    body = response.get_json()
    assert body["error"] == "unsupported_media_type"
    assert "image/jpeg" in body["detail"] and "application/json" in body["detail"]


# --- options ---------------------------------------------------------------------------------------------------

def test_min_score_and_max_instances_from_header_and_query(client) -> None:
    image = encoded("PNG")
    everything = post(client, image, query="?min_score=0").get_json()
    assert everything["damage_count"] > 0, "the seeded tiny model should detect something at min_score=0"
    scores = [d["score"] for d in everything["damages"]]
    assert scores == sorted(scores, reverse=True)
    # Midway between two clearly different (rounded) scores, so rounding cannot move a damage across it.
    gaps = [k for k in range(len(scores) - 1) if scores[k] - scores[k + 1] > 1e-3]
    assert gaps, f"need two distinct scores, got {scores}"
    cut = gaps[len(gaps) // 2]
    threshold = round((scores[cut] + scores[cut + 1]) / 2, 6)
    expected = [d for d in everything["damages"] if d["score"] >= threshold]

    by_header = post(client, image, headers={service.HEADER_CUSTOM_ATTRIBUTES: f"min_score={threshold}"})
    by_query = post(client, image, query=f"?min_score={threshold}")
    for response in (by_header, by_query):
        body = response.get_json()
        validate(body)
        assert [d["score"] for d in body["damages"]] == [d["score"] for d in expected]
        assert body["options"]["min_score"] == pytest.approx(threshold)

    capped = post(client, image, headers={service.HEADER_CUSTOM_ATTRIBUTES: "min_score=0;max_instances=2"})
    assert [d["score"] for d in capped.get_json()["damages"]] == scores[:2]
    assert capped.headers[service.HEADER_CUSTOM_ATTRIBUTES] == "min_score=0;max_instances=2"  # echoed back


def test_header_wins_over_query_string(client) -> None:
    body = post(client, encoded("PNG"), headers={service.HEADER_CUSTOM_ATTRIBUTES: "min_score=1.0"},
                query="?min_score=0").get_json()
    assert body["options"]["min_score"] == 1.0
    assert all(d["score"] >= 1.0 for d in body["damages"])


def test_types_polygon_tolerance_and_rle_masks(client) -> None:
    image = encoded("PNG")
    body = post(client, image, query="?min_score=0&types=scratch&masks=rle&polygon_tolerance=0").get_json()
    validate(body)
    assert body["options"]["types"] == ["scratch"] and body["options"]["masks"] == "rle"
    assert all(d["type"] == "scratch" and "mask" in d for d in body["damages"])
    unknown = post(client, image, query="?types=dent")
    assert unknown.status_code == 400 and "dent" in unknown.get_json()["detail"]
    coarse = post(client, image, query="?min_score=0&polygon_tolerance=5").get_json()
    fine_points = sum(len(ring) for d in body["damages"] for poly in d["polygons"] for ring in poly)
    coarse_points = sum(len(ring) for d in coarse["damages"] for poly in d["polygons"] for ring in poly)
    assert coarse_points <= fine_points


def test_frame_calibration_reproduces_the_old_formula(client) -> None:
    attributes = f"min_score=0;frame_width={FRAME_WIDTH_IN};frame_height={FRAME_HEIGHT_IN};unit=in"
    body = post(client, encoded("PNG"), headers={service.HEADER_CUSTOM_ATTRIBUTES: attributes}).get_json()
    validate(body)
    pixel_area = (FRAME_HEIGHT_IN / HEIGHT) * (FRAME_WIDTH_IN / WIDTH)
    assert body["calibration"]["pixel_area"]["value"] == pytest.approx(pixel_area, rel=1e-6)
    assert body["totals"]["area"]["value"] == pytest.approx(body["totals"]["area_px"] * pixel_area, rel=1e-4)
    for damage in body["damages"]:
        assert damage["area"]["unit"] == "in^2"
        assert damage["area"]["value"] == pytest.approx(damage["area_px"] * pixel_area, rel=1e-4, abs=1e-6)
    per_unit = post(client, encoded("PNG"), query="?min_score=0&pixels_per_unit=10&unit=cm").get_json()
    assert per_unit["totals"]["area"] == {"value": pytest.approx(per_unit["totals"]["area_px"] / 100.0),
                                          "unit": "cm^2"}


@pytest.mark.parametrize("query", ["?min_score=2", "?min_score=abc", "?colour=red", "?masks=png",
                                   "?frame_width=14", "?max_instances=0", "?min_score=0.5&min_score=0.6"])
def test_bad_options_are_400(client, query) -> None:
    response = post(client, encoded("PNG"), query=query)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_option"


def test_bad_option_in_the_header_is_400(client) -> None:
    response = post(client, encoded("PNG"), headers={service.HEADER_CUSTOM_ATTRIBUTES: "min_score"})
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_option"


# --- Accept -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("accept", "expected"), [
    (None, "application/json"), ("", "application/json"), ("*/*", "application/json"),
    ("application/json", "application/json"), ("image/png", "image/png"), ("image/jpeg", "image/jpeg"),
    ("image/*", "image/png"), ("text/html;q=0.9, image/jpeg;q=0.8", "image/jpeg"),
])
def test_accept_negotiation(client, accept, expected) -> None:
    headers = {} if accept is None else {"Accept": accept}
    response = post(client, encoded("JPEG"), "image/jpeg", headers=headers, query="?min_score=0")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == expected
    if expected.startswith("image/"):
        rendered = Image.open(io.BytesIO(response.get_data()))
        assert rendered.format == {"image/png": "PNG", "image/jpeg": "JPEG"}[expected]
        assert rendered.size == (WIDTH, HEIGHT)
        assert int(response.headers[service.HEADER_DAMAGE_COUNT]) >= 0
    else:
        validate(response.get_json())


def test_unsupported_accept_is_406(client) -> None:
    response = post(client, encoded("PNG"), headers={"Accept": "text/csv"})
    assert response.status_code == 406
    assert response.get_json()["error"] == "not_acceptable"


# --- bad input ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "content_type"), [
    (b"", "image/jpeg"),
    (b"this is not an image at all", "application/octet-stream"),
    (encoded("JPEG")[:300], "image/jpeg"),  # truncated upload
    (b"{not json", "application/json"),
    (json.dumps({"picture": "abc"}).encode(), "application/json"),
    (json.dumps({"image": "!!!not base64!!!"}).encode(), "application/json"),
    (json.dumps({"image": base64.b64encode(b"garbage").decode()}).encode(), "application/json"),
    (b"%PDF-1.4 not an image", "image/png"),
    (b"[" * 200_000 + b"]" * 200_000, "application/json"),  # nesting bomb: RecursionError inside json
])
def test_undecodable_bodies_are_400(client, data, content_type) -> None:
    response = post(client, data, content_type)
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error", "detail"} and body["detail"]


def test_body_over_the_byte_limit_is_413(real_predictor) -> None:
    app = service.create_app(real_predictor, settings=service.ServiceSettings(max_body_bytes=1000))
    response = app.test_client().post("/invocations", data=encoded("BMP"), headers={"Content-Type": "image/bmp"})
    assert response.status_code == 413
    assert response.get_json()["error"] == "payload_too_large" and "1000" in response.get_json()["detail"]


def test_image_over_the_pixel_limit_is_413(real_predictor) -> None:
    app = service.create_app(real_predictor, settings=service.ServiceSettings(max_image_pixels=WIDTH * HEIGHT - 1))
    response = app.test_client().post("/invocations", data=encoded("PNG"), headers={"Content-Type": "image/png"})
    assert response.status_code == 413 and response.get_json()["error"] == "payload_too_large"
    ok = service.create_app(real_predictor, settings=service.ServiceSettings(max_image_pixels=WIDTH * HEIGHT))
    assert ok.test_client().post("/invocations", data=encoded("PNG")).status_code == 200


def test_decompression_bomb_png_is_413_without_decoding(client) -> None:
    buffer = io.BytesIO()
    Image.new("L", (20_000, 20_000)).save(buffer, format="PNG")  # ~400 MP of zeros, a few hundred kB
    response = post(client, buffer.getvalue(), "image/png")
    assert response.status_code == 413


def test_unexpected_failure_is_500_without_traceback(real_predictor, caplog) -> None:
    class Broken:
        damage_types = real_predictor.damage_types

        def predict(self, rgb, options=None, decode_ms=None):
            raise RuntimeError("secret internals")

        def annotate(self, rgb, response):
            raise AssertionError("not reached")

    service.configure_logging()
    app = service.create_app(Broken())
    response = app.test_client().post("/invocations", data=encoded("PNG"),
                                      headers={"Content-Type": "image/png", "X-Amzn-RequestId": "req-500"})
    assert response.status_code == 500
    body = response.get_json()
    assert body["error"] == "internal_error" and "req-500" in body["detail"]
    assert "secret" not in body["detail"] and "Traceback" not in response.get_data(as_text=True)
    assert "RuntimeError: secret internals" in caplog.text and "Traceback" in caplog.text


# --- routes, readiness, logs -------------------------------------------------------------------------------------

def test_ping_is_200_with_an_empty_body_when_ready(client) -> None:
    response = client.get("/ping")
    assert response.status_code == 200 and response.get_data() == b""


def test_ping_is_503_while_loading_then_200(real_predictor) -> None:
    release = threading.Event()

    def slow_loader():
        if not release.wait(timeout=30):
            raise ModelLoadError("test loader was never released")
        return real_predictor

    app = service.create_app(loader=slow_loader)
    client = app.test_client()
    response = client.get("/ping")
    assert response.status_code == 503 and response.get_json()["error"] == "model_not_ready"
    invocation = client.post("/invocations", data=encoded("PNG"), headers={"Content-Type": "image/png"})
    assert invocation.status_code == 503 and invocation.get_json()["error"] == "model_not_ready"
    release.set()
    app.extensions["model_slot"].thread.join(timeout=30)
    assert client.get("/ping").status_code == 200
    assert client.post("/invocations", data=encoded("PNG")).status_code == 200


def test_failed_load_keeps_ping_503_with_the_reason(tmp_path, caplog) -> None:
    from car_damage.answer.predictor import DamagePredictor

    service.configure_logging()
    (tmp_path / "mask_cnn_scratch.h5").write_bytes(b"not an HDF5 file")
    app = service.create_app(loader=lambda: DamagePredictor.from_model_dir(tmp_path, warmup=True))
    app.extensions["model_slot"].thread.join(timeout=60)
    client = app.test_client()
    ping = client.get("/ping")
    assert ping.status_code == 503
    detail = ping.get_json()["detail"]
    assert ping.get_json()["error"] == "model_load_failed" and "mask_cnn_scratch.h5" in detail
    invocation = client.post("/invocations", data=encoded("PNG"))
    assert invocation.status_code == 503 and invocation.get_json()["detail"] == detail
    assert detail in caplog.text


def test_unexpected_loader_exception_is_reported_not_raised() -> None:
    def exploding_loader():
        raise OSError("disk on fire")

    app = service.create_app(loader=exploding_loader)
    app.extensions["model_slot"].thread.join(timeout=10)
    ping = app.test_client().get("/ping")
    assert ping.status_code == 503 and "disk on fire" in ping.get_json()["detail"]


def test_unknown_route_and_wrong_method_are_json(client) -> None:
    missing = client.get("/no-such-route")
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    wrong = client.get("/invocations")
    assert wrong.status_code == 405 and wrong.get_json()["error"] == "method_not_allowed"


def test_execution_parameters_defaults_and_env() -> None:
    defaults = service.ServiceSettings.from_env({})
    assert defaults.execution_parameters() == {"MaxConcurrentTransforms": 1, "BatchStrategy": "SINGLE_RECORD",
                                               "MaxPayloadInMB": 6,
                                               "MicroBatching": {"MAX_BATCH": 1, "BATCH_WAIT_MS": 0}}
    batch = service.ServiceSettings.from_env({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "20", "MODEL_SERVER_WORKERS": "8"})
    assert batch.max_body_bytes == 20 * service.MIB
    # 8 workers x 20 MB would break SageMaker's MaxConcurrentTransforms x MaxPayloadInMB <= 100.
    assert batch.execution_parameters() == {"MaxConcurrentTransforms": 5, "BatchStrategy": "SINGLE_RECORD",
                                            "MaxPayloadInMB": 20,
                                            "MicroBatching": {"MAX_BATCH": 1, "BATCH_WAIT_MS": 0}}
    with pytest.raises(ValueError, match="MAX_BODY_MB"):
        service.ServiceSettings.from_env({"MAX_BODY_MB": "lots"})
    app = service.create_app(loader=lambda: None, settings=batch)
    assert app.test_client().get("/execution-parameters").get_json()["MaxPayloadInMB"] == 20


def test_batching_settings_from_env_off_on_cpu_on_with_a_gpu() -> None:
    cpu = service.ServiceSettings.from_env({"SERVE_GPU_DEVICES": ""})
    assert (cpu.max_batch, cpu.batch_wait_ms) == (1, 0)
    gpu = service.ServiceSettings.from_env({"SERVE_GPU_DEVICES": "0", "MODEL_SERVER_WORKERS": "1"})
    assert (gpu.max_batch, gpu.batch_wait_ms) == (8, 5)
    # Batch Transform may send a full batch per worker at once.
    assert gpu.execution_parameters()["MaxConcurrentTransforms"] == 8
    assert gpu.execution_parameters()["MicroBatching"] == {"MAX_BATCH": 8, "BATCH_WAIT_MS": 5}
    forced = service.ServiceSettings.from_env({service.ENV_MAX_BATCH: "4", service.ENV_BATCH_WAIT_MS: "2"})
    assert (forced.max_batch, forced.batch_wait_ms) == (4, 2)
    off_on_gpu = service.ServiceSettings.from_env({"SERVE_GPU_DEVICES": "0,1", service.ENV_MAX_BATCH: "1"})
    assert off_on_gpu.max_batch == 1
    for bad in ({service.ENV_MAX_BATCH: "0"}, {service.ENV_MAX_BATCH: "many"}, {service.ENV_BATCH_WAIT_MS: "-1"}):
        with pytest.raises(ValueError, match="MAX_BATCH|BATCH_WAIT_MS"):
            service.ServiceSettings.from_env(bad)
    app = service.create_app(loader=lambda: None, settings=forced)
    assert app.test_client().get("/execution-parameters").get_json()["MicroBatching"] == {
        "MAX_BATCH": 4, "BATCH_WAIT_MS": 2}


def test_one_json_log_line_per_request(client, capsys) -> None:
    capsys.readouterr()
    post(client, encoded("PNG"), headers={"X-Amzn-RequestId": "abc-123"}, query="?min_score=0")
    post(client, b"junk", "application/octet-stream")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 2
    ok, bad = lines
    assert ok["request_id"] == "abc-123" and ok["status"] == 200 and ok["path"] == "/invocations"
    assert ok["bytes_in"] == len(encoded("PNG")) and ok["bytes_out"] > 0
    assert isinstance(ok["damage_count"], int) and ok["timings_ms"]["inference"] >= 0
    assert ok["image"] == [WIDTH, HEIGHT] and ok["duration_ms"] > 0
    assert bad["status"] == 400 and bad["error"] == "invalid_image" and len(bad["request_id"]) == 32


def test_create_app_needs_exactly_one_source() -> None:
    with pytest.raises(ValueError):
        service.create_app()
    with pytest.raises(ValueError):
        service.create_app(object(), loader=lambda: None)


def test_wsgi_builds_the_app_and_pins_each_worker_to_its_own_gpu(tmp_path, monkeypatch) -> None:
    import fcntl

    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "no-models-here"))
    import wsgi  # builds its app at import, as in a gunicorn worker; the load fails fast (no folder)

    wsgi.app.extensions["model_slot"].thread.join(timeout=60)
    ping = wsgi.app.test_client().get("/ping")
    assert ping.status_code == 503 and "no-models-here" in ping.get_json()["detail"]

    assert wsgi.claim_gpu({"SERVE_GPU_DEVICES": "0", "SERVE_RUN_DIR": str(tmp_path)}) is None  # one GPU: no pin
    with open(tmp_path / "gpu-0.lock", "w") as other_worker:
        fcntl.flock(other_worker, fcntl.LOCK_EX | fcntl.LOCK_NB)  # GPU "3" is taken by another worker
        env = {"SERVE_GPU_DEVICES": "3,5", "SERVE_RUN_DIR": str(tmp_path)}
        assert wsgi.claim_gpu(env) == "5" and env["CUDA_VISIBLE_DEVICES"] == "5"
        crowded = {"SERVE_GPU_DEVICES": "3,5", "SERVE_RUN_DIR": str(tmp_path)}
        assert wsgi.claim_gpu(crowded) is None and "CUDA_VISIBLE_DEVICES" not in crowded
    wsgi._gpu_lock_file.close()
