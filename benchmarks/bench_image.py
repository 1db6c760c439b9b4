"""The serving image's size, its layers, and its cold start (``docker run`` -> /ping 200) with the tiny test model.

    PYTHONPATH=model_code .venv/bin/python benchmarks/bench_image.py [--image car-damage:cpu] [--runs 3]
        [--model-dir DIR]

Needs a Docker engine and a built image (`make image`). Without --model-dir the seeded random-weight tiny model
of the tests (tests/conftest.py build_tiny_model_dir) is written to a temporary folder. Each run starts a fresh
container (--network host, the model mounted read-only) and polls /ping every 0.1 s.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.container.docker_run import DEFAULT_IMAGE, readable_by_all, run_container  # noqa: E402

logger = logging.getLogger("bench_image")


def layer_table(image: str) -> list[tuple[str, str]]:
    out = subprocess.run(["docker", "history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", image],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    rows = []
    for line in out.splitlines():
        size, created_by = line.split("\t", 1)
        if size in ("0B", "0"):
            continue
        step = created_by.replace("/bin/sh -c #(nop) ", "").replace("/bin/sh -c ", "RUN ")
        rows.append((size, " ".join(step.split())[:90] or "(base image)"))
    return rows


def cold_start(image: str, model_dir: Path) -> float:
    container = run_container(image, "serve", volumes={model_dir: "/opt/ml/model:ro"})
    try:
        while True:
            if container.ping(timeout=1.0) == 200:
                return time.monotonic() - container.started_at
            if time.monotonic() - container.started_at > 180:
                raise RuntimeError(f"no /ping 200 in 180 s:\n{container.logs()[-3000:]}")
            time.sleep(0.1)
    finally:
        container.remove()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model-dir", type=Path)
    args = parser.parse_args()

    size = int(subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", args.image],
                              capture_output=True, text=True, check=True, timeout=60).stdout)
    logger.info("image %s: %.0f MB (%.2f GB)", args.image, size / 1e6, size / 1e9)
    for layer_size, step in layer_table(args.image):
        logger.info("  %8s  %s", layer_size, step)
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir
        if model_dir is None:
            from tests.conftest import build_tiny_model_dir

            model_dir = build_tiny_model_dir(Path(scratch))
        readable_by_all(model_dir)
        times = []
        for run in range(1, args.runs + 1):
            times.append(cold_start(args.image, model_dir))
            logger.info("cold start %d/%d: %.1f s", run, args.runs, times[-1])
    logger.info("cold start (docker run -> /ping 200): median %.1f s, min %.1f s, max %.1f s",
                statistics.median(times), min(times), max(times))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
