"""Load and fault scenarios against the live service (``container/serve``: real nginx + gunicorn on 127.0.0.1).

Each scenario is a function returning a dataclass of figures; ``tests/container/test_faults.py`` runs short
versions of them in the default test run, and ``benchmarks/bench_faults.py`` the long version, printing them:

- N clients x M requests, twice: non-200 count, p50/p95, worker RSS before / after / after the second round;
- SIGKILL one of two workers while clients send: requests failed, time until the replacement accepts;
- SIGTERM to serve's PID and to its process group with uploads in flight: answered / sent, exit time;
- corrupt, truncated, empty and missing model folders: /ping and /invocations, the log line, no crash loop;
- one client trickling its body while others send; a burst of many clients at once.

Every loop is bounded (a request count or a deadline).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import psutil
import requests
from PIL import Image

REQUEST_TIMEOUT_S = 120.0
#: The issue's targets.
TARGET_RSS_GROWTH = 0.10
TARGET_RECOVERY_S = 30.0
TARGET_EXIT_S = 30.0
#: What the gunicorn hook logs when a worker starts taking requests (container/gunicorn_hooks.py).
ACCEPTING_MARK = "accepting requests"


class Service(Protocol):
    """What the scenarios need of a running service (tests/container/conftest.py ``LiveServer``)."""

    process: Any
    port: int

    @property
    def url(self) -> str: ...

    def stderr(self) -> str: ...


def sample_jpeg(width: int = 400, height: int = 300, seed: int = 0) -> bytes:
    """A seeded noise-and-gradient JPEG: decodes everywhere, exercises the whole model."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1)
    pixels = np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


def worker_pids(service: Service) -> list[int]:
    """The gunicorn workers: children of the gunicorn master, itself a child of serve."""
    try:
        serve = psutil.Process(service.process.pid)
        masters = [p for p in serve.children() if "gunicorn" in " ".join(p.cmdline())]
        return sorted(w.pid for m in masters for w in m.children())
    except psutil.NoSuchProcess:
        return []


def worker_rss_mb(service: Service) -> list[float]:
    rss = []
    for pid in worker_pids(service):
        try:
            rss.append(round(psutil.Process(pid).memory_info().rss / 2**20, 1))
        except psutil.NoSuchProcess:
            continue
    return rss


def post(url: str, body: bytes, session: requests.Session | None = None,
         timeout: float = REQUEST_TIMEOUT_S) -> tuple[int, str, float]:
    """(status, error code or "", seconds); a dropped connection is status 0."""
    started = time.monotonic()
    try:
        response = (session or requests).post(url + "/invocations", data=body, timeout=timeout,
                                              headers={"Content-Type": "image/jpeg"})
    except requests.RequestException as exc:
        return 0, type(exc).__name__, time.monotonic() - started
    error = ""
    if response.status_code != 200:
        try:
            error = response.json().get("error", "")
        except ValueError:
            error = f"non-JSON {response.headers.get('Content-Type')}"
    return response.status_code, error, time.monotonic() - started


# --- load ---------------------------------------------------------------------------------------------------

@dataclass
class LoadRound:
    clients: int
    requests: int
    non_200: int
    p50_ms: float
    p95_ms: float
    worker_rss_mb: list[float]
    statuses: dict[str, int] = field(default_factory=dict)


def load_round(service: Service, bodies: bytes | list[bytes], clients: int, per_client: int) -> LoadRound:
    """``clients`` sessions sending ``per_client`` requests each, cycling through ``bodies``."""
    bodies = [bodies] if isinstance(bodies, bytes) else bodies

    def client(index: int) -> list[tuple[int, str, float]]:
        with requests.Session() as session:
            return [post(service.url, bodies[(index + i) % len(bodies)], session) for i in range(per_client)]

    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = [r for batch in pool.map(client, range(clients)) for r in batch]
    latencies = [seconds * 1000 for status, _, seconds in results if status == 200]
    return LoadRound(clients, len(results), sum(status != 200 for status, _, _ in results),
                     percentile(latencies, 50), percentile(latencies, 95), worker_rss_mb(service),
                     dict(Counter(f"{status} {error}".strip() for status, error, _ in results)))


