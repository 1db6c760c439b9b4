"""gunicorn entry point (``wsgi:app``): one app per worker, the model loading on a background thread.

gunicorn imports this module in each worker after the fork (``serve`` never passes ``--preload``), so CUDA is
initialised per worker, never in the master. Importing stays cheap: TensorFlow is imported by the loader
thread, which lets ``/ping`` answer 503 at once while the model loads and warms up, then 200.

With several GPUs (``serve`` exports their ids in ``SERVE_GPU_DEVICES``) each worker claims one device by
holding an exclusive lock on ``<run dir>/gpu-<i>.lock`` and pins itself to it with ``CUDA_VISIBLE_DEVICES``
before TensorFlow is imported; a respawned worker takes over the lock its dead predecessor released.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from predictor import (
    DEFAULT_MODEL_DIR,
    ENV_GPU_DEVICES,
    ENV_MODEL_DIR,
    ENV_RUN_DIR,
    ServiceSettings,
    configure_logging,
    create_app,
)

logger = logging.getLogger("container.wsgi")
_gpu_lock_file = None  # held open for the worker's lifetime: the lock is the claim


def claim_gpu(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """Pin this worker to a free GPU from ``SERVE_GPU_DEVICES`` (only when there are several)."""
    global _gpu_lock_file
    devices = [d for d in environ.get(ENV_GPU_DEVICES, "").split(",") if d.strip()]
    run_dir = environ.get(ENV_RUN_DIR)
    if len(devices) < 2 or not run_dir:
        return None
    for index, device in enumerate(devices):
        handle = open(Path(run_dir) / f"gpu-{index}.lock", "w")  # noqa: SIM115 - must stay open
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _gpu_lock_file = handle
        environ["CUDA_VISIBLE_DEVICES"] = device.strip()
        logger.info("worker %d pinned to GPU %s", os.getpid(), device.strip())
        return device.strip()
    logger.warning("more workers than GPUs (%d): worker %d shares all of them", len(devices), os.getpid())
    return None


def load_predictor():
    """Build every model in MODEL_DIR and warm it up (runs on the loader thread)."""
    from car_damage.answer.batching import BatchSettings
    from car_damage.answer.predictor import DamagePredictor  # imports TensorFlow: keep it off the import path

    model_dir = os.environ.get(ENV_MODEL_DIR, DEFAULT_MODEL_DIR)
    logger.info("loading models from %s", model_dir)
    batching = BatchSettings(settings.max_batch, float(settings.batch_wait_ms))
    return DamagePredictor.from_model_dir(model_dir, warmup=True, batching=batching)


configure_logging()
claim_gpu()
settings = ServiceSettings.from_env()
app = create_app(loader=load_predictor, settings=settings)
