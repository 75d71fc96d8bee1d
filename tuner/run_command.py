"""``hyperparameters run``: the hosted product's experiment, on your own machines.

Starts what is missing (local services, ``--worker-count`` workers on this machine,
or workers provisioned on SSH hosts through ``remote_workers``), creates or resumes
the experiment, runs the user's tuning command with the connection settings
in its environment (the command's ``hyper_tune`` is the tuner), shows live progress
read from MongoDB, prints the best parameters, stops what it started, and returns the
tuning command's exit status.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass

from rich.console import Console

from broker.errors import ServiceError
from broker.notify import check_broker
from broker.services import LocalServices, resolve
from broker.settings import Settings
from broker.store import TrialStore, connect
from broker.trial_doc import TrialState
from tuner.local import LocalWorkers, child_env, stop_groups
from tuner.progress import ProgressView, Snapshot
from tuner.report import flatten

POLL_S = 0.5


@dataclass(frozen=True)
class RunRequest:
    """One ``hyperparameters run``: ``worker_count`` workers on this machine (0: use
    those already serving the queue), started with ``worker_command``; or, with
    ``remote_workers``, a context manager (given the resolved settings) that provides
    workers elsewhere for the run, yields how many, and cleans up on exit."""

    name: str
    tuning_command: str
    worker_count: int
    worker_command: str | None = None
    remote_workers: Callable[[Settings], AbstractContextManager[int]] | None = None


def run_experiment(request: RunRequest, settings: Settings, console: Console) -> int:
    with ExitStack() as stack:
        resolved, started = resolve(settings, start=True)
        if started:
            stack.callback(LocalServices(settings.state_dir).down, started)
        check_broker(resolved.broker_url or "")
        store = connect(resolved)
        stack.callback(store.close)
        doc, created = store.create_experiment(request.name, {
            "queue": resolved.queue, "tuning_command": request.tuning_command,
            "max_evals": resolved.max_evals})
        verb = "created" if created else "resumed"
        console.print(f"Hyperparameter {verb} with ID: {doc['_id']} and started")
        workers = None
        if request.remote_workers is not None:
            stack.enter_context(request.remote_workers(resolved))
        elif request.worker_count > 0:
            workers = stack.enter_context(LocalWorkers(resolved, count=request.worker_count,
                                                       command=request.worker_command))
        env = {**child_env(resolved), "TUNER_PROGRESS": "0",
               "TUNER_EXPERIMENT": request.name, "EXPERIMENT_NAME": request.name}
        if workers is not None and resolved.parallelism is None:
            env["TUNER_PARALLELISM"] = str(request.worker_count)
        status = _run_tuning_command(request, env, resolved, store, doc["_id"], console,
                                     workers)
        _print_best(store, doc["_id"], console)
        return status


def _run_tuning_command(request: RunRequest, env: dict[str, str], settings: Settings,
                        store: TrialStore, exp_id: str, console: Console,
                        workers: LocalWorkers | None) -> int:
    process = subprocess.Popen(  # its own group: stopping it stops what its shell started
        request.tuning_command, shell=True, cwd=settings.workspace, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert process.stdout is not None
    reader = threading.Thread(target=_forward, args=(process.stdout, console), daemon=True)
    reader.start()
    try:
        with ProgressView(request.name, enabled=settings.progress, console=console) as view:
            while process.poll() is None:
                view.update(_snapshot(store, exp_id, settings))
                if workers is not None:
                    workers.check()
                time.sleep(POLL_S)
            view.update(_snapshot(store, exp_id, settings))
    except (KeyboardInterrupt, ServiceError) as exc:
        stop_groups([process])
        if isinstance(exc, ServiceError):
            console.print(exc.log, markup=False, highlight=False, soft_wrap=True)
        raise
    reader.join(timeout=5)
    return process.returncode


def _forward(stream: object, console: Console) -> None:
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        console.print(raw.decode(errors="replace").rstrip("\n"), markup=False,
                      highlight=False, soft_wrap=True)


def _snapshot(store: TrialStore, exp_id: str, settings: Settings) -> Snapshot:
    counts = store.count_by_state(exp_id)
    doc = store.experiment(exp_id) or {}
    best = store.best_trial(exp_id)
    workers = store.alive_workers(settings.queue, now=time.time(), lease_s=settings.lease_s)
    return Snapshot(
        finished=counts[TrialState.OK] + counts[TrialState.FAIL],
        max_evals=doc.get("max_evals") or settings.max_evals or 0,
        best_loss=None if best is None else best["result"]["loss"],
        running=counts[TrialState.RUNNING],
        queued=counts[TrialState.QUEUED],
        failed=counts[TrialState.FAIL],
        workers=len(workers),
    )


def _print_best(store: TrialStore, exp_id: str, console: Console) -> None:
    best = store.best_trial(exp_id)
    if best is None:
        console.print("No successful trial.")
        return
    console.print(f"Best trial {best['tid']}: loss {best['result']['loss']:.6g}")
    for key, value in flatten(best.get("params") or {}).items():
        console.print(f"  {key} = {value!r}", markup=False, highlight=False, soft_wrap=True)
