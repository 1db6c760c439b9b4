"""Helpers for the tests and the benchmark that drive the real image with a real Docker engine.

Every container runs with ``--network host`` (dockerd may run with no bridge and no NAT) and is reached on
127.0.0.1 only; each gets a free port through ``SAGEMAKER_BIND_TO_PORT``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.container.conftest import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
MAKE_IMAGE = REPO_ROOT / "scripts" / "make_image.sh"
#: The image `make image` builds; CAR_DAMAGE_IMAGE names an already built one to test as it is.
DEFAULT_IMAGE = "car-damage:cpu"
#: The Debian base make_image.sh makes when no --base-image is given.
LOCAL_BASE = "car-damage-base:bookworm"
ENV_IMAGE = "CAR_DAMAGE_IMAGE"
#: A fresh CI machine builds the base and the image: generous, bounded.
BUILD_TIMEOUT_S = 1800
READY_TIMEOUT_S = 120.0


class DockerUnavailable(RuntimeError):
    """No docker client, or no engine answering it."""


def docker_engine() -> str:
    """The docker client's path, once an engine answers it."""
    client = shutil.which("docker")
    if client is None:
        raise DockerUnavailable("docker is not installed")
    info = subprocess.run([client, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=30)
    if info.returncode != 0:
        raise DockerUnavailable(f"no Docker engine answers: {info.stderr.strip()[:300]}")
    return client


def build_image(log_path: Path, *args: str) -> str:
    """``scripts/make_image.sh`` (what `make image` runs); its progress lines are echoed to the terminal."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(["bash", str(MAKE_IMAGE), *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT)
        deadline = time.monotonic() + BUILD_TIMEOUT_S
        last = ""
        for line in process.stdout:
            log.write(line)
            last = line.strip() or last
            if line.startswith(("make_image:", "Step ")):
                print(line.rstrip()[:160], file=sys.__stderr__, flush=True)
            if time.monotonic() > deadline:
                process.kill()
                break
        code = process.wait()
    if code != 0:
        raise AssertionError(f"make_image.sh {' '.join(args)} failed ({code}):\n{log_path.read_text()[-4000:]}")
    return last


@dataclass
class Container:
    """One ``docker run -d`` container serving on 127.0.0.1:port."""

    name: str
    port: int
    started_at: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        result = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True, timeout=30)
        return result.stdout + result.stderr

    def state(self) -> tuple[bool, int]:
        """(running, exit code)."""
        result = subprocess.run(["docker", "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}",
                                 self.name], capture_output=True, text=True, timeout=30, check=True)
        running, code = result.stdout.split()
        return running == "true", int(code)

    def ping(self, timeout: float = 2.0) -> int:
        import requests

        try:
            return requests.get(self.url + "/ping", timeout=timeout).status_code
        except (requests.ConnectionError, requests.Timeout):
            return 0  # not listening yet, or too busy to answer in time: not ready

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> list[int]:
        """Poll /ping until 200; returns every status seen (0 = nothing listening yet)."""
        statuses: list[int] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            statuses.append(self.ping())
            if statuses[-1] == 200:
                return statuses
            if not self.state()[0]:
                raise AssertionError(f"container {self.name} exited:\n{self.logs()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"/ping never answered 200 in {timeout_s} s:\n{self.logs()[-4000:]}")

    def exec(self, *argv: str) -> str:
        return subprocess.run(["docker", "exec", self.name, *argv], capture_output=True, text=True, timeout=60,
                              check=True).stdout

    def stop(self, timeout_s: int = 30) -> float:
        """``docker stop -t`` (SIGTERM, SIGKILL after timeout_s); returns the seconds it took."""
        started = time.monotonic()
        subprocess.run(["docker", "stop", "-t", str(timeout_s), self.name], capture_output=True, timeout=90,
                       check=True)
        return time.monotonic() - started

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, timeout=60)


def run_container(image: str, *command: str, volumes: dict[Path, str] | None = None,
                  env: dict[str, str] | None = None, user: str | None = None) -> Container:
    """``docker run -d --network host`` with the port in SAGEMAKER_BIND_TO_PORT; volumes map host -> spec."""
    port = free_port()
    name = f"car-damage-test-{uuid.uuid4().hex[:10]}"
    argv = ["docker", "run", "-d", "--network", "host", "--name", name,
            "-e", f"SAGEMAKER_BIND_TO_PORT={port}", "-e", "MODEL_SERVER_THREADS=4"]
    for host_path, spec in (volumes or {}).items():
        argv += ["-v", f"{host_path}:{spec}"]
    for key, value in (env or {}).items():
        argv += ["-e", f"{key}={value}"]
    if user:
        argv += ["--user", user]
    started = time.monotonic()
    subprocess.run([*argv, image, *command], capture_output=True, text=True, timeout=60, check=True)
    return Container(name=name, port=port, started_at=started)


def readable_by_all(folder: Path) -> Path:
    """A bind-mounted folder is seen with its host modes: let any uid (--user 1000:1000) read it."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def image_under_test(log_dir: Path) -> str:
    """CAR_DAMAGE_IMAGE when set (used as it is), else car-damage:cpu built now by make_image.sh (the layer
    cache makes an unchanged tree a few seconds' work)."""
    named = os.environ.get(ENV_IMAGE)
    if named:
        subprocess.run(["docker", "image", "inspect", named], capture_output=True, timeout=30, check=True)
        return named
    return build_image(log_dir / "make_image.log", "--variant", "cpu", "--tag", DEFAULT_IMAGE)
