"""Drive the live service (nginx + gunicorn + Flask) with concurrent clients and report what it adds.

Either point it at a running service (``--url http://host:8080``) or let it start ``container/serve`` on a
free port with ``--model-dir``. For each client count in ``--clients`` it sends ``--requests`` POSTs of one
image and reports throughput, p50/p95/p99 latency and the service's overhead beyond model time, read from
each response's ``timings_ms`` (``inference`` = the model call: molding, the graph, unmolding):

  overhead = client latency - timings_ms.inference - timings_ms.queue   (HTTP, nginx, gunicorn, decode,
             post-processing, JSON; queue = waiting for other requests' model calls, which is not overhead)
  split as  in-server = timings_ms.total - inference - queue (decode, polygons/areas, response building)
       and  HTTP stack = client latency - timings_ms.total (nginx, gunicorn, Flask, JSON encoding, loopback)

With one client nothing queues; with more clients latency also holds the wait for the model lock (one model
call at a time per worker), reported by the service as ``queue`` and left out of the overhead.

    .venv/bin/python benchmarks/bench_service.py --model-dir demo_model --clients 1,4 --requests 40
    .venv/bin/python benchmarks/bench_service.py --url http://localhost:8080 --image car.jpg
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import requests
from PIL import Image

logger = logging.getLogger("bench_service")
REPO_ROOT = Path(__file__).resolve().parents[1]
SERVE = REPO_ROOT / "container" / "serve"
DEFAULT_PHOTO = REPO_ROOT.parent / "shared" / "data" / "test_images" / "a.jpg"
ONE_MEGAPIXEL = 1_000_000
READY_TIMEOUT_S = 600
REQUEST_TIMEOUT_S = 120
#: The targets from the issue: overhead under 5% of model time and under 50 ms for a 1 MP photo.
TARGET_OVERHEAD_FRACTION = 0.05
TARGET_OVERHEAD_MS = 50.0


@dataclass
class Sample:
    latency_ms: float
    inference_ms: float
    server_total_ms: float
    status: int
    queue_ms: float = 0.0  # waiting for other requests' model calls: not overhead


@dataclass
class RunResult:
    clients: int
    requests: int
    errors: int
    wall_s: float
    throughput_rps: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    inference_p50_ms: float
    overhead_p50_ms: float
    overhead_p95_ms: float
    overhead_fraction_p50: float
    in_server_overhead_p50_ms: float  # decode + post-processing + response building (timings_ms)
    http_overhead_p50_ms: float  # latency - timings_ms.total: nginx, gunicorn, Flask, JSON, the network


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def one_megapixel_jpeg(source: Path | None) -> bytes:
    """A real photo scaled to about 1 MP (JPEG, quality 90); a synthetic panel if the photo is absent."""
    if source is not None and source.exists():
        image = Image.open(source).convert("RGB")
    else:
        y, x = np.mgrid[0:600, 0:800]
        image = Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8))
    scale = (ONE_MEGAPIXEL / (image.width * image.height)) ** 0.5
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(model_dir: Path, log_dir: Path, extra_env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, MODEL_DIR=str(model_dir.resolve()), SAGEMAKER_BIND_TO_PORT=str(port),
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", **extra_env)
    with open(log_dir / "stdout.log", "ab") as out, open(log_dir / "stderr.log", "ab") as err:
        process = subprocess.Popen([sys.executable, str(SERVE)], env=env, stdout=out, stderr=err,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url, log_dir)
    except BaseException:
        stop_service(process)  # never leave a service behind, whatever went wrong while waiting
        raise
    return process, url


def wait_ready(process: subprocess.Popen, url: str, log_dir: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve exited with {process.returncode}; see {log_dir}/stderr.log")
        try:
            ping = requests.get(url + "/ping", timeout=2)
        except requests.RequestException:
            ping = None
        if ping is not None and ping.status_code not in (200, 503):
            logger.info("ping answered %d: %r", ping.status_code, ping.content[:200])
        if ping is not None and ping.status_code == 200:
            return
        if ping is not None and ping.headers.get("Content-Type", "").startswith("application/json") \
                and ping.content and ping.json().get("error") == "model_load_failed":
            raise SystemExit(f"the model failed to load: {ping.json()['detail']}")  # permanent
        time.sleep(0.5)
    raise SystemExit(f"service not ready after {READY_TIMEOUT_S} s; see {log_dir}/stderr.log")


def stop_service(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def send(session: requests.Session, url: str, body: bytes, content_type: str, attributes: str) -> Sample:
    started = time.perf_counter()
    response = session.post(url + "/invocations", data=body, timeout=REQUEST_TIMEOUT_S,
                            headers={"Content-Type": content_type,
                                     "X-Amzn-SageMaker-Custom-Attributes": attributes})
    latency_ms = (time.perf_counter() - started) * 1000.0
    if response.status_code != 200:
        return Sample(latency_ms, float("nan"), float("nan"), response.status_code)
    timings = response.json()["timings_ms"]
    return Sample(latency_ms, float(timings["inference"]), float(timings["total"]), 200, float(timings["queue"]))


def run(url: str, body: bytes, content_type: str, clients: int, total: int, attributes: str) -> RunResult:
    per_client = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]

    def client(count: int) -> list[Sample]:
        with requests.Session() as session:
            return [send(session, url, body, content_type, attributes) for _ in range(count)]

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        samples = [s for batch in pool.map(client, per_client) for s in batch]
    wall_s = time.perf_counter() - started
    good = [s for s in samples if s.status == 200]
    latencies = [s.latency_ms for s in good]
    overheads = [s.latency_ms - s.inference_ms - s.queue_ms for s in good]
    inference_p50 = percentile([s.inference_ms for s in good], 50)
    return RunResult(
        clients=clients, requests=len(samples), errors=len(samples) - len(good), wall_s=round(wall_s, 3),
        throughput_rps=round(len(good) / wall_s, 3),
        latency_p50_ms=round(percentile(latencies, 50), 2), latency_p95_ms=round(percentile(latencies, 95), 2),
        latency_p99_ms=round(percentile(latencies, 99), 2), inference_p50_ms=round(inference_p50, 2),
        overhead_p50_ms=round(percentile(overheads, 50), 2), overhead_p95_ms=round(percentile(overheads, 95), 2),
        overhead_fraction_p50=round(percentile(overheads, 50) / inference_p50, 4) if good else float("nan"),
        in_server_overhead_p50_ms=round(
            percentile([s.server_total_ms - s.inference_ms - s.queue_ms for s in good], 50), 2),
        http_overhead_p50_ms=round(percentile([s.latency_ms - s.server_total_ms for s in good], 50), 2),
    )


def markdown(results: list[RunResult]) -> str:
    rows = ["| clients | requests | errors | req/s | p50 ms | p95 ms | p99 ms | model p50 ms | overhead p50 ms "
            "| overhead p95 ms | overhead / model | in-server (decode+post) p50 ms | HTTP stack p50 ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r.clients} | {r.requests} | {r.errors} | {r.throughput_rps:.2f} | {r.latency_p50_ms:.1f} "
                    f"| {r.latency_p95_ms:.1f} | {r.latency_p99_ms:.1f} | {r.inference_p50_ms:.1f} "
                    f"| {r.overhead_p50_ms:.1f} | {r.overhead_p95_ms:.1f} | {r.overhead_fraction_p50:.1%} "
                    f"| {r.in_server_overhead_p50_ms:.1f} | {r.http_overhead_p50_ms:.1f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="a running service, e.g. http://localhost:8080")
    source.add_argument("--model-dir", type=Path, help="start container/serve on this model folder")
    parser.add_argument("--image", type=Path, help="image to send as is (default: a real photo scaled to 1 MP)")
    parser.add_argument("--content-type", default="image/jpeg")
    parser.add_argument("--clients", default="1,4", help="comma list of concurrent client counts")
    parser.add_argument("--requests", type=int, default=40, help="requests per client count")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests first")
    parser.add_argument("--attributes", default="", help="X-Amzn-SageMaker-Custom-Attributes for every request")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the started service (e.g. MODEL_SERVER_THREADS=8)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    body = args.image.read_bytes() if args.image else one_megapixel_jpeg(DEFAULT_PHOTO)
    width, height = Image.open(io.BytesIO(body)).size
    process = None
    log_dir = Path(tempfile.mkdtemp(prefix="bench_service-"))
    try:
        if args.model_dir:
            process, url = start_service(args.model_dir, log_dir, dict(kv.split("=", 1) for kv in args.env))
        else:
            url = args.url.rstrip("/")
        with requests.Session() as session:
            for _ in range(args.warmup):
                send(session, url, body, args.content_type, args.attributes)
        results = [run(url, body, args.content_type, int(c), args.requests, args.attributes)
                   for c in args.clients.split(",")]
    finally:
        if process is not None:
            stop_service(process)
    report = {
        "image": {"width": width, "height": height, "bytes": len(body)},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "url": url, "results": [asdict(r) for r in results],
    }
    print(f"image {width}x{height} ({len(body)} bytes), {url}")
    print(markdown(results))
    single = next((r for r in results if r.clients == 1), None)
    if single is not None:
        ok = single.overhead_p50_ms < TARGET_OVERHEAD_MS and single.overhead_fraction_p50 < TARGET_OVERHEAD_FRACTION
        print(f"overhead at 1 client: {single.overhead_p50_ms:.1f} ms = {single.overhead_fraction_p50:.1%} of model "
              f"time (targets < {TARGET_OVERHEAD_MS:.0f} ms and < {TARGET_OVERHEAD_FRACTION:.0%}): "
              f"{'met' if ok else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if statistics.fmean([r.errors for r in results]) > 0:
        logger.warning("some requests failed; see %s", log_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
