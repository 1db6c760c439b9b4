"""Micro-batching: concurrent requests of one worker share one detect() call on the accelerator.

One ``MicroBatcher`` per model. Request threads ``detect(image)``; a single batching thread takes the first
waiting image, gathers more until it holds ``max_batch`` images or ``wait_ms`` have passed since the first
arrived, runs the model once on all of them (molding pads every image to the same square, so photos of
different sizes batch together) and hands each request its own result. Images that arrive while a batch
runs wait for the next one, so under load batches fill without waiting at all.

Each result carries what the response reports: ``queue_ms`` (arrival to the start of its batch's model call:
the wait for the batch to fill and for the batch before it) and ``inference_ms`` (the batch's model call).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

#: Images per batch on a GPU by default, and how long the first image waits for others (milliseconds).
GPU_DEFAULT_MAX_BATCH = 8
GPU_DEFAULT_WAIT_MS = 5
#: A request is never left waiting longer than this for its batch's answer (a stuck model fails it instead).
RESULT_TIMEOUT_S = 600.0

DetectBatch = Callable[[Sequence[np.ndarray]], list[dict[str, np.ndarray]]]


@dataclass(frozen=True)
class BatchSettings:
    """``max_batch`` 1 means off: every request calls the model by itself, as without a batcher."""

    max_batch: int = 1
    wait_ms: float = 0.0

    def __post_init__(self) -> None:
        if int(self.max_batch) != self.max_batch or self.max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {self.max_batch!r}")
        if not 0.0 <= self.wait_ms <= 10_000:
            raise ValueError(f"wait_ms must be between 0 and 10000, got {self.wait_ms!r}")

    @property
    def enabled(self) -> bool:
        return self.max_batch > 1


@dataclass
class BatchedDetection:
    """One request's share of a batch."""

    result: dict[str, np.ndarray]
    queue_ms: float
    inference_ms: float
    batch_size: int


@dataclass
class _Pending:
    image: np.ndarray
    arrived: float
    future: Future


class MicroBatcher:
    """Gathers concurrent ``detect`` calls into batches for ``detect_batch`` (see the module docstring)."""

    def __init__(self, detect_batch: DetectBatch, settings: BatchSettings, name: str = "model") -> None:
        if not settings.enabled:
            raise ValueError("a MicroBatcher needs max_batch >= 2 (1 means: call the model directly)")
        self._detect_batch = detect_batch
        self.settings = settings
        self.name = name
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._closed = threading.Event()
        self.batch_sizes: list[int] = []  # every batch run so far (tests and benchmarks read it)
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def detect(self, image: np.ndarray) -> BatchedDetection:
        """Detect in one image, batched with whatever else arrives; raises what the model call raised."""
        if self._closed.is_set():
            raise RuntimeError(f"the batcher of {self.name} is closed")
        pending = _Pending(image, time.perf_counter(), Future())
        self._queue.put(pending)
        return pending.future.result(timeout=RESULT_TIMEOUT_S)

    def _gather(self, first: _Pending) -> list[_Pending]:
        batch = [first]
        deadline = first.arrived + self.settings.wait_ms / 1000.0
        while len(batch) < self.settings.max_batch:
            try:  # whatever queued up while the previous batch ran is taken at once
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is None:
                self._queue.put(None)  # keep the stop signal for the loop
                break
            batch.append(item)
        return batch

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._gather(first)
            started = time.perf_counter()
            try:
                results = self._detect_batch([item.image for item in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"detect_batch returned {len(results)} results for {len(batch)} images")
            except BaseException as exc:  # noqa: BLE001 - every waiting request must get the error
                logger.exception("batch of %d on %s failed", len(batch), self.name)
                for item in batch:
                    item.future.set_exception(exc)
                continue
            inference_ms = (time.perf_counter() - started) * 1000.0
            self.batch_sizes.append(len(batch))
            for item, result in zip(batch, results, strict=True):
                item.future.set_result(BatchedDetection(result, (started - item.arrived) * 1000.0, inference_ms,
                                                        len(batch)))

    def close(self) -> None:
        """Stop the batching thread after the batches already queued."""
        self._closed.set()
        self._queue.put(None)
        self._thread.join(timeout=30)


def batch_sizes_to_warm(settings: BatchSettings) -> list[int]:
    """Every batch size the batcher can form (1..max_batch): each gets a traced/compiled graph at warm-up."""
    return list(range(1, int(settings.max_batch) + 1))