def rss_growth(before: list[float], after: list[float]) -> float:
    """Relative growth of the summed worker RSS."""
    return round(sum(after) / sum(before) - 1.0, 3) if before and after else float("nan")


# --- worker kill ----------------------------------------------------------------------------------------------

@dataclass
class KillResult:
    sent: int
    failed: int
    model_not_ready: int
    statuses: dict[str, int]
    back_to_full_s: float  # SIGKILL -> the replacement worker accepts requests (nan: not within the deadline)


class ClientPool:
    """Clients sending one request after another until stopped (each bounded by ``max_requests``)."""

    def __init__(self, service: Service, body: bytes, clients: int, max_requests: int = 10_000) -> None:
        self.results: list[tuple[int, str, float]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(service, body, max_requests), daemon=True)
                         for _ in range(clients)]

    def _client(self, service: Service, body: bytes, max_requests: int) -> None:
        with requests.Session() as session:
            for _ in range(max_requests):
                if self._stop.is_set():
                    return
                result = post(service.url, body, session)
                with self._lock:
                    self.results.append(result)

    def __enter__(self) -> ClientPool:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_S)


def wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()


def kill_worker_under_load(service: Service, body: bytes, clients: int, deadline_s: float = 120.0,
                           settle_s: float = 1.0) -> KillResult:
    """SIGKILL the first worker while ``clients`` send; time until its replacement logs that it accepts."""
    victim = worker_pids(service)[0]
    accepting_before = service.stderr().count(ACCEPTING_MARK)
    with ClientPool(service, body, clients) as pool:
        time.sleep(settle_s)
        killed_at = time.monotonic()
        psutil.Process(victim).send_signal(signal.SIGKILL)
        back = wait_for(lambda: service.stderr().count(ACCEPTING_MARK) > accepting_before, deadline_s)
        back_s = time.monotonic() - killed_at if back else float("nan")
        time.sleep(settle_s)  # requests on the full pool again
    statuses = Counter(f"{status} {error}".strip() for status, error, _ in pool.results)
    return KillResult(len(pool.results), sum(status != 200 for status, _, _ in pool.results),
                      sum(error == "model_not_ready" for _, error, _ in pool.results), dict(statuses),
                      round(back_s, 1))


# --- SIGTERM drain -------------------------------------------------------------------------------------------

@dataclass
class DrainResult:
    target: str  # "pid" or "group"
    sent: int
    answered_200: int
    exit_code: int | None
    exit_s: float


