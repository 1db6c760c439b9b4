"""Seconds per training step of the Mask R-CNN training model (a benchmark, not a test).

Cases: ResNet-101 at 1024 px and ResNet-50 at 512 px, 1 image per step, layers "heads" (the old system's
default) and "all". Data: synthetic 1024x768 photos with 3 rectangular instances each, served by the real
input pipeline (resize, RPN targets, mini masks, built ahead by the ``BatchFeed`` thread), so a step is what
``MaskRCNN.train`` runs; ``--input tf.data`` serves the same batches through ``make_dataset`` (tf.data
``from_generator``) instead, for comparison. The first step (graph tracing) is reported separately; the rest
are averaged.

    .venv/bin/python benchmarks/bench_training.py --steps 5 --threads 2 [--device cpu|gpu] [--input feed|tf.data]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from types import SimpleNamespace

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CASES = (("resnet101", 1024), ("resnet50", 512))
LAYER_CHOICES = ("heads", "all")


def make_config(backbone: str, size: int):
    from mrcnn.config import Config

    class BenchConfig(Config):
        NAME = "bench"
        NUM_CLASSES = 2
        IMAGES_PER_GPU = 1
        BACKBONE = backbone
        IMAGE_MIN_DIM = size
        IMAGE_MAX_DIM = size

    return BenchConfig()


def make_dataset(num_images: int = 4):
    from mrcnn.utils import Dataset

    class SyntheticDataset(Dataset):
        def load_image(self, image_id):
            rng = np.random.default_rng(image_id)
            return rng.integers(0, 255, size=(768, 1024, 3), dtype=np.uint8)

        def load_mask(self, image_id):
            masks = np.zeros([768, 1024, 3], bool)
            for i in range(3):
                y, x = 100 + 200 * i, 150 + 250 * i
                masks[y : y + 120, x : x + 300, i] = True
            return masks, np.ones([3], np.int32)

    dataset = SyntheticDataset()
    dataset.add_class("bench", 1, "damage")
    for i in range(num_images):
        dataset.add_image("bench", image_id=i, path=f"synthetic-{i}")
    dataset.prepare()
    return dataset


class StepTimer:
    def __init__(self) -> None:
        import tf_keras as keras

        class _Callback(keras.callbacks.Callback):
            def on_train_batch_begin(cb, batch, logs=None):
                cb.start = time.perf_counter()
                cb.cpu_start = time.process_time()

            def on_train_batch_end(cb, batch, logs=None):
                self.times.append(time.perf_counter() - cb.start)
                self.cpu_times.append(time.process_time() - cb.cpu_start)

        self.times: list[float] = []
        # Process CPU seconds (all threads) per step: comparable even when other jobs share the machine.
        self.cpu_times: list[float] = []
        self.callback = _Callback()


def run_case(backbone: str, size: int, layers: str, steps: int, input_kind: str = "feed") -> dict:
    import tensorflow as tf

    from mrcnn.data.pipeline import BatchFeed, TrainingBatches
    from mrcnn.data.pipeline import make_dataset as make_batches
    from mrcnn.training import compile_model, set_trainable
    from mrcnn.training_graph import build_training_model

    config = make_config(backbone, size)
    started = time.perf_counter()
    keras_model = build_training_model(config)
    build_s = time.perf_counter() - started
    holder = SimpleNamespace(keras_model=keras_model, config=config)
    set_trainable(keras_model, layers)
    compile_model(holder, learning_rate=0.001, momentum=0.9)
    timer = StepTimer()
    feed = None
    if input_kind == "feed":  # as mrcnn.training.train: a background thread builds, the step takes tensors
        feed = BatchFeed(TrainingBatches(make_dataset(), config, seed=0))
        keras_model.use_batch_feeds(feed)
        data = tf.data.Dataset.from_tensors(0).repeat()
    else:
        data = make_batches(make_dataset(), config, seed=0)
    try:
        keras_model.fit(data, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[timer.callback])
    finally:
        if feed is not None:
            keras_model.use_batch_feeds()
            feed.close()
    first, rest = timer.times[0], timer.times[1:]
    return {
        "backbone": backbone,
        "image_size": size,
        "layers": layers,
        "input": input_kind,
        "build_s": round(build_s, 2),
        "first_step_s": round(first, 3),
        "steps_timed": len(rest),
        "mean_step_s": round(statistics.mean(rest), 3),
        "min_step_s": round(min(rest), 3),
        "mean_step_cpu_s": round(statistics.mean(timer.cpu_times[1:]), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=2, help="TF intra/inter-op threads on CPU (0 = TF default)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--layers", choices=LAYER_CHOICES, nargs="+", default=list(LAYER_CHOICES))
    parser.add_argument("--cases", nargs="+", default=[f"{b}@{s}" for b, s in CASES],
                        help="backbone@size entries, e.g. resnet50@512")
    parser.add_argument("--input", choices=("feed", "tf.data"), default="feed",
                        help="batches from the BatchFeed thread (as training) or through tf.data from_generator")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    logging.basicConfig(level=logging.WARNING)

    import tensorflow as tf

    if args.device == "cpu":
        tf.config.set_visible_devices([], "GPU")
        if args.threads:
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    elif not tf.config.list_physical_devices("GPU"):
        print("no GPU visible", file=sys.stderr)
        return 2
    device_name = args.device
    if args.device == "gpu":
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        device_name = details.get("device_name", "gpu")
    results = []
    for case in args.cases:
        backbone, _, size = case.partition("@")
        for layers in args.layers:
            result = run_case(backbone, int(size), layers, args.steps, args.input)
            result.update(device=device_name, threads=args.threads if args.device == "cpu" else None)
            results.append(result)
            print(json.dumps(result), flush=True)
    summary = {
        "machine": platform.node(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_end": os.getloadavg(),
        "results": results,
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    print(f"{'backbone':10} {'size':>5} {'layers':6} {'s/step':>8} {'cpu s/step':>10} {'first':>7}")
    for r in results:
        row = (r["backbone"], r["image_size"], r["layers"], r["mean_step_s"], r["mean_step_cpu_s"], r["first_step_s"])
        print("{:10} {:5d} {:6} {:8.3f} {:10.3f} {:7.2f}".format(*row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
