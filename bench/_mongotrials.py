"""Baseline: one Hyperopt ``fmin`` run on ``MongoTrials`` + ``hyperopt-mongo-worker``.

This is what users would run instead of our system, measured the same way
(see :mod:`_measure`).  Two things are needed to run it at all today:

* Hyperopt 0.3.0's ``mongoexp`` calls PyMongo 3 methods that PyMongo 4
  removed, and PyMongo 3 cannot talk to current servers, so the driver and
  workers load the shim in :mod:`_mongo_compat` (Hyperopt stays untouched).
* ``MongoTrials(exp_key=...)`` hangs on nx-27017, whose GridFS drops the extra
  ``exp_key`` field of the pickled domain's file document, so every run uses a
  fresh database instead of an ``exp_key``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import _mongo_compat
import _mongotrials_objective as objective_module
import numpy as np
import pymongo
from _measure import Interval
from hyperopt import fmin, rand, tpe
from hyperopt.mongoexp import MongoTrials

_BENCH_DIR = Path(__file__).resolve().parent
_COMPAT_DIR = _BENCH_DIR / "_mongo_compat"
_ALGOS = {"rand": rand.suggest, "tpe": tpe.suggest}
_JOBS_COLLECTION = "jobs"
#: What ``hyperopt-mongo-worker`` logs each time it polls an empty queue.
_IDLE_LOG_LINE = "no job found"
_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 10.0


def run_mongotrials(
    mongo_url: str,
    *,
    n_trials: int,
    sleep_s: float,
    n_workers: int = 2,
    tuned: bool = False,
    algo: str = "rand",
    workdir: Path,
    max_queue_len: int = 2,
    seed: int | None = None,
) -> dict[str, Any]:
    """Run ``n_trials`` trials through MongoTrials and measure them.

    ``mongo_url`` is ``[mongodb://]host:port`` of the server.  ``tuned=False``
    runs the workers with Hyperopt's defaults (poll interval 5 s, one
    subprocess per job); ``tuned=True`` with ``--poll-interval=0.1
    --no-subprocesses``.  ``max_queue_len`` applies to both: 2 is what the
    reference measurements call "queue 2" (``fmin``'s own default is 1).
    ``workdir`` receives the workers' job directory and logs.

    Returns ``trials_per_s`` and ``wall_s`` (the ``fmin`` call only),
    ``n_results`` (trials with status ok in the database) and ``intervals``
    (``(worker, t_start, t_end)`` per ok trial).  The database is dropped
    afterwards.
    """
    if algo not in _ALGOS:
        raise ValueError(f"algo must be one of {sorted(_ALGOS)}, got {algo!r}")
    _mongo_compat.install()
    host_port = _host_port(mongo_url)
    db_name = f"mt_{uuid.uuid4().hex}"
    workdir.mkdir(parents=True, exist_ok=True)
    argv = _worker_argv(f"{host_port}/{db_name}", tuned=tuned, workdir=workdir)
    with _running_workers(argv, n_workers, workdir):
        wall_s = _timed_fmin(
            f"mongo://{host_port}/{db_name}/{_JOBS_COLLECTION}",
            algo=algo,
            n_trials=n_trials,
            sleep_s=sleep_s,
            max_queue_len=max_queue_len,
            seed=seed,
        )
    intervals = _collect_intervals(host_port, db_name)
    return {
        "trials_per_s": n_trials / wall_s,
        "wall_s": wall_s,
        "n_results": len(intervals),
        "intervals": intervals,
    }


def _host_port(mongo_url: str) -> str:
    """``host:port`` from ``mongodb://host:port``, ``mongo://…`` or ``host:port``.

    Hyperopt's URL parser needs an explicit port and supports no options.
    """
    parts = urlsplit(mongo_url if "//" in mongo_url else f"//{mongo_url}")
    if parts.port is None or parts.path.strip("/") or parts.query or parts.username:
        raise ValueError(f"expected [mongodb://]host:port, got {mongo_url!r}")
    return f"{parts.hostname}:{parts.port}"


def _worker_argv(mongo: str, *, tuned: bool, workdir: Path) -> list[str]:
    """Command line of one ``hyperopt-mongo-worker`` (``mongo`` is host:port/db).

    After an empty poll the worker sleeps ``1 + U(0, 1) * (N - 1)`` s for
    ``--poll-interval=N``: 1–5 s by default, and 0.1–1 s for ``N = 0.1``.
    """
    argv = [_worker_executable(), f"--mongo={mongo}", f"--workdir={workdir / 'jobs'}"]
    if tuned:
        argv += ["--poll-interval=0.1", "--no-subprocesses"]
    return argv


def _worker_executable() -> str:
    """The ``hyperopt-mongo-worker`` script of this interpreter's environment."""
    sibling = Path(sys.executable).with_name("hyperopt-mongo-worker")
    found = str(sibling) if sibling.exists() else shutil.which("hyperopt-mongo-worker")
    if found is None:
        raise FileNotFoundError("hyperopt-mongo-worker is not installed")
    return found


def _worker_env(worker_id: str) -> dict[str, str]:
    """Environment that loads the PyMongo shim and finds the objective."""
    path = [str(_COMPAT_DIR), str(_BENCH_DIR)]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(path),
        objective_module.WORKER_ID_ENV: worker_id,
    }


