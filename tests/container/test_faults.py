"""Faults and load against the real ``container/serve`` (nginx + gunicorn, 2 workers, the tiny real model).

Short versions of ``benchmarks/bench_faults.py``'s scenarios, asserting the targets of issue 13; the script runs
the long version and prints the figures (docs/benchmarks.md). Every loop is bounded; every server is stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from benchmarks.fault_scenarios import (
    bad_ping_answers,
    kill_worker_under_load,
    load_round,
    ping_answer,
    ping_until_ready,
    sample_jpeg,
    sigterm_with_uploads_in_flight,
    worker_pids,
)
from tests.conftest import require_tool
from tests.container.conftest import MODEL_READY_TIMEOUT_S, free_port, start_server
from tests.container.test_serve import serve_module

THREADS = 2


@pytest.fixture(autouse=True)
def _nginx_is_installed() -> None:
    require_tool("nginx")


@pytest.fixture(scope="module")
def two_workers(service_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """2 workers x 2 threads; TF logging as in the image (warnings on). Its /ping answers from the first one."""
    server = start_server(service_model_dir, tmp_path_factory.mktemp("two_workers"), MODEL_SERVER_WORKERS="2",
                          MODEL_SERVER_THREADS=str(THREADS), TF_CPP_MIN_LOG_LEVEL="1")
    try:
        server.start_pings = ping_until_ready(server, MODEL_READY_TIMEOUT_S, poll_s=0.05)
        assert server.start_pings and server.start_pings[-1][0] == 200, server.stderr()[-3000:]
        # Both workers up (the second may still be loading when the first answers 200).
        deadline = time.monotonic() + MODEL_READY_TIMEOUT_S
        while server.stderr().count("accepting requests") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        yield server
    finally:
        server.stop()


# --- 3: /ping is 200 or JSON 503 from the first byte ------------------------------------------------------------

def test_ping_is_200_or_json_503_from_the_first_answer(two_workers: Any) -> None:
    answers = two_workers.start_pings
    assert len(answers) > 5, answers  # the tight loop saw the start, not only the end
    assert bad_ping_answers(answers) == [], answers


def render_and_start_nginx(tmp_path: Path, ready: bool) -> tuple[subprocess.Popen, str]:
    """nginx alone with serve's rendered config; no gunicorn behind it (its socket does not exist)."""
    serve = serve_module()
    port = free_port()
    conf = serve.render_nginx_conf(serve.nginx_values(run_dir=tmp_path, port=port, host="127.0.0.1",
                                                      body_mb=6, timeout_s=60))
    (tmp_path / "nginx.conf").write_text(conf)
    if ready:
        (tmp_path / serve.READY_FILE_NAME).touch()
    process = subprocess.Popen([serve.find_nginx(), "-e", "stderr", "-p", str(tmp_path), "-c",
                                str(tmp_path / "nginx.conf")], stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while ping_answer(url)[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return process, url


@pytest.mark.parametrize("ready", [False, True], ids=["no-worker-ready-yet", "gunicorn-socket-gone"])
def test_nginx_answers_json_503_when_gunicorn_is_not_there(ready: bool) -> None:
    # A run dir like serve's (0755 under /tmp): as root, nginx's workers run as www-data and must reach it.
    run_dir = Path(tempfile.mkdtemp(prefix="serve-test-"))
    run_dir.chmod(0o755)
    process, url = render_and_start_nginx(run_dir, ready)
    try:
        ping = requests.get(url + "/ping", timeout=5)
        invocation = requests.post(url + "/invocations", data=b"x", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(run_dir, ignore_errors=True)
    for response in (ping, invocation):
        assert response.status_code == 503, (response.status_code, response.text[:200])
        assert response.headers["Content-Type"].startswith("application/json")
    expected = "model_server_unavailable" if ready else "model_not_ready"
    assert ping.json()["error"] == invocation.json()["error"] == expected


# --- 5: HOST ---------------------------------------------------------------------------------------------------

def test_nginx_listens_on_loopback_only_by_default(two_workers: Any) -> None:
    serve = psutil.Process(two_workers.process.pid)
    nginx = next(p for p in serve.children() if "nginx" in p.name())
    listening = {(c.laddr.ip, c.laddr.port) for c in nginx.net_connections("inet") if c.status == "LISTEN"}
    assert listening == {("127.0.0.1", two_workers.port)}


def test_host_setting_renders_the_listen_address_and_rejects_names() -> None:
    serve = serve_module()
    assert serve.listen_address("0.0.0.0", 8080) == "0.0.0.0:8080"
    assert serve.listen_address("::1", 8080) == "[::1]:8080"
    with pytest.raises(SystemExit, match="HOST"):
        serve.listen_address("my-laptop", 8080)


# --- 1: memory ---------------------------------------------------------------------------------------------------

def test_workers_run_with_malloc_arena_max_and_no_max_requests_by_default(two_workers: Any) -> None:
    for pid in worker_pids(two_workers):
        assert psutil.Process(pid).environ().get("MALLOC_ARENA_MAX") == "2"
    master = psutil.Process(worker_pids(two_workers)[0]).parent()
    assert "--max-requests" not in master.cmdline()


def test_user_settings_win_and_max_requests_gets_jitter() -> None:
    serve = serve_module()
    env = serve.worker_environment({"MALLOC_ARENA_MAX": "4"})
    assert env["MALLOC_ARENA_MAX"] == "4"
    assert serve.worker_environment({})["MALLOC_ARENA_MAX"] == "2"
    assert serve.max_requests_args(0) == []
    assert serve.max_requests_args(1000) == ["--max-requests", "1000", "--max-requests-jitter", "100"]


def test_load_round_all_200_and_rss_recorded(two_workers: Any) -> None:
    result = load_round(two_workers, sample_jpeg(), clients=4, per_client=5)
    assert (result.requests, result.non_200) == (20, 0), result.statuses
    assert len(result.worker_rss_mb) == 2 and min(result.worker_rss_mb) > 100


# --- TF noise --------------------------------------------------------------------------------------------------

def test_tensorflow_predictcost_noise_is_dropped_but_real_errors_stay(two_workers: Any) -> None:
    log = two_workers.stderr()
    assert "warmed up scratch" in log  # the traces that write the noise have run
    assert "PredictCost" not in log
    assert "leaving TensorFlow's cost-estimator warnings" in log  # there was noise, and the filter took it
    serve = serve_module()
    keep = serve.LogFilter()
    noise = (b"W0000 00:00:1.1 27236 op_level_cost_estimator.cc:699] Error in PredictCost() for the op: "
             b"op: \"CropAndResize\" attr { key: \"T\" }\n")
    error = b"E0000 00:00:1.2 27236 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
    traceback = b"Traceback (most recent call last):\n"
    assert [keep(line) for line in (noise, error, traceback, noise)] == [False, True, True, False]
    assert keep.dropped == 2


def test_stderr_pump_passes_every_line_but_the_noise(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    serve = serve_module()
    read_end, write_end = os.pipe()
    lines = [b"[INFO] Booting worker with pid: 7\n",
             b"W0000 op_level_cost_estimator.cc:699] Error in PredictCost() for the op: CropAndResize\n",
             b"E0000 cuda_platform.cc:52] failed call to cuInit\n", b"no newline at the end"]
    os.write(write_end, b"".join(lines))
    os.close(write_end)
    serve.pump_filtered(os.fdopen(read_end, "rb"), serve.LogFilter())
    assert capfdbinary.readouterr().err == lines[0] + lines[2] + lines[3]


# --- 4: a restarted worker takes no request before its model is ready ----------------------------------------

def test_killed_worker_costs_at_most_its_own_requests(two_workers: Any) -> None:
    """8 s of traffic after the kill, while the replacement loads (the time back to full strength is the
    benchmark's); the next test then drains with the replacement still loading."""
    result = kill_worker_under_load(two_workers, sample_jpeg(), clients=4, deadline_s=8.0)
    assert result.model_not_ready == 0, result
    assert result.failed <= THREADS, result
    assert result.sent > result.failed + 10, result  # the healthy worker served meanwhile
    assert len(worker_pids(two_workers)) == 2


# --- 2: SIGTERM to the process group drains too -------------------------------------------------------------

def test_sigterm_to_the_process_group_answers_every_upload(two_workers: Any) -> None:
    """Runs last: it stops the module's server."""
    result = sigterm_with_uploads_in_flight(two_workers, sample_jpeg(), uploads=4, to_group=True)
    assert (result.answered_200, result.exit_code) == (4, 0), (result, two_workers.stderr()[-3000:])
    assert result.exit_s < 30


def test_children_have_their_own_process_groups(server_factory: Any, service_model_dir: Path) -> None:
    server = server_factory(service_model_dir, name="groups")
    deadline = time.monotonic() + 30
    while len(psutil.Process(server.process.pid).children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    serve_group = os.getpgid(server.process.pid)
    for child in psutil.Process(server.process.pid).children():
        assert os.getpgid(child.pid) != serve_group, child.cmdline()
    server.process.send_signal(signal.SIGINT)  # Ctrl-C: serve alone gets it, and drains
    assert server.process.wait(timeout=40) == 0
    assert "received SIGINT: draining" in server.stderr()


def test_photos_of_many_sizes_trace_the_graph_once(real_predictor: Any) -> None:
    """No per-request growth from retracing: every photo is molded to one input shape."""
    import numpy as np

    rng = np.random.default_rng(0)
    for width, height in [(640, 480), (480, 640), (1600, 1200), (347, 253), (1280, 720)]:
        real_predictor.predict(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    runner = real_predictor.models[0].model._runner
    assert runner._run.experimental_get_tracing_count() == 1
