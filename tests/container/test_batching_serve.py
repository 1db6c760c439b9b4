"""Batched serving through the real stack (nginx + gunicorn + Flask): MAX_BATCH / BATCH_WAIT_MS from env."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from car_damage.answer.response import validate_response
from tests.conftest import require_tool

SIZES = [(96, 128), (128, 128), (60, 90), (128, 40), (77, 101), (100, 100)]


def _png(height: int, width: int, seed: int) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = (70 + 50 * np.sin(x / 8.0 + seed) + 30 * np.cos(y / 6.0))[..., None] + rng.normal(0, 5, (height, width, 3))
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue(), rgb


def test_batching_live_service_answers_like_the_unbatched_model(server_factory, service_model_dir,
                                                                 real_predictor) -> None:
    require_tool("nginx")
    server = server_factory(service_model_dir, "batched", MAX_BATCH="3", BATCH_WAIT_MS="150",
                            MODEL_SERVER_WORKERS="1", MODEL_SERVER_THREADS="8")
    server.wait_until(200)
    params = requests.get(server.url + "/execution-parameters", timeout=10).json()
    assert params["MicroBatching"] == {"MAX_BATCH": 3, "BATCH_WAIT_MS": 150}
    assert params["MaxConcurrentTransforms"] == 3  # one worker, one batch of three
    images = [_png(h, w, seed) for seed, (h, w) in enumerate(SIZES)]
    barrier = threading.Barrier(len(images))

    def post(body: bytes) -> dict:
        barrier.wait()
        response = requests.post(server.url + "/invocations", data=body, timeout=120,
                                 headers={"Content-Type": "image/png"})
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(len(images)) as pool:
        answers = list(pool.map(post, [body for body, _ in images]))
    for answer, (_, rgb) in zip(answers, images, strict=True):
        validate_response(answer)
        alone = real_predictor.predict(rgb)
        assert answer["damage_count"] == alone["damage_count"]
        for a, b in zip(answer["damages"], alone["damages"], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=2e-4)
            assert all(abs(a["bbox"][k] - b["bbox"][k]) <= 1 for k in b["bbox"])
        assert answer["timings_ms"]["queue"] >= 0 and answer["timings_ms"]["inference"] > 0
    # Six requests arriving together in batches of up to three: somebody waited for a batch to fill or finish.
    assert max(a["timings_ms"]["queue"] for a in answers) > 20
    assert "warmed up scratch at batch 3" in server.stderr()
