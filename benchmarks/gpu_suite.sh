#!/usr/bin/env bash
# Every GPU figure of issue 15 in one command (at most 8 minutes on a GPU machine); see benchmarks/gpu_suite.py.
#   benchmarks/gpu_suite.sh [gpu_suite.py options]     e.g. --out /tmp/gpu.json --weights my_model/mask_cnn_x.h5
# Results: printed, and written to gpu_suite_results.json + .md (or --out). Without a GPU: says so, exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "gpu_suite: no GPU on this machine (nvidia-smi lists none); nothing measured"
    exit 0
fi
nvidia-smi -L
export PYTHONPATH="$PWD/model_code${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# 470 s of sections leave room for the start-up and the last section's tail inside 8 minutes.
exec timeout --signal=INT 475 "$PYTHON" benchmarks/gpu_suite.py --budget-s 440 "$@"
