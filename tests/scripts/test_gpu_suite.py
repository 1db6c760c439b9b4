"""benchmarks/gpu_suite.sh: on a machine without a GPU it says so and exits 0 (the GPU rows need a lent GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITE_SH = REPO / "benchmarks" / "gpu_suite.sh"
SUITE_PY = REPO / "benchmarks" / "gpu_suite.py"


def _has_gpu() -> bool:
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.startswith("GPU ") for line in listing.splitlines())


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU: the suite would measure for minutes")
def test_gpu_suite_without_a_gpu_says_so_and_exits_0(tmp_path) -> None:
    out = tmp_path / "results.json"
    completed = subprocess.run(["bash", str(SUITE_SH), "--out", str(out)], capture_output=True, text=True,
                               timeout=120, env=dict(os.environ, PYTHON=sys.executable))
    assert completed.returncode == 0, completed.stderr
    assert "no GPU" in completed.stdout
    assert not out.exists()


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
def test_gpu_suite_python_part_checks_tensorflow_devices_too(tmp_path) -> None:
    # nvidia-smi can list a GPU that TensorFlow cannot use (no CUDA build, driver mismatch): same answer.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO / "model_code"), TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run([sys.executable, str(SUITE_PY), "--out", str(tmp_path / "r.json")],
                               capture_output=True, text=True, timeout=180, env=env)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "no GPU visible to TensorFlow" in completed.stdout


def test_gpu_suite_results_file_keeps_every_row(tmp_path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu_suite import SECTION_MIN_S, SECTIONS, Results

    assert set(SECTION_MIN_S) == set(SECTIONS)
    results = Results(tmp_path / "r.json", {"gpus": ["H200"]})
    results.add("latency", backbone="resnet101", median_ms=21.5)
    results.add("service", batching="on", skipped="time budget")
    data = json.loads((tmp_path / "r.json").read_text())
    assert [row["section"] for row in data["rows"]] == ["latency", "service"]
    assert "median_ms: 21.5" in (tmp_path / "r.md").read_text()
