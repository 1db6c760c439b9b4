"""Load and fault suite for the live service: runs ``fault_scenarios`` at full size and prints the figures.

Starts ``container/serve`` (real nginx + gunicorn, 127.0.0.1, a free port) on a random-weight tiny model (or
``--model-dir``), then: N clients x M requests twice (non-200, p50/p95, worker RSS before / after / after the
second round); SIGKILL one worker while clients send; a slow-body client; a burst; SIGTERM to serve's PID and
to its process group with uploads in flight; corrupt, truncated, empty and missing model folders. Prints each
figure and the issue's targets, met or not. Every loop is bounded; every service started here is stopped.

    PYTHONPATH=$PWD/model_code .venv/bin/python benchmarks/bench_faults.py --clients 8 --requests 40
    PYTHONPATH=$PWD/model_code .venv/bin/python benchmarks/bench_faults.py --env MALLOC_ARENA_MAX=  # glibc default
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT, REPO_ROOT / "benchmarks"):  # tests.* (model builder, server) and fault_scenarios
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from fault_scenarios import (  # noqa: E402 - needs the path above
    ACCEPTING_MARK,
    TARGET_EXIT_S,
    TARGET_RECOVERY_S,
    TARGET_RSS_GROWTH,
    broken_model_answers,
    burst,
    kill_worker_under_load,
    load_round,
    ping_until_ready,
    post,
    rss_growth,
    sample_jpeg,
    sigterm_with_uploads_in_flight,
    slow_body_client,
    wait_for,
    worker_rss_mb,
)

logger = logging.getLogger("bench_faults")
#: Load images when no photos are at hand: sizes from phone-portrait to 2 MP landscape.
SYNTHETIC_SIZES = [(640, 480), (1024, 768), (480, 640), (1600, 1200), (800, 533), (1280, 720)]


# --- the script -----------------------------------------------------------------------------------------------

def broken_model_folders(root: Path, good: Path) -> dict[str, Path]:
    """corrupt (HDF5 magic, then junk), truncated (half of a real weights file), empty, missing."""
    weights = next(good.glob("mask_cnn_*.h5"))
    folders = {name: root / name for name in ("corrupt", "truncated", "empty")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    (folders["corrupt"] / weights.name).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(4096))
    data = weights.read_bytes()
    (folders["truncated"] / weights.name).write_bytes(data[: len(data) // 2])
    for sidecar in good.glob("mask_cnn_*.json"):
        shutil.copy(sidecar, folders["truncated"] / sidecar.name)
    folders["missing"] = root / "does-not-exist"
    return folders


def report(name: str, value: Any) -> None:
    logger.info("%-34s %s", name, json.dumps(asdict(value) if hasattr(value, "__dataclass_fields__") else value))


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, help="model folder (default: a random-weight tiny model)")
    parser.add_argument("--image-size", type=int, default=256, help="side of the default model's input")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=40, help="requests per client and round")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--photos", type=Path, help="images for the load rounds (default: the shared test "
                        "photos, SHARED_DATA_DIR/test_images, else synthetic ones)")
    parser.add_argument("--synthetic-sizes", type=int, default=0, metavar="N",
                        help="load with N synthetic photos of seeded random sizes (300-2000 px) instead")
    parser.add_argument("--burst", type=int, default=64, help="clients released at once")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the services (e.g. MALLOC_ARENA_MAX= for glibc's default)")
    parser.add_argument("--recycle", type=int, default=0, metavar="N",
                        help="also run a load round with MODEL_SERVER_MAX_REQUESTS=N (workers recycled)")
    parser.add_argument("--skip", default="", help="comma list of: load,kill,slow,burst,drain,broken")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from tests.conftest import (
        SHARED_DATA,
        build_tiny_model_dir,  # the suite's real model builder (random seeded weights)
    )
    from tests.container.conftest import MODEL_READY_TIMEOUT_S, start_server

    skip = set(filter(None, args.skip.split(",")))
    work = Path(tempfile.mkdtemp(prefix="bench_faults-"))
    size = args.image_size
    (work / "model").mkdir()
    model_dir = args.model_dir or build_tiny_model_dir(work / "model", IMAGE_MIN_DIM=size, IMAGE_MAX_DIM=size)
    env = dict(kv.split("=", 1) for kv in args.env)
    body = sample_jpeg(640, 480)
    # Photos of many sizes (boxes of many sizes: the caches a real workload fills), real ones when present.
    photo_dir = args.photos or SHARED_DATA / "test_images"
    photos = sorted(p for p in photo_dir.glob("*") if p.is_file()) if photo_dir.is_dir() else []
    sizes = SYNTHETIC_SIZES
    if args.synthetic_sizes:  # many distinct sizes: what fills per-size caches
        rng = random.Random(args.synthetic_sizes)
        sizes = [(rng.randint(300, 2000), rng.randint(300, 2000)) for _ in range(args.synthetic_sizes)]
        photos = []
    bodies = [p.read_bytes() for p in photos] or [sample_jpeg(w, h, seed=w) for w, h in sizes]
    figures: dict[str, Any] = {"env": env, "workers": args.workers, "model_dir": str(model_dir),
                               "load_images": [p.name for p in photos] or sizes}
    logger.info("machine: %s, %d CPUs, load average %s; model %s; env %s", platform.platform(), os.cpu_count(),
                os.getloadavg(), model_dir, env)

    def started(name: str, model: Path, **extra: str) -> Any:
        server = start_server(model, work / name, **{"TF_CPP_MIN_LOG_LEVEL": "1", **env, **extra})
        servers.append(server)
        return server

    servers: list[Any] = []
    try:
        main_server = started("main", model_dir, MODEL_SERVER_WORKERS=str(args.workers))
        figures["start_pings"] = Counter(f"{s} {k}" for s, k, _ in ping_until_ready(main_server,
                                                                                   MODEL_READY_TIMEOUT_S))
        report("pings from start until 200", figures["start_pings"])
        wait_for(lambda: main_server.stderr().count(ACCEPTING_MARK) >= args.workers, MODEL_READY_TIMEOUT_S, 0.5)
        if "load" not in skip:
            post(main_server.url, body)  # the first request of each worker is not the measurement
            rss_before = worker_rss_mb(main_server)
            rounds = [load_round(main_server, bodies, args.clients, args.requests) for _ in range(2)]
            figures["load"] = {"rss_before_mb": rss_before, "rounds": [asdict(r) for r in rounds],
                               "growth_round1": rss_growth(rss_before, rounds[0].worker_rss_mb),
                               "growth_round2_vs_1": rss_growth(rounds[0].worker_rss_mb, rounds[1].worker_rss_mb)}
            report("load", figures["load"])
        if "kill" not in skip:
            figures["kill"] = asdict(kill_worker_under_load(main_server, body, args.clients,
                                                            deadline_s=MODEL_READY_TIMEOUT_S))
            report("kill one worker under load", figures["kill"])
        if "slow" not in skip:
            figures["slow_body"] = asdict(slow_body_client(main_server, body, args.clients - 1, 5))
            report("slow-body client", figures["slow_body"])
        if "burst" not in skip:
            figures["burst"] = asdict(burst(main_server, body, args.burst))
            report("burst", figures["burst"])
        if "drain" not in skip:
            figures["drain"] = [asdict(sigterm_with_uploads_in_flight(main_server, body, 4, to_group=False))]
            group_server = started("group", model_dir, MODEL_SERVER_WORKERS="1")
            group_server.wait_until(200)
            figures["drain"].append(asdict(sigterm_with_uploads_in_flight(group_server, body, 4, to_group=True)))
            report("SIGTERM with 4 uploads in flight", figures["drain"])
        if args.recycle:
            recycled = started("recycle", model_dir, MODEL_SERVER_WORKERS=str(args.workers),
                               MODEL_SERVER_MAX_REQUESTS=str(args.recycle))
            recycled.wait_until(200)
            wait_for(lambda: recycled.stderr().count(ACCEPTING_MARK) >= args.workers, MODEL_READY_TIMEOUT_S, 0.5)
            result = load_round(recycled, bodies, args.clients, args.requests)
            figures["recycle"] = {"max_requests": args.recycle, **asdict(result),
                                  "recycled_workers": recycled.stderr().count(ACCEPTING_MARK) - args.workers}
            report("MODEL_SERVER_MAX_REQUESTS", figures["recycle"])
            recycled.stop()
        if "broken" not in skip:
            figures["broken"] = []
            for case, folder in broken_model_folders(work / "broken", model_dir).items():
                server = started(f"broken-{case}", folder, MODEL_SERVER_WORKERS="1")
                figures["broken"].append(asdict(broken_model_answers(server, case)))
                server.stop()
            report("broken model folders", figures["broken"])
    finally:
        for server in servers:
            server.stop()
    print_targets(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def print_targets(figures: dict[str, Any]) -> None:
    lines = []
    if "load" in figures:
        load = figures["load"]
        failures = sum(r["non_200"] for r in load["rounds"])
        lines.append(f"load: {failures} non-200 (target 0): {verdict(failures == 0)}; RSS round 2 vs 1 "
                     f"{load['growth_round2_vs_1']:+.1%} (target within 10%): "
                     f"{verdict(abs(load['growth_round2_vs_1']) <= TARGET_RSS_GROWTH)}")
    if "kill" in figures:
        kill = figures["kill"]
        lines.append(f"worker kill: {kill['failed']} failed, {kill['model_not_ready']} model_not_ready; back in "
                     f"{kill['back_to_full_s']} s (target < {TARGET_RECOVERY_S:.0f} s): "
                     f"{verdict(kill['back_to_full_s'] < TARGET_RECOVERY_S)}")
    for drain in figures.get("drain", []):
        ok = drain["answered_200"] == drain["sent"] and drain["exit_code"] == 0 and drain["exit_s"] < TARGET_EXIT_S
        lines.append(f"SIGTERM to {drain['target']}: {drain['answered_200']}/{drain['sent']} answered, exit "
                     f"{drain['exit_code']} in {drain['exit_s']} s: {verdict(ok)}")
    if "start_pings" in figures:
        bad = {k: v for k, v in figures["start_pings"].items() if k not in ("200 empty", "503 json")}
        lines.append(f"/ping from the first answer: {dict(figures['start_pings'])}: {verdict(not bad)}")
    for broken in figures.get("broken", []):
        ok = broken["ping"][0] == broken["invocation"][0] == 503 and broken["logged"] and not broken["worker_restarts"]
        lines.append(f"model folder {broken['case']}: ping {broken['ping']}, invocations {broken['invocation']}, "
                     f"logged {broken['logged']}, restarts {broken['worker_restarts']}: {verdict(ok)}")
    if "recycle" in figures:
        recycle = figures["recycle"]
        lines.append(f"MODEL_SERVER_MAX_REQUESTS={recycle['max_requests']}: {recycle['recycled_workers']} workers "
                     f"recycled, {recycle['non_200']} non-200 of {recycle['requests']}: "
                     f"{verdict(recycle['non_200'] == 0)}")
    for line in lines:
        logger.info("TARGET %s", line)


if __name__ == "__main__":
    sys.exit(main())
