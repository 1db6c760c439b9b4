"""Inference benchmark: median detect() latency, peak RSS, model FLOPs and the fraction of measured matmul rate.

Each model runs in its own subprocess (so peak RSS is that model's), with TensorFlow limited to --threads
threads. Weights are random (seeded) and DETECTION_MIN_CONFIDENCE is 0, so the heads do their full work
(POST_NMS_ROIS_INFERENCE proposals, up to DETECTION_MAX_INSTANCES masks); the table says how many rows were
real. FLOPs are counted from the traced graphs (Conv2D, MatMul and transposed-conv ops with their static
shapes: backbone + FPN + RPN at the benchmark size, box head on the real proposals, mask head on the real
detections), 2 FLOPs per multiply-add. The matmul rate is measured in this script with a large tf.matmul
right after every timed detect() (same process, same threads), so that the achieved fraction stays
meaningful on a shared machine; the fraction is the median over runs of (GFLOP / run time) / matmul rate.

    python benchmarks/bench_inference.py [--runs 5] [--models resnet101,resnet50] [--size 1024] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MATMUL_N = 4096


def _configure_tf(threads: int, device: str):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # numpy's BLAS, read at import
        os.environ[var] = str(threads)
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def op_flops(op) -> int:
    """FLOPs of one conv/matmul op from its static shapes (0 for other ops or unknown shapes)."""
    try:
        if op.type in ("Conv2D", "_FusedConv2D"):
            out = op.outputs[0].shape.as_list()
            kh, kw, cin, _ = op.inputs[1].shape.as_list()
            return 2 * int(out[0] * out[1] * out[2] * out[3]) * kh * kw * cin
        if op.type in ("MatMul", "_FusedMatMul", "BatchMatMulV2"):
            a, b = op.inputs[0].shape.as_list(), op.inputs[1].shape.as_list()
            transpose_a = op.get_attr("transpose_a") if op.type != "BatchMatMulV2" else op.get_attr("adj_x")
            rows, inner = (a[-1], a[-2]) if transpose_a else (a[-2], a[-1])
            cols = b[-2] if (op.get_attr("transpose_b") if op.type != "BatchMatMulV2" else op.get_attr("adj_y")) \
                else b[-1]
            batch = 1
            for d in a[:-2]:
                batch *= d
            return 2 * batch * rows * inner * cols
        if op.type == "Conv2DBackpropInput":  # transposed conv: inputs (sizes, filter [kh, kw, out, in], x)
            kh, kw, cout, _ = op.inputs[1].shape.as_list()
            x = op.inputs[2].shape.as_list()
            return 2 * int(x[0] * x[1] * x[2] * x[3]) * kh * kw * cout
    except (TypeError, ValueError):
        return 0
    return 0


def graph_flops(tf, fn, *specs) -> int:
    graph = tf.function(fn).get_concrete_function(*specs).graph
    return sum(op_flops(op) for op in graph.get_operations())


def make_matmul(tf, device: str):
    """Timed float32 [N, N] x [N, N] products; returns a function giving (tf.matmul GFLOP/s, numpy GFLOP/s).

    On this kind of CPU TF's MatMul kernel is often well below what oneDNN convs reach, so numpy's BLAS on the
    same threads is measured too and the machine's matmul rate is the better of the two.
    """

    with tf.device("/GPU:0" if device == "gpu" else "/CPU:0"):
        a = tf.random.stateless_normal([MATMUL_N, MATMUL_N], seed=[1, 2])
        b = tf.random.stateless_normal([MATMUL_N, MATMUL_N], seed=[3, 4])
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    matmul(a, b).numpy()  # warm-up
    a_np, b_np = a.numpy(), b.numpy()
    flop = 2 * MATMUL_N ** 3 / 1e9

    def rate() -> tuple[float, float]:
        start = time.perf_counter()
        matmul(a, b).numpy()
        tf_rate = flop / (time.perf_counter() - start)
        if device == "gpu":
            return tf_rate, 0.0
        start = time.perf_counter()
        a_np @ b_np
        return tf_rate, flop / (time.perf_counter() - start)

    return rate


def run_model(backbone: str, size: int, runs: int, threads: int, device: str) -> dict:
    tf = _configure_tf(threads, device)
    import numpy as np
    import tf_keras as keras

    import mrcnn.model as modellib
    from mrcnn.config import Config

    class BenchConfig(Config):
        NAME = "bench"
        BACKBONE = backbone
        NUM_CLASSES = 81
        IMAGES_PER_GPU = 1
        IMAGE_MIN_DIM = size
        IMAGE_MAX_DIM = size
        DETECTION_MIN_CONFIDENCE = 0.0

    config = BenchConfig()
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    model = modellib.MaskRCNN("inference", config, "/tmp/bench_logs")
    build_s = time.perf_counter() - start
    image = np.random.default_rng(0).integers(0, 255, size=(size * 3 // 4, size, 3), dtype=np.uint8)
    start = time.perf_counter()
    model.detect([image])
    first_s = time.perf_counter() - start
    # The machine may be shared: time one matmul right after every detect() so that each run's achieved
    # fraction compares against the matmul rate of the same moment.
    # Peak RSS of build + a warm detect(), read before the matmul operands (128 MB) are allocated.
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    matmul_rate = make_matmul(tf, device)
    times, rates, tf_rates, np_rates = [], [], [], []
    for _ in range(runs):
        start = time.perf_counter()
        result = model.detect([image])[0]
        times.append(time.perf_counter() - start)
        tf_rate, np_rate = matmul_rate()
        tf_rates.append(tf_rate)
        np_rates.append(np_rate)
        rates.append(max(tf_rate, np_rate))
    from mrcnn.molding import mold_inputs

    start = time.perf_counter()
    mold_inputs([image], config)
    mold_s = time.perf_counter() - start
    proposals, detections = (int(c[0]) for c in model._runner.last_counts)

    runner = model._runner
    pool, mask_pool = config.POOL_SIZE, config.MASK_POOL_SIZE
    depth = config.TOP_DOWN_PYRAMID_SIZE
    flops_features = graph_flops(tf, runner._features, tf.TensorSpec([1, size, size, 3], tf.float32))
    flops_box = graph_flops(tf, runner.heads.classify, tf.TensorSpec([proposals, pool, pool, depth], tf.float32))
    flops_mask = graph_flops(tf, runner.heads.masks, tf.TensorSpec([detections, mask_pool, mask_pool, depth],
                                                                   tf.float32))
    flops = flops_features + flops_box + flops_mask
    fractions = [flops / t / 1e9 / r for t, r in zip(times, rates, strict=True)]
    return {
        "model": backbone, "device": device, "size": size, "runs": runs, "build_s": build_s, "first_s": first_s,
        "median_s": statistics.median(times), "min_s": min(times), "proposals": proposals, "detections": detections,
        "returned": int(len(result["class_ids"])),
        "gflop": flops / 1e9, "mold_s": mold_s, "matmul_gflops": statistics.median(rates),
        "matmul_best": max(rates), "fraction": statistics.median(fractions),
        "tf_matmul": statistics.median(tf_rates), "np_matmul": statistics.median(np_rates),
        "gflop_parts": [flops_features / 1e9, flops_box / 1e9, flops_mask / 1e9],
        "peak_rss_mb": peak_rss_mb,
    }


def child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def has_gpu() -> bool:
    probe = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return out.returncode == 0 and out.stdout.strip().splitlines()[-1:] != ["0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed detect() calls per model after one warm-up")
    parser.add_argument("--models", default="resnet101,resnet50", help="comma-separated backbones")
    parser.add_argument("--size", type=int, default=1024, help="IMAGE_MAX_DIM (square molded size)")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads on CPU")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU rows even when a GPU is present")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        kind, *rest = args.child
        print(json.dumps(run_model(kind, int(rest[0]), int(rest[1]), int(rest[2]), rest[3])))
        return

    devices = ["cpu"] + (["gpu"] if not args.no_gpu and has_gpu() else [])
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"# command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    header = ("| device | model | size | median s | min s | peak RSS MB | proposals | detections | GFLOP "
              "(features/box/mask) | GFLOP/s (median run) | matmul GFLOP/s (median / best) | fraction of matmul |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for device in devices:
        threads = str(args.threads)
        for backbone in args.models.split(","):
            r = child([backbone.strip(), str(args.size), str(args.runs), threads, device])
            parts = "/".join(f"{p:.0f}" for p in r["gflop_parts"])
            print(f"| {device} ({threads if device == 'cpu' else 'all'} thr) | {r['model']} | {r['size']} | "
                  f"{r['median_s']:.2f} | {r['min_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['proposals']} | "
                  f"{r['detections']} | {r['gflop']:.0f} ({parts}) | {r['gflop'] / r['median_s']:.1f} | "
                  f"{r['matmul_gflops']:.1f} / {r['matmul_best']:.1f} | {r['fraction']:.0%} |", flush=True)
            print(f"#   {r['model']}: build {r['build_s']:.1f} s, first call {r['first_s']:.1f} s, "
                  f"molding {r['mold_s'] * 1000:.0f} ms, {r['returned']} instances returned; median matmul "
                  f"GFLOP/s tf.matmul {r['tf_matmul']:.1f}, numpy {r['np_matmul']:.1f}", flush=True)

if __name__ == "__main__":
    main()