def sigterm_with_uploads_in_flight(service: Service, body: bytes, uploads: int, to_group: bool,
                                   pause_s: float = 1.0) -> DrainResult:
    """Half-sent uploads, then SIGTERM (to serve's PID or its process group), then the rest of each body."""
    head = (f"POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    sockets = []
    for _ in range(uploads):
        sock = socket.create_connection(("127.0.0.1", service.port), timeout=REQUEST_TIMEOUT_S)
        sock.sendall(head + body[: len(body) // 2])
        sockets.append(sock)
    time.sleep(0.3)  # nginx has read the heads
    signalled_at = time.monotonic()
    pid = service.process.pid
    if to_group:
        os.killpg(pid, signal.SIGTERM)
    else:
        os.kill(pid, signal.SIGTERM)
    time.sleep(pause_s)
    answered = 0
    for sock in sockets:
        try:
            sock.sendall(body[len(body) // 2:])
            response = http.client.HTTPResponse(sock)
            response.begin()
            payload = response.read()
            answered += response.status == 200 and b'"damage_count"' in payload
        except OSError:
            pass
        finally:
            sock.close()
    try:
        code = service.process.wait(timeout=TARGET_EXIT_S + 10)
    except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired; the caller kills the group
        code = None
    return DrainResult("group" if to_group else "pid", uploads, answered, code,
                       round(time.monotonic() - signalled_at, 1))


# --- readiness and broken models ----------------------------------------------------------------------------

def ping_answer(url: str, timeout: float = 2.0) -> tuple[int, str, float]:
    """(status, "json"|"empty"|"other:<type>", seconds); no connection is status 0."""
    started = time.monotonic()
    try:
        response = requests.get(url + "/ping", timeout=timeout)
    except requests.RequestException:
        return 0, "", time.monotonic() - started
    kind = "empty" if not response.content else "other:" + response.headers.get("Content-Type", "")
    if response.content and response.headers.get("Content-Type", "").startswith("application/json"):
        try:
            json.loads(response.content)
            kind = "json"
        except ValueError:
            kind = "other:bad-json"
    return response.status_code, kind, time.monotonic() - started


def ping_until_ready(service: Service, timeout_s: float, poll_s: float = 0.01) -> list[tuple[int, str, float]]:
    """Every /ping answer from the moment serve starts until the first 200 (tight loop, bounded)."""
    answers = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and service.process.poll() is None:
        answer = ping_answer(service.url)
        if answer[0]:
            answers.append(answer)
        if answer[0] == 200:
            break
        time.sleep(poll_s)
    return answers


def bad_ping_answers(answers: list[tuple[int, str, float]], limit_s: float = 2.0) -> list[tuple[int, str, float]]:
    """Answers breaking the contract: anything but 200 (empty) or a JSON 503, or slower than ``limit_s``."""
    return [a for a in answers if (a[0], a[1]) not in ((200, "empty"), (503, "json")) or a[2] >= limit_s]


@dataclass
class BrokenModelResult:
    case: str
    ping: tuple[int, str]
    invocation: tuple[int, str]
    detail: str
    logged: bool  # the detail (naming the file and the reason) is in the service log
    worker_restarts: int  # workers started after the first: > 0 means a crash loop


def broken_model_answers(service: Service, case: str, watch_s: float = 5.0) -> BrokenModelResult:
    """Once the load has failed: /ping and /invocations, the log, and whether the worker stays up."""
    wait_for(lambda: "model load failed" in service.stderr() or service.process.poll() is not None, 120.0, 0.3)
    first = worker_pids(service)
    time.sleep(watch_s)
    ping = requests.get(service.url + "/ping", timeout=5)
    invocation = requests.post(service.url + "/invocations", data=b"x", timeout=10)
    detail = ping.json().get("detail", "") if ping.content else ""
    restarts = service.stderr().count("Booting worker") - 1
    if worker_pids(service) != first:
        restarts = max(restarts, 1)
    return BrokenModelResult(case, (ping.status_code, ping.json().get("error", "") if ping.content else ""),
                             (invocation.status_code, invocation.json().get("error", "")), detail,
                             bool(detail) and detail in service.stderr(), restarts)


# --- slow body and burst --------------------------------------------------------------------------------------

@dataclass
class SlowBodyResult:
    slow_status: int
    slow_s: float
    others: int
    others_non_200: int
    others_p95_ms: float


def slow_body_client(service: Service, body: bytes, clients: int, per_client: int,
                     trickle_s: float = 3.0) -> SlowBodyResult:
    """One client sends its body in small pieces over ``trickle_s`` while the others send normally."""
    def trickle() -> tuple[int, float]:
        started = time.monotonic()
        sock = socket.create_connection(("127.0.0.1", service.port), timeout=REQUEST_TIMEOUT_S)
        try:
            sock.sendall((f"POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
                          f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode())
            pieces = 20
            step = -(-len(body) // pieces)
            for offset in range(0, len(body), step):
                sock.sendall(body[offset:offset + step])
                time.sleep(trickle_s / pieces)
            response = http.client.HTTPResponse(sock)
            response.begin()
            response.read()
            return response.status, time.monotonic() - started
        finally:
            sock.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(trickle)
        others = load_round(service, body, clients, per_client)
        status, seconds = slow.result(timeout=REQUEST_TIMEOUT_S)
    return SlowBodyResult(status, round(seconds, 1), others.requests, others.non_200, others.p95_ms)


@dataclass
class BurstResult:
    sent: int
    statuses: dict[str, int]
    max_s: float  # the slowest answer: a hang shows here


def burst(service: Service, body: bytes, clients: int, timeout_s: float = 60.0) -> BurstResult:
    """``clients`` requests released at the same instant; every one must get an answer (200 or JSON 503)."""
    barrier = threading.Barrier(clients)

    def one(_: int) -> tuple[int, str, float]:
        barrier.wait(timeout=30)
        return post(service.url, body, timeout=timeout_s)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(one, range(clients)))
    return BurstResult(clients, dict(Counter(f"{s} {e}".strip() for s, e, _ in results)),
                       round(max(t for _, _, t in results), 1))