@contextmanager
def _running_workers(argv: list[str], n_workers: int, workdir: Path) -> Iterator[None]:
    """Start ``n_workers`` workers, wait until each polls, stop them all on exit.

    Each worker leads its own process group, so stopping it also reaches the
    per-job subprocess it may have started.
    """
    with ExitStack() as stack:
        procs: list[subprocess.Popen[bytes]] = []
        stack.callback(_stop_workers, procs)
        logs = [workdir / f"worker-{i}.log" for i in range(n_workers)]
        for i, log in enumerate(logs):
            out = stack.enter_context(log.open("wb"))
            procs.append(
                subprocess.Popen(
                    argv,
                    cwd=workdir,
                    env=_worker_env(f"mongo-worker-{i}"),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        for proc, log in zip(procs, logs, strict=True):
            _wait_until_polling(proc, log)
        yield


def _wait_until_polling(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Block until the worker has polled the (still empty) queue once.

    Fails fast, with the log's tail, if the worker dies or never gets there,
    instead of letting ``fmin`` wait forever for results.
    """
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while _IDLE_LOG_LINE not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"hyperopt-mongo-worker did not start polling; {log}:\n{tail}")
        time.sleep(0.05)


def _stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each worker's process group, SIGKILL what is left after a grace period."""
    for proc in procs:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    for proc in procs:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _timed_fmin(
    trials_url: str,
    *,
    algo: str,
    n_trials: int,
    sleep_s: float,
    max_queue_len: int,
    seed: int | None,
) -> float:
    """Seconds taken by one ``fmin`` call on a new ``MongoTrials`` at ``trials_url``."""
    trials = MongoTrials(trials_url)
    try:
        _seed_trial_ids(trials)
        start = time.perf_counter()
        fmin(
            partial(objective_module.objective, sleep_s=sleep_s),
            objective_module.SPACE,
            algo=_ALGOS[algo],
            max_evals=n_trials,
            trials=trials,
            max_queue_len=max_queue_len,
            rstate=np.random.default_rng(seed),
            show_progressbar=False,
        )
        return time.perf_counter() - start
    finally:
        trials.handle.conn.close()


def _seed_trial_ids(trials: MongoTrials) -> None:
    """Create the trial-id counter that ``MongoTrials.new_trial_ids`` increments.

    On a database without it, Hyperopt's first upsert returns nothing and it
    sleeps 1 s before retrying: a cost of our fresh-database-per-run
    workaround (an ``exp_key`` run in a used database would not pay it), so
    it is paid here, before the clock starts.
    """
    trials.handle.db.job_ids.insert_one({"a": 0, "last_id": 0})


def _collect_intervals(host_port: str, db_name: str) -> list[Interval]:
    """``(worker, t_start, t_end)`` of every ok trial, then drop the database."""
    with pymongo.MongoClient(f"mongodb://{host_port}") as client:
        docs = client[db_name][_JOBS_COLLECTION].find(
            {"result.status": "ok"}, projection={"result": True}
        )
        intervals = [
            (d["result"]["worker"], d["result"]["t_start"], d["result"]["t_end"]) for d in docs
        ]
        client.drop_database(db_name)
    return intervals
