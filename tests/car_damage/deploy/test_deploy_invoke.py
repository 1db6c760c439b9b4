"""invoke: sync and async against the moto server's runtime, the wire request a local container receives
(--container-url, through boto3), and the real container/serve answering a real photo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from deploy_testlib import free_port

from tests.conftest import require_tool

REPO_ROOT = Path(__file__).resolve().parents[3]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def photo(tmp_path: Path, name: str = "car.jpg", data: bytes = b"\xff\xd8\xff\xe0 not really a jpeg") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_sync_invoke_through_the_runtime_api(aws, tmp_path):
    answer = {"damage_count": 1, "damages": [{"type": "scratch", "score": 0.97}]}
    requests.post(f"{aws.url}/moto-api/static/sagemaker/endpoint-results", timeout=10, json={
        "results": [{"Body": json.dumps(answer), "ContentType": "application/json"}]}).raise_for_status()
    # moto's server decodes runtime request bodies as UTF-8, so this "photo" stays ASCII; real bytes go to
    # the local container below.
    car = photo(tmp_path, data=b"jpeg bytes")
    result = aws.run("invoke", "--endpoint", "car-damage", str(car), "--out-dir", str(tmp_path / "out"))
    assert result.code == 0, result.err
    assert result.json == {str(car): answer}
    assert json.loads((tmp_path / "out" / "car.json").read_text()) == answer


def test_async_invoke_uploads_and_waits_for_the_result(aws, tmp_path):
    aws.bucket("async-in")
    answer = {"damage_count": 0, "damages": []}
    requests.post(f"{aws.url}/moto-api/static/sagemaker/async-endpoint-results", timeout=10, json={
        "results": [{"data": json.dumps(answer), "is_failure": False}]}).raise_for_status()
    car = photo(tmp_path, "big.jpg")
    result = aws.run("invoke", "--endpoint", "car-damage", "--async", "--async-input", "s3://async-in/requests/",
                     "--wait", "--poll-interval", "0.05", str(car))
    assert result.code == 0, result.err
    entry = result.json["s3://async-in/requests/big.jpg"]
    assert entry["OutputLocation"].startswith("s3://")
    assert entry["result"] == answer
    uploaded = aws.s3.get_object(Bucket="async-in", Key="requests/big.jpg")["Body"].read()
    assert uploaded == car.read_bytes()


def test_invoke_input_errors(aws, tmp_path):
    missing = aws.run("invoke", "--endpoint", "car-damage", str(tmp_path / "nope.jpg"))
    assert missing.code == 1 and "no such file" in missing.err
    huge = photo(tmp_path, "huge.jpg", b"\0" * (6 * 1024 * 1024 + 1))
    too_big = aws.run("invoke", "--endpoint", "car-damage", str(huge))
    assert too_big.code == 1 and "use --async" in too_big.err
    no_prefix = aws.run("invoke", "--endpoint", "car-damage", "--async", str(photo(tmp_path)))
    assert no_prefix.code == 1 and "--async-input" in no_prefix.err


class Recorder(BaseHTTPRequestHandler):
    """A stand-in container that records what arrives and answers with the next canned response."""

    seen: list[dict] = []
    answers: list[tuple[int, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Recorder.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        status, content_type, payload = Recorder.answers.pop(0)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recorder():
    Recorder.seen, Recorder.answers = [], []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_container_url_sends_the_runtime_request_to_invocations(aws, recorder, tmp_path):
    answer = {"damage_count": 2}
    Recorder.answers = [(200, "application/json", json.dumps(answer).encode())]
    car = photo(tmp_path, "car.png", PNG_MAGIC + b"rest")
    result = aws.run("invoke", "--endpoint", "local", "--container-url", recorder, str(car),
                     "--custom-attributes", "min_score=0.8;types=scratch", endpoint=False)
    assert result.code == 0, result.err
    assert result.json == {str(car): answer}
    [request] = Recorder.seen
    assert request["path"] == "/invocations"
    assert request["body"] == car.read_bytes()
    assert request["headers"]["Content-Type"] == "image/png"
    assert request["headers"]["Accept"] == "application/json"
    assert request["headers"]["X-Amzn-SageMaker-Custom-Attributes"] == "min_score=0.8;types=scratch"
    assert "Authorization" not in request["headers"]  # unsigned: no credentials needed locally


def test_container_url_saves_annotated_images_and_reports_errors(aws, recorder, tmp_path):
    Recorder.answers = [
        (200, "image/png", PNG_MAGIC + b"annotated"),
        (415, "application/json", b'{"error": "unsupported_media_type", "detail": "text/plain"}'),
    ]
    good, bad = photo(tmp_path, "good.jpg"), photo(tmp_path, "notes.txt", b"hello")
    out = tmp_path / "out"
    result = aws.run("invoke", "--endpoint", "local", "--container-url", recorder, "--accept", "image/png",
                     "--out-dir", str(out), "--content-type", "image/jpeg", str(good), str(bad), endpoint=False)
    assert result.code == 3  # one photo failed; both are reported
    summary = result.json
    assert summary[str(good)] == {"saved": str(out / "good.annotated.png"), "content_type": "image/png",
                                  "bytes": len(PNG_MAGIC) + 9}
    assert (out / "good.annotated.png").read_bytes() == PNG_MAGIC + b"annotated"
    assert summary[str(bad)]["error"] == "ModelError"
    assert summary[str(bad)]["status"] == 415
    assert summary[str(bad)]["body"] == {"error": "unsupported_media_type", "detail": "text/plain"}
    assert [r["headers"]["Accept"] for r in Recorder.seen] == ["image/png", "image/png"]


# --- the real service -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def live_container(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """container/serve (nginx + gunicorn + the real predictor) on a free port with a tiny random model."""
    serve = REPO_ROOT / "container" / "serve"
    require_tool("nginx")
    model_dir = Path(tiny_model_dir)
    port = free_port()
    logs = tmp_path_factory.mktemp("serve_logs")
    env = {**os.environ, "MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(port),
           "MODEL_SERVER_WORKERS": "1", "MODEL_SERVER_THREADS": "2", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    with open(logs / "out.log", "wb") as out, open(logs / "err.log", "wb") as err:
        process = subprocess.Popen([sys.executable, str(serve)], env=env, stdout=out, stderr=err,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"serve exited {process.returncode}: {(logs / 'err.log').read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"/ping never 200: {(logs / 'err.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_invoke_against_the_real_service(aws, live_container, test_images_dir, tmp_path):
    photos = sorted(test_images_dir.glob("*.jp*g"))[:1]
    assert photos, f"no JPEG in {test_images_dir}"
    out = tmp_path / "out"
    result = aws.run("invoke", "--endpoint", "local", "--container-url", live_container, "--out-dir", str(out),
                     *map(str, photos), endpoint=False)
    assert result.code == 0, result.err
    response = result.json[str(photos[0])]
    from car_damage.answer.response import validate_response

    validate_response(response)
    assert response["damage_count"] == len(response["damages"])

    annotated = aws.run("invoke", "--endpoint", "local", "--container-url", live_container, "--accept",
                        "image/png", "--out-dir", str(out), str(photos[0]), endpoint=False)
    assert annotated.code == 0, annotated.err
    saved = out / f"{photos[0].stem}.annotated.png"
    assert saved.read_bytes().startswith(PNG_MAGIC)

    garbage = photo(tmp_path, "garbage.jpg", b"definitely not an image")
    failed = aws.run("invoke", "--endpoint", "local", "--container-url", live_container, str(garbage),
                     endpoint=False)
    assert failed.code == 3
    assert failed.json[str(garbage)]["status"] == 400
    assert failed.json[str(garbage)]["body"]["error"] == "invalid_image"
