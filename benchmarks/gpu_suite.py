"""Every GPU figure of issue 15 in one run (``benchmarks/gpu_suite.sh`` calls this), within a time budget.

Sections, in order of priority (each prints its rows at once and appends them to the results file, so a run cut
short still keeps what it measured; a section that would overrun the budget is reported as skipped):

  latency      detect() at batch 1, R101 and R50 at 1024 px: fp32 / MIXED_PRECISION / USE_XLA (+ peak GPU MB)
  throughput   detect_batch() images/s at batch 2, 4, 8 (R101, mixed precision)
  compare      fp16 vs fp32 detections on the real photos: same N, boxes within 2 px, mask IoU >= 0.95
  training     one training step (R101 1024, heads) on 1 GPU and on all GPUs (MirroredStrategy)
  service      the live service (nginx + gunicorn) with and without batching under 8 and 32 clients

Models have seeded random weights (the timing does not depend on them) with DETECTION_MIN_CONFIDENCE 0 so
the heads do their full work; ``compare`` needs trained weights (``--weights``, else ./mask_rcnn_coco.h5, else
the demo model in .cache/demo) and says so when there are none. On a machine without a GPU it prints that and
exits 0.

    benchmarks/gpu_suite.sh                      # = .venv/bin/python benchmarks/gpu_suite.py --budget-s 440
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("gpu_suite")
REPO_ROOT = Path(__file__).resolve().parents[1]
PHOTOS = REPO_ROOT.parent / "shared" / "data" / "test_images"
SECTIONS = ("latency", "throughput", "compare", "training", "service")
VARIANTS = {"fp32": {}, "mixed": {"MIXED_PRECISION": True}, "xla": {"USE_XLA": True}}
#: Seconds a section needs at least (on an H100-class GPU, builds and tracing included) to be worth starting.
SECTION_MIN_S = {"latency": 120, "throughput": 40, "compare": 40, "training": 90, "service": 150}


class Results:
    """Rows printed as they come and kept in a JSON file (rewritten after every row) plus a markdown copy."""

    def __init__(self, path: Path, machine: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"machine": machine, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                   time.gmtime()), "rows": []}

    def add(self, section: str, **row: Any) -> None:
        row = {"section": section, **row}
        self.data["rows"].append(row)
        print(" | ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        self.path.write_text(json.dumps(self.data, indent=1) + "\n")
        self.path.with_suffix(".md").write_text(self.markdown())

    def markdown(self) -> str:
        lines = [f"GPU suite, {self.data['started']}, {self.data['machine']}", ""]
        for row in self.data["rows"]:
            lines.append("| " + " | ".join(f"{k}: {v}" for k, v in row.items()) + " |")
        return "\n".join(lines) + "\n"


def gpu_names() -> list[str]:
    import tensorflow as tf

    names = []
    for device in tf.config.list_physical_devices("GPU"):
        # Grow on demand: the live service started later needs GPU memory this process has not taken, and the
        # peak figures then show what each model really uses.
        tf.config.experimental.set_memory_growth(device, True)
        details = tf.config.experimental.get_device_details(device)
        names.append(details.get("device_name", device.name))
    return names


def peak_mb() -> float:
    import tensorflow as tf

    return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, 1)


def reset_peak() -> None:
    import tensorflow as tf

    tf.config.experimental.reset_memory_stats("GPU:0")


def bench_config(backbone: str, size: int = 1024, **extra: Any):
    from car_damage.model.config import make_config

    return make_config(NAME="bench", BACKBONE=backbone, NUM_CLASSES=2, IMAGES_PER_GPU=1, IMAGE_MIN_DIM=size,
                       IMAGE_MAX_DIM=size, DETECTION_MIN_CONFIDENCE=0.0, **extra)


def photo(seed: int = 0, shape: tuple[int, int] = (768, 1024)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def timed_detect(model: Any, images: list[np.ndarray], runs: int) -> list[float]:
    model.detect_batch(images)  # trace (and compile with XLA) outside the timing
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        model.detect_batch(images)
        times.append(time.perf_counter() - started)
    return times


def section_latency(results: Results, runs: int) -> None:
    import tf_keras as keras

    from mrcnn.model import MaskRCNN

    for backbone in ("resnet101", "resnet50"):
        for variant, extra in VARIANTS.items():
            keras.backend.clear_session()
            reset_peak()
            keras.utils.set_random_seed(0)
            model = MaskRCNN("inference", bench_config(backbone, **extra), tempfile.gettempdir())
            times = timed_detect(model, [photo()], runs)
            results.add("latency", backbone=backbone, size=1024, variant=variant, batch=1,
                        median_ms=round(1000 * statistics.median(times), 2), min_ms=round(1000 * min(times), 2),
                        peak_gpu_mb=peak_mb(), target="R101 < 25 ms on H100/H200")


def section_throughput(results: Results, runs: int) -> None:
    import tf_keras as keras

    from mrcnn.model import MaskRCNN

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    for variant in ("fp32", "mixed"):
        model = MaskRCNN("inference", bench_config("resnet101", **VARIANTS[variant]), tempfile.gettempdir())
        for batch in (2, 4, 8):
            reset_peak()
            times = timed_detect(model, [photo(i) for i in range(batch)], max(3, runs // 2))
            results.add("throughput", backbone="resnet101", variant=variant, batch=batch,
                        images_per_s=round(batch / statistics.median(times), 1), peak_gpu_mb=peak_mb(),
                        target=">= 100 img/s with batching + mixed")
        keras.backend.clear_session()


def trained_weights(explicit: str | None) -> Path | None:
    candidates = [Path(explicit)] if explicit else []
    candidates += [Path("mask_rcnn_coco.h5"), *sorted((REPO_ROOT / ".cache" / "demo").glob("**/mask_cnn_*.h5"))]
    return next((path for path in candidates if path.is_file()), None)


def section_compare(results: Results, weights: str | None) -> None:
    from car_damage.answer.predictor import load_model
    from car_damage.data.images import decode_image

    path = trained_weights(weights)
    photos = sorted(p for p in PHOTOS.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if path is None or not photos:
        results.add("compare", skipped=f"needs trained weights ({path}) and photos in {PHOTOS} ({len(photos)})")
        return
    fp32 = load_model(path).model
    mixed = _mixed_copy(path)
    for photo_path in photos:
        rgb = decode_image(photo_path.read_bytes())
        a, b = fp32.detect_batch([rgb])[0], mixed.detect_batch([rgb])[0]
        same_n = len(a["scores"]) == len(b["scores"])
        box_px = int(np.abs(a["rois"] - b["rois"]).max()) if same_n and len(a["scores"]) else 0
        ious = [_iou(a["masks"][..., i], b["masks"][..., i]) for i in range(len(a["scores"]))] if same_n else []
        results.add("compare", photo=photo_path.name, weights=path.name, n_fp32=len(a["scores"]),
                    n_mixed=len(b["scores"]), max_box_diff_px=box_px,
                    min_mask_iou=round(min(ious), 4) if ious else None,
                    passed=bool(same_n and box_px <= 2 and (not ious or min(ious) >= 0.95)))


def _mixed_copy(path: Path) -> Any:
    """The same weights in a MIXED_PRECISION model (the card's config plus the switch)."""
    from car_damage.answer.predictor import _card_or_inferred, damage_type_from_filename
    from mrcnn.model import MaskRCNN

    card, _ = _card_or_inferred(path, damage_type_from_filename(path) or "scratch")
    config = card.to_config(IMAGES_PER_GPU=1, GPU_COUNT=1, MIXED_PRECISION=True)
    model = MaskRCNN("inference", config, tempfile.gettempdir())
    model.load_weights(str(path), by_name=True)
    return model


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def section_training(results: Results, steps: int) -> None:
    import tensorflow as tf

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from bench_training import StepTimer, make_dataset

    from mrcnn.model import MaskRCNN

    gpus = len(tf.config.list_physical_devices("GPU"))
    for count in sorted({1, gpus}):
        import tf_keras as keras

        keras.backend.clear_session()
        reset_peak()
        config = bench_config("resnet101", GPU_COUNT=count, IMAGES_PER_GPU=2, STEPS_PER_EPOCH=steps + 1)
        model = MaskRCNN("training", config, tempfile.mkdtemp(prefix="gpu_suite_train-"))
        timer = StepTimer()
        model.train(make_dataset(8), None, learning_rate=0.001, epochs=1, layers="heads", verbose=0,
                    custom_callbacks=[timer.callback], seed=0)
        step = statistics.median(timer.times[1:])
        results.add("training", backbone="resnet101", size=1024, gpus=count, images_per_gpu=2,
                    step_s=round(step, 3), images_per_s=round(config.BATCH_SIZE / step, 1),
                    first_step_s=round(timer.times[0], 1), peak_gpu0_mb=peak_mb())


def section_service(results: Results, requests_per_run: int, deadline: float) -> None:
    import tf_keras as keras

    from car_damage.model.card import ModelCard, card_path_for
    from mrcnn.model import MaskRCNN

    folder = Path(tempfile.mkdtemp(prefix="gpu_suite_model-"))
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    config = bench_config("resnet101", NAME="scratch", MIXED_PRECISION=True)
    model = MaskRCNN("inference", config, folder)
    weights = folder / "mask_cnn_scratch.h5"
    model.save_weights(str(weights))
    ModelCard.from_config(config, ["BG", "scratch"], "scratch", version="gpu-suite-random").save(
        card_path_for(weights))
    keras.backend.clear_session()
    for label, env in (("off", ["MAX_BATCH=1"]), ("on", ["MAX_BATCH=8", "BATCH_WAIT_MS=5"])):
        if time.monotonic() > deadline - 60:
            results.add("service", batching=label, skipped="time budget")
            continue
        out = folder / f"service_{label}.json"
        command = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_service.py"), "--model-dir", str(folder),
                   "--clients", "8,32", "--requests", str(requests_per_run), "--json", str(out),
                   "--env", "MODEL_SERVER_THREADS=32", *[arg for kv in env for arg in ("--env", kv)]]
        completed = subprocess.run(command, capture_output=True, text=True,
                                   timeout=max(30, deadline - time.monotonic()))
        if completed.returncode != 0 or not out.exists():
            results.add("service", batching=label, error=completed.stderr[-300:])
            continue
        for run in json.loads(out.read_text())["results"]:
            results.add("service", backbone="resnet101-mixed", batching=label, clients=run["clients"],
                        requests=run["requests"], errors=run["errors"], images_per_s=round(run["throughput_rps"], 1),
                        p50_ms=round(run["latency_p50_ms"], 1), p99_ms=round(run["latency_p99_ms"], 1),
                        target="service >= 80% of the engine's batched throughput")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=470, help="stop starting sections after this")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "gpu_suite_results.json")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--runs", type=int, default=10, help="timed detect() calls per latency row")
    parser.add_argument("--weights", help="trained .h5 (with sidecar) for the fp16-vs-fp32 comparison")
    parser.add_argument("--requests", type=int, default=96, help="requests per service run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    started = time.monotonic()
    deadline = started + args.budget_s
    names = gpu_names()
    if not names:
        print("gpu_suite: no GPU visible to TensorFlow on this machine; nothing measured (exit 0)")
        return 0
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    import tensorflow as tf

    results = Results(args.out, {"gpus": names, "tensorflow": tf.__version__, "host": os.uname().nodename})
    print(f"gpu_suite: {len(names)} GPU(s): {', '.join(names)}; results -> {args.out}", flush=True)
    runners = {
        "latency": lambda: section_latency(results, args.runs),
        "throughput": lambda: section_throughput(results, args.runs),
        "compare": lambda: section_compare(results, args.weights),
        "training": lambda: section_training(results, steps=5),
        "service": lambda: section_service(results, args.requests, deadline),
    }
    for name in sections:
        left = deadline - time.monotonic()
        if left < SECTION_MIN_S[name]:
            results.add(name, skipped=f"time budget ({left:.0f} s left, needs ~{SECTION_MIN_S[name]} s)")
            continue
        section_started = time.monotonic()
        try:
            runners[name]()
        except Exception as exc:  # noqa: BLE001 - one failing section must not lose the others' figures
            logger.exception("section %s failed", name)
            results.add(name, error=f"{type(exc).__name__}: {str(exc)[:300]}")
        print(f"gpu_suite: {name} took {time.monotonic() - section_started:.0f} s", flush=True)
    print(f"gpu_suite: done in {time.monotonic() - started:.0f} s; {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT / "model_code"))
    sys.exit(main())
