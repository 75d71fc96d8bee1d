"""Objective and search space for the MongoTrials baseline benchmark.

``MongoTrials`` pickles the objective into the database and workers unpickle
it, so it must live in a module the ``hyperopt-mongo-worker`` processes can
import by name (they get this folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any

from hyperopt import hp

#: Environment variable naming the worker that runs a trial.  Set per
#: ``hyperopt-mongo-worker`` so trials run in its per-job subprocesses are
#: attributed to the worker rather than to a short-lived child pid.
WORKER_ID_ENV = "MONGOTRIALS_BENCH_WORKER"

SPACE = {"x": hp.uniform("x", -5, 5), "y": hp.loguniform("y", -3, 0)}


def worker_id() -> str:
    """``host:<worker>`` from :data:`WORKER_ID_ENV`, else ``host:pid``."""
    return f"{socket.gethostname()}:{os.environ.get(WORKER_ID_ENV) or os.getpid()}"


def objective(params: dict[str, float], sleep_s: float) -> dict[str, Any]:
    """Sleep ``sleep_s`` seconds, return a cheap loss plus timing data."""
    t_start = time.time()
    time.sleep(sleep_s)
    loss = (params["x"] - 1.0) ** 2 + math.log(params["y"]) ** 2
    return {
        "loss": loss,
        "status": "ok",
        "t_start": t_start,
        "t_end": time.time(),
        "worker": worker_id(),
    }
