"""Fixtures for the service tests: the container/ modules on sys.path, a small real model, a live server.

The model is real (not a fake): ``tiny_model_dir`` from tests/conftest.py, the tiny 128 px config with seeded
random weights saved as ``mask_cnn_scratch.h5`` + sidecar, loaded by ``DamagePredictor``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINER_DIR = REPO_ROOT / "container"
SERVE = CONTAINER_DIR / "serve"
for _path in (CONTAINER_DIR, REPO_ROOT):  # predictor/wsgi as serve imports them; tests.conftest
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

#: Every wait in these tests is bounded; a tiny model loads in seconds, so this is generous.
MODEL_READY_TIMEOUT_S = 180.0


@pytest.fixture(scope="session")
def service_model_dir(tiny_model_dir: Path) -> Path:
    """The suite's seeded random-weight tiny model (tests/conftest.py): mask_cnn_scratch.h5 + sidecar."""
    return tiny_model_dir


@pytest.fixture(scope="session")
def real_predictor(service_model_dir: Path):
    from car_damage.answer.predictor import DamagePredictor

    return DamagePredictor.from_model_dir(service_model_dir, warmup=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    """A running ``container/serve``: its process, URL and log files."""

    process: subprocess.Popen
    port: int
    log_dir: Path
    ping_history: list[tuple[int, float, bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stdout(self) -> str:
        return (self.log_dir / "stdout.log").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.log_dir / "stderr.log").read_text(errors="replace")

    def ping(self, timeout: float = 2.0) -> tuple[int, float, bytes]:
        import requests

        started = time.monotonic()
        try:
            response = requests.get(self.url + "/ping", timeout=timeout)
            result = (response.status_code, time.monotonic() - started, response.content)
        except requests.ConnectionError:
            result = (0, time.monotonic() - started, b"")
        self.ping_history.append(result)
        return result

    def wait_until(self, status: int, timeout_s: float = MODEL_READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited ({self.process.returncode}):\n{self.stderr()[-4000:]}")
            if self.ping()[0] == status:
                return
            time.sleep(0.2)
        raise AssertionError(f"/ping never answered {status} in {timeout_s} s:\n{self.stderr()[-4000:]}")

    def stop(self) -> int | None:
        """SIGTERM, bounded wait, then SIGKILL serve and every process under it (nginx and gunicorn run in
        sessions of their own, so killing serve's process group alone would not reach them)."""
        import psutil

        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                pass
        for process in descendants:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # serve's own group (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None


def start_server(model_dir: Path, log_dir: Path, **env_overrides: str) -> LiveServer:
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(port), "MODEL_SERVER_THREADS": "4",
        "TF_CPP_MIN_LOG_LEVEL": "2", "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.update(env_overrides)
    # Append mode: nginx reopens /dev/stdout itself, and only O_APPEND keeps both writers from overwriting.
    with open(log_dir / "stdout.log", "ab") as out, open(log_dir / "stderr.log", "ab") as err:
        process = subprocess.Popen([sys.executable, str(SERVE)], env=env, stdout=out, stderr=err,
                                   start_new_session=True)
    return LiveServer(process=process, port=port, log_dir=log_dir)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    """Start servers inside a test; every one is stopped (and its group killed) afterwards."""
    started: list[LiveServer] = []

    def factory(model_dir: Path, name: str = "server", **env: str) -> LiveServer:
        server = start_server(model_dir, tmp_path / name, **env)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def live_server(service_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One ``container/serve`` per test module, ready (ping 200); its ping history shows the way there."""
    server = start_server(service_model_dir, tmp_path_factory.mktemp("live_server"))
    try:
        server.wait_until(200)
        yield server
    finally:
        server.stop()
