"""gunicorn settings file (``serve`` passes it with ``--config``): a worker accepts only once its model is ready.

gunicorn calls ``post_worker_init`` in each worker after the app is built (``wsgi.py`` starts the model load on
a background thread) and before the worker's accept loop. Waiting here keeps a starting or respawned worker
off the shared socket until its model is loaded and warm (or has failed for good, so it can say why with 503
``model_load_failed``): the kernel hands every connection to a worker that can serve it, so after one worker
dies the healthy one takes all traffic and no caller sees ``model_not_ready`` from the replacement.

The first worker to get here touches ``<run dir>/READY_FILE_NAME``; until that file exists nginx itself answers
``/ping`` and ``/invocations`` with a JSON 503 (no worker accepts yet, so proxying would only queue them).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

# gunicorn reads this file before it applies --chdir: make the container's modules importable here too.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from predictor import ENV_RUN_DIR  # noqa: E402 - needs the path above

#: nginx.conf tests for this file (``serve`` renders its path into the config).
READY_FILE_NAME = "worker-ready"
#: How often the waiting worker tells the master it is alive (the master kills it after --timeout of silence).
HEARTBEAT_S = 1.0


def post_worker_init(worker: Any) -> None:
    """Block until the model slot of this worker's app has loaded (or failed), heart-beating meanwhile."""
    slot = worker.wsgi.extensions["model_slot"]
    started = time.monotonic()
    while slot.thread is not None and slot.thread.is_alive() and worker.alive:
        slot.thread.join(HEARTBEAT_S)
        worker.notify()
    if not worker.alive:
        return  # stopped while loading: gunicorn exits the worker without entering the accept loop
    run_dir = os.environ.get(ENV_RUN_DIR)
    if run_dir:
        Path(run_dir, READY_FILE_NAME).touch()
    state = "model ready" if slot.ready else "model failed to load: every request gets 503 model_load_failed"
    worker.log.info("worker %d accepting requests (%s; waited %.1f s)", os.getpid(), state,
                    time.monotonic() - started)
