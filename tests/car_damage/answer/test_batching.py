"""Micro-batching: concurrent requests share one detect() call and get the answers they would get alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from car_damage.answer.batching import BatchSettings, MicroBatcher, batch_sizes_to_warm
from car_damage.answer.predictor import DamagePredictor

#: Different sizes and aspect ratios: molding pads them all to the model's 128 x 128 square.
SIZES = [(96, 128), (128, 128), (60, 90), (128, 40), (77, 101), (100, 100), (50, 120), (128, 96)]


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth picture with a bright blob (so the detector's answers are not all noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = (60 + 40 * np.sin(x / 9.0 + seed) + 30 * np.cos(y / 7.0))[..., None] + rng.normal(0, 4, (height, width, 3))
    cy, cx = rng.integers(10, height - 10), rng.integers(10, width - 10)
    base[(y - cy) ** 2 + (x - cx) ** 2 < (min(height, width) // 5) ** 2] = 220
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def unbatched(tiny_model_dir) -> DamagePredictor:
    return DamagePredictor.from_model_dir(tiny_model_dir, warmup=True)


@pytest.fixture(scope="module")
def batched(tiny_model_dir):
    predictor = DamagePredictor.from_model_dir(tiny_model_dir, warmup=True,
                                               batching=BatchSettings(max_batch=4, wait_ms=200))
    yield predictor
    predictor.close()


def _assert_same_answer(many: dict, one: dict) -> None:
    """The same damages in the same order. Float32 kernels sum in another order for a batch of four than for
    one image, so a mask pixel right at the 0.5 threshold may flip: boxes within 1 px, scores within 2e-4 (two
    roundings to 4 decimals) and areas within 1% are the same answer (the rest of the response derives from
    these)."""
    assert many["damage_count"] == one["damage_count"]
    for a, b in zip(many["damages"], one["damages"], strict=True):
        assert (a["type"], a["class_name"]) == (b["type"], b["class_name"])
        assert a["score"] == pytest.approx(b["score"], abs=2e-4)  # scores are rounded to 4 decimals
        assert all(abs(a["bbox"][k] - b["bbox"][k]) <= 1 for k in b["bbox"])
        assert a["area_px"] == pytest.approx(b["area_px"], rel=0.01, abs=2)


def test_batching_answers_equal_one_by_one_answers(unbatched, batched) -> None:
    images = [_photo(h, w, seed) for seed, (h, w) in enumerate(SIZES)]
    alone = [unbatched.predict(image) for image in images]
    assert sum(r["damage_count"] for r in alone) > 0  # the comparison covers real detections
    start = threading.Barrier(len(images))

    def concurrent(image: np.ndarray) -> dict:
        start.wait()  # all eight arrive together: two batches of four
        return batched.predict(image)

    batcher = batched._batchers["scratch"]
    before = len(batcher.batch_sizes)
    with ThreadPoolExecutor(len(images)) as pool:
        together = list(pool.map(concurrent, images))
    sizes = batcher.batch_sizes[before:]
    assert max(sizes) > 1 and sum(sizes) == len(images) and max(sizes) <= 4
    exact = 0
    for one, many in zip(alone, together, strict=True):
        _assert_same_answer(many, one)
        exact += [d["area_px"] for d in many["damages"]] == [d["area_px"] for d in one["damages"]]
    assert exact >= len(images) // 2  # most answers are identical to the pixel


def test_batching_reports_queue_and_batch_model_time(batched) -> None:
    image = _photo(96, 128, 1)
    started = time.perf_counter()
    response = batched.predict(image)
    elapsed_ms = (time.perf_counter() - started) * 1000
    timings = response["timings_ms"]
    # Alone, the image waits the whole 200 ms window for company before its batch of one runs.
    assert 190 <= timings["queue"] <= elapsed_ms
    assert 0 < timings["inference"] < elapsed_ms
    assert timings["total"] >= timings["queue"] + timings["inference"]


def test_batching_warmup_traces_every_batch_size(batched) -> None:
    runner = batched.models[0].model._runner
    traces = runner._run.experimental_get_tracing_count()
    for size in batch_sizes_to_warm(batched.batching):
        batched.models[0].model.detect_batch([_photo(70, 90, 3)] * size)
    assert runner._run.experimental_get_tracing_count() == traces  # no request pays for tracing


def test_batching_off_is_the_direct_path(unbatched) -> None:
    assert not unbatched.batching.enabled and unbatched._batchers == {}
    assert batch_sizes_to_warm(BatchSettings(3, 1)) == [1, 2, 3]


def test_batching_gathers_up_to_max_batch_and_fans_results_out() -> None:
    seen: list[list[int]] = []
    gate = threading.Event()

    def detect_batch(images):  # a model that doubles its input's first pixel: each caller must get its own
        gate.wait(5)
        seen.append([int(image[0, 0, 0]) for image in images])
        return [{"value": np.array(2 * int(image[0, 0, 0]))} for image in images]

    batcher = MicroBatcher(detect_batch, BatchSettings(max_batch=3, wait_ms=50), name="double")
    try:
        with ThreadPoolExecutor(7) as pool:
            futures = [pool.submit(batcher.detect, np.full((2, 2, 3), i, np.uint8)) for i in range(7)]
            time.sleep(0.3)
            gate.set()
            results = [f.result(10) for f in futures]
    finally:
        batcher.close()
    assert [int(r.result["value"]) for r in results] == [2 * i for i in range(7)]
    assert sorted(sum(seen, [])) == list(range(7))
    assert all(len(batch) <= 3 for batch in seen) and len(seen) >= 3
    assert all(r.batch_size == len(next(b for b in seen if int(r.result["value"]) // 2 in b)) for r in results)


def test_batching_model_error_reaches_every_request_of_the_batch() -> None:
    def broken(images):
        raise RuntimeError("out of GPU memory")

    batcher = MicroBatcher(broken, BatchSettings(max_batch=4, wait_ms=100), name="broken")
    try:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(batcher.detect, np.zeros((2, 2, 3), np.uint8)) for _ in range(3)]
            for future in futures:
                with pytest.raises(RuntimeError, match="out of GPU memory"):
                    future.result(10)
    finally:
        batcher.close()


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"max_batch": 2.5}, {"wait_ms": -1}])
def test_batching_settings_are_checked(kwargs) -> None:
    with pytest.raises(ValueError):
        BatchSettings(**kwargs)
    with pytest.raises(ValueError, match="max_batch >= 2"):
        MicroBatcher(lambda images: [], BatchSettings(1, 0))
