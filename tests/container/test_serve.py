"""Integration: the real ``container/serve`` (nginx from the distribution, gunicorn from the venv) on a free
localhost port, serving a small real model from a temp model dir. Every wait is bounded; every process
started here is stopped (its whole process group killed) at the end.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from PIL import Image, ImageOps

from car_damage.answer.response import validate_response
from tests.conftest import require_tool

#: SageMaker's per-ping timeout.
PING_LIMIT_S = 2.0
HTTP_TIMEOUT_S = 60



@pytest.fixture(autouse=True)
def _nginx_is_installed() -> None:
    require_tool("nginx")


def worker_pids(server: Any) -> list[int]:
    """gunicorn workers: the children of the gunicorn master, itself a child of serve."""
    serve = psutil.Process(server.process.pid)
    masters = [p for p in serve.children() if "gunicorn" in " ".join(p.cmdline())]
    return [w.pid for m in masters for w in m.children()]


def child_pid(server: Any, name: str) -> int:
    serve = psutil.Process(server.process.pid)
    return next(p.pid for p in serve.children() if name in " ".join(p.cmdline()))


def invoke(server: Any, data: bytes, content_type: str = "image/jpeg", **headers: str) -> requests.Response:
    return requests.post(server.url + "/invocations", data=data, timeout=HTTP_TIMEOUT_S,
                         headers={"Content-Type": content_type, **headers})


def test_ping_is_503_until_the_model_is_warm_then_200_and_always_fast(live_server: Any) -> None:
    statuses = [status for status, _, _ in live_server.ping_history]
    assert statuses[-1] == 200
    assert 503 in statuses, f"never saw 503 while loading: {statuses}"
    loading = [body for status, _, body in live_server.ping_history if status == 503 and body]
    assert any(json.loads(body)["error"] in ("model_not_ready", "model_server_unavailable") for body in loading)
    assert all(elapsed < PING_LIMIT_S for _, elapsed, _ in live_server.ping_history)
    status, elapsed, body = live_server.ping()
    assert (status, body) == (200, b"") and elapsed < PING_LIMIT_S


def test_every_test_photo_gets_a_valid_answer(live_server, test_images_dir: Path) -> None:
    photos = sorted(p for p in test_images_dir.iterdir() if p.is_file())
    assert len(photos) >= 10
    for path in photos:
        data = path.read_bytes()
        # Content-Type from the file name, which is wrong for some (JPEG bytes named .png): decoded by content.
        content_type = "image/png" if path.suffix == ".png" else "image/jpeg"
        response = invoke(live_server, data, content_type, **{"X-Amzn-RequestId": f"photo-{path.stem}"})
        assert response.status_code == 200, (path.name, response.text)
        body = response.json()
        validate_response(body)
        width, height = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size
        assert body["image"] == {"width": width, "height": height}, path.name
        assert response.headers["X-Amzn-RequestId"] == f"photo-{path.stem}"
    log_lines = [json.loads(line) for line in live_server.stdout().splitlines() if line.startswith("{")]
    app_lines = {line["request_id"]: line for line in log_lines if line.get("event") == "request"}
    nginx_lines = {line["request_id"]: line for line in log_lines if line.get("source") == "nginx"}
    for path in photos:
        assert app_lines[f"photo-{path.stem}"]["status"] == 200
        assert isinstance(app_lines[f"photo-{path.stem}"]["damage_count"], int)
        assert nginx_lines[f"photo-{path.stem}"]["status"] == 200


def test_annotated_png_through_nginx(live_server, test_images_dir: Path) -> None:
    data = (test_images_dir / "two_scratch.png").read_bytes()
    response = invoke(live_server, data, "image/png", Accept="image/png")
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == Image.open(io.BytesIO(data)).size


def test_oversize_body_is_413_json(live_server) -> None:
    response = invoke(live_server, os.urandom(7 * 1024 * 1024))  # default limit: 6 MiB
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "payload_too_large"


def test_garbage_and_truncated_jpeg_are_400(live_server, test_images_dir: Path) -> None:
    garbage = invoke(live_server, os.urandom(5000), "application/octet-stream")
    assert garbage.status_code == 400 and garbage.json()["error"] == "invalid_image"
    truncated = invoke(live_server, (test_images_dir / "a.jpg").read_bytes()[:4000])
    assert truncated.status_code == 400 and truncated.json()["error"] == "invalid_image"
    assert invoke(live_server, b"hello", "text/plain").status_code == 415


def test_other_routes_are_json_404_and_batch_parameters_answer(live_server) -> None:
    missing = requests.get(live_server.url + "/no-such-route", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    params = requests.get(live_server.url + "/execution-parameters", timeout=10).json()
    assert params == {"MaxConcurrentTransforms": 1, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 6,
                      "MicroBatching": {"MAX_BATCH": 1, "BATCH_WAIT_MS": 0}}


def test_concurrent_clients_all_succeed(live_server, test_images_dir: Path) -> None:
    payloads = [(test_images_dir / name).read_bytes() for name in ("a.jpg", "two_scratch.png", "sh1-scratch.png")]

    def client(index: int) -> list[int]:
        return [invoke(live_server, payloads[(index + i) % len(payloads)]).status_code for i in range(3)]

    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(client, range(5)))
    assert results == [[200, 200, 200]] * 5
    assert live_server.ping()[0] == 200


def test_killed_worker_is_respawned_and_the_service_recovers(live_server,
                                                              test_images_dir: Path) -> None:
    before = worker_pids(live_server)
    assert len(before) == 1
    # A hung worker first: nginx still answers /ping inside SageMaker's 2 s, with 503.
    os.kill(before[0], signal.SIGSTOP)
    try:
        status, elapsed, body = live_server.ping(timeout=5)
    finally:
        os.kill(before[0], signal.SIGKILL)  # works on a stopped process too
    assert status == 503 and elapsed < PING_LIMIT_S, (status, elapsed)
    assert json.loads(body)["error"] == "model_server_unavailable"
    live_server.ping_history.pop()  # measured above; the history check below is about the recovery
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        now = worker_pids(live_server)
        if now and now != before and live_server.ping()[0] == 200:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"no healthy respawned worker:\n{live_server.stderr()[-3000:]}")
    assert live_server.process.poll() is None, "serve must survive a worker crash (gunicorn respawns it)"
    assert all(elapsed < PING_LIMIT_S for _, elapsed, _ in live_server.ping_history)
    assert invoke(live_server, (test_images_dir / "a.jpg").read_bytes()).status_code == 200


def test_sigterm_lets_the_in_flight_request_finish_then_exits_0(live_server,
                                                                test_images_dir: Path) -> None:
    """Runs last on the shared server: a slow upload is in flight when SIGTERM arrives."""
    body = (test_images_dir / "a.jpg").read_bytes()
    sock = socket.create_connection(("127.0.0.1", live_server.port), timeout=HTTP_TIMEOUT_S)
    try:
        head = (f"POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(0.5)
        live_server.process.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        assert live_server.process.poll() is None, "serve quit before the in-flight request finished"
        sock.sendall(body[len(body) // 2:])
        response = http.client.HTTPResponse(sock)
        response.begin()
        payload = response.read()
    finally:
        sock.close()
    assert response.status == 200, payload[:500]
    validate_response(json.loads(payload))
    assert live_server.process.wait(timeout=30) == 0
    assert "received SIGTERM: draining" in live_server.stderr()


def test_missing_or_corrupt_model_keeps_ping_503_and_logs_why(server_factory, tmp_path: Path) -> None:
    corrupt_dir = tmp_path / "corrupt"
    corrupt_dir.mkdir()
    (corrupt_dir / "mask_cnn_scratch.h5").write_bytes(b"\x89HDF\r\n\x1a\n but not really")
    servers = {
        "missing": (server_factory(tmp_path / "does-not-exist", name="missing"), "does-not-exist"),
        "corrupt": (server_factory(corrupt_dir, name="corrupt"), "mask_cnn_scratch.h5"),
    }
    for name, (server, clue) in servers.items():
        deadline = time.monotonic() + 120
        while "model load failed" not in server.stderr() and time.monotonic() < deadline:
            assert server.process.poll() is None, server.stderr()[-3000:]
            time.sleep(0.3)
        assert "model load failed" in server.stderr(), f"{name}: {server.stderr()[-3000:]}"
        status, elapsed, body = server.ping()
        assert status == 503 and elapsed < PING_LIMIT_S
        error = json.loads(body)
        assert error["error"] == "model_load_failed" and clue in error["detail"], error
        assert error["detail"] in server.stderr()
        invocation = requests.post(server.url + "/invocations", data=b"x", timeout=10)
        assert invocation.status_code == 503 and invocation.json()["detail"] == error["detail"]

    # A dead child takes the service down with a non-zero exit (SageMaker then replaces the container).
    server = servers["missing"][0]
    os.kill(child_pid(server, "nginx"), signal.SIGKILL)
    assert server.process.wait(timeout=40) == 1
    assert "nginx exited unexpectedly" in server.stderr()


# --- serve's own logic, without starting the service ------------------------------------------------------------

def serve_module():
    """container/serve as a module (it has no .py suffix); main() is not run."""
    from importlib.machinery import SourceFileLoader
    from importlib.util import module_from_spec, spec_from_loader

    path = Path(__file__).resolve().parents[2] / "container" / "serve"
    loader = SourceFileLoader("container_serve", str(path))
    module = module_from_spec(spec_from_loader("container_serve", loader))
    loader.exec_module(module)
    return module


def test_rendered_nginx_conf_passes_nginx_own_check(tmp_path: Path) -> None:
    serve = serve_module()
    conf = serve.render_nginx_conf(serve.nginx_values(tmp_path, port=8080, host="127.0.0.1", body_mb=6,
                                                      timeout_s=60))
    assert "{{" not in conf and "client_max_body_size 6m;" in conf and "proxy_read_timeout 65s;" in conf
    assert "listen 127.0.0.1:8080;" in conf
    (tmp_path / "nginx.conf").write_text(conf)
    result = subprocess.run([serve.find_nginx(), "-t", "-e", "stderr", "-p", str(tmp_path), "-c",
                             str(tmp_path / "nginx.conf")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr
    with pytest.raises(SystemExit, match="LISTEN"):
        serve.render_nginx_conf({"RUN_DIR": "/tmp"})


def test_gpu_devices_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    serve = serve_module()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert serve.gpu_devices() == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert serve.gpu_devices() == []


@pytest.mark.parametrize(("name", "value"), [("MODEL_SERVER_GRACEFUL_TIMEOUT", "30"),
                                             ("SAGEMAKER_BIND_TO_PORT", "http"), ("MODEL_SERVER_WORKERS", "0"),
                                             ("HOST", "my-laptop"), ("MODEL_SERVER_MAX_REQUESTS", "-1")])
def test_bad_settings_stop_serve_before_it_starts_anything(name: str, value: str, tmp_path: Path) -> None:
    env = dict(os.environ, **{name: value}, MODEL_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[2] / "container" / "serve")],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and name in result.stderr, result.stderr
