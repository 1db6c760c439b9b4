"""``container/serve`` run from a source checkout: the service ``make demo`` and ``make serve`` start locally.

The child runs in its own session with this interpreter's venv first on PATH (so gunicorn is the project's), is
probed on ``/ping`` until ready, and is stopped by SIGTERM (serve drains), then SIGKILL if it hangs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """``container/serve`` as a child process in its own session, stopped by SIGTERM (then SIGKILL) on exit."""

    def __init__(self, model_dir: Path, port: int, log_path: Path) -> None:
        self.model_dir, self.port, self.log_path = model_dir, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    @staticmethod
    def environment(model_dir: Path, port: int) -> dict[str, str]:
        """The service's settings; the venv's bin (gunicorn) and sbin (nginx) lead PATH."""
        env = dict(os.environ)
        path = [str(Path(sys.executable).parent), "/usr/sbin", "/usr/local/sbin", env.get("PATH", "")]
        env.update(MODEL_DIR=str(model_dir.resolve()), SAGEMAKER_BIND_TO_PORT=str(port), PATH=os.pathsep.join(path))
        env.setdefault("MODEL_SERVER_WORKERS", "1")
        return env

    def __enter__(self) -> ServiceProcess:
        self._log = self.log_path.open("wb")
        command = [sys.executable, str(serve_script())]  # this venv's python runs serve, so gunicorn is ours
        self.process = subprocess.Popen(command, env=self.environment(self.model_dir, self.port),
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float) -> float:
        """Seconds until ``/ping`` answered 200; raises if the service died or stayed unready."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or 503 while the model loads
            time.sleep(0.5)
        raise RuntimeError(f"/ping did not answer 200 within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        self._log.flush()
        return "".join(self.log_path.read_text(errors="replace").splitlines(keepends=True)[-lines:])

    def __exit__(self, *exc_info: object) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # serve forwards it to nginx and gunicorn and drains
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                logger.warning("the service ignored SIGTERM for 40s; killing its process group")
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGTERM)  # children serve left behind, if any
            except ProcessLookupError:
                pass
        self._log.close()


def serve_script() -> Path:
    script = REPO_ROOT / "container" / "serve"
    if not script.exists():
        raise RuntimeError(f"{script} not found: the demo runs the service from a source checkout")
    return script


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post_image(url: str, data: bytes, accept: str) -> bytes:
    """POST image bytes to ``url``/invocations; an HTTP error becomes a RuntimeError with the service's JSON."""
    request = urllib.request.Request(url + "/invocations", data=data, method="POST",
                                     headers={"Content-Type": "application/octet-stream", "Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"/invocations answered {exc.code}: {exc.read()[:500]!r}") from exc
