"""Day-to-day fleet operations: :func:`cluster_status`, :func:`stop_workers`,
:func:`stream_worker_logs` and :func:`read_trial_log`.

Status and stop run on every host at once and report per host (a host that cannot be
reached is reported as such, the others still answer). ``stop`` stops only workers
that provisioning started (the agent's records), never other processes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hyperopt import base

from broker.gpus import Gpu
from broker.store import TrialStore
from workers.provisioning.fleet import MAX_PARALLEL_HOSTS, FleetResult, run_parallel
from workers.provisioning.hosts import Host
from workers.provisioning.layout import slot_of
from workers.provisioning.remote import agent, detect_gpus, resolve_root
from workers.provisioning.ssh import DEFAULT_KNOWN_HOSTS, connect, quote


@dataclass
class WorkerState:
    """One provisioned worker as its host and MongoDB see it."""

    name: str
    slot: str
    gpu: str | None
    queue: str | None
    pid: int | None
    process_alive: bool
    log: str | None
    heartbeat_age_s: float | None = None
    trial: dict[str, Any] | None = None
    """The trial it runs: ``experiment``, ``exp_id``, ``tid``, ``running_s``."""
    pool_checked: bool = False
    """Whether MongoDB was asked (heartbeat and trial are known)."""
    lease_s: float = 15.0

    @property
    def state(self) -> str:
        """``busy``, ``idle``, ``starting`` (alive, not heartbeating yet), ``stale``
        (alive, heartbeat older than the lease), ``down``; ``alive`` when MongoDB was
        not asked."""
        if not self.process_alive:
            return "down"
        if not self.pool_checked:
            return "alive"
        if self.heartbeat_age_s is None:
            return "starting"
        if self.heartbeat_age_s > self.lease_s:
            return "stale"
        return "busy" if self.trial is not None else "idle"


@dataclass
class HostState:
    host: Host
    gpus: list[Gpu]
    workers: list[WorkerState]


@dataclass
class StopReport:
    host: Host
    stopped: list[str]
    not_running: list[str]


def cluster_status(hosts: Sequence[Host], *, known_hosts: Path = DEFAULT_KNOWN_HOSTS,
                   store: TrialStore | None = None, lease_s: float = 15.0,
                   parallel: int = MAX_PARALLEL_HOSTS) -> FleetResult[HostState]:
    """Per host: its GPUs and the workers provisioning started there (process alive?);
    with ``store``, each worker's heartbeat age and the trial it is running."""

    def one(host: Host) -> HostState:
        with connect(host, known_hosts=known_hosts) as remote:
            layout = resolve_root(remote)
            gpus = detect_gpus(remote)
            has_agent = remote.run(quote("test", "-x", layout.python), step="status",
                                   warn=True).exited == 0
            records = agent(remote, layout, "status", step="status")["workers"] \
                if has_agent else []
        return HostState(host, gpus, [
            WorkerState(name=r["name"], slot=r.get("slot") or slot_of(r.get("gpu")),
                        gpu=r.get("gpu"), queue=r.get("queue"), pid=r.get("pid"),
                        process_alive=bool(r.get("alive")), log=r.get("log"))
            for r in records])

    result = run_parallel(hosts, lambda h: h.name, one, parallel=parallel, step="status")
    if store is not None:
        _add_pool_view(result, store, lease_s)
    return result


def _add_pool_view(result: FleetResult[HostState], store: TrialStore, lease_s: float) -> None:
    workers = {w.name: w for s in result.succeeded.values() for w in s.workers}
    if not workers:
        return
    now = time.time()
    for doc in store.workers.find({"_id": {"$in": sorted(workers)}}):
        worker = workers[doc["_id"]]
        if doc.get("pid") == worker.pid and doc.get("heartbeat_at"):
            worker.heartbeat_age_s = max(0.0, now - doc["heartbeat_at"])
    running = list(store.trials.find(
        {"state": base.JOB_STATE_RUNNING, "worker": {"$in": sorted(workers)}},
        {"_id": 0, "exp_key": 1, "tid": 1, "worker": 1, "started_at": 1}))
    names: dict[str, str] = {}
    for doc in running:
        exp_id = doc["exp_key"]
        if exp_id not in names:
            experiment = store.experiment(exp_id) or {}
            names[exp_id] = experiment.get("name", exp_id)
        workers[doc["worker"]].trial = {
            "experiment": names[exp_id], "exp_id": exp_id, "tid": doc["tid"],
            "running_s": max(0.0, now - (doc.get("started_at") or now))}
    for worker in workers.values():
        worker.pool_checked, worker.lease_s = True, lease_s


def stop_workers(hosts: Sequence[Host], *, known_hosts: Path = DEFAULT_KNOWN_HOSTS,
                 names: dict[str, list[str]] | None = None,
                 parallel: int = MAX_PARALLEL_HOSTS) -> FleetResult[StopReport]:
    """Stop the workers provisioning started on ``hosts`` (with ``names``: only
    ``names[host]`` on each host). SIGTERM first: running trials are handed back to the
    queue at once, to be re-run by the workers that remain."""

    def one(host: Host) -> StopReport:
        with connect(host, known_hosts=known_hosts) as remote:
            layout = resolve_root(remote)
            if remote.run(quote("test", "-x", layout.python), step="stop",
                          warn=True).exited != 0:
                return StopReport(host, [], [])
            wanted = None if names is None else names.get(host.name, [])
            answer = agent(remote, layout, "stop", wanted, step="stop", timeout=300)
        return StopReport(host, answer["stopped"], answer["not_running"])

    return run_parallel(hosts, lambda h: h.name, one, parallel=parallel, step="stop")


def stream_worker_logs(host: Host, out: IO[str], *, gpu: str | None = None,
                       lines: int = 100, follow: bool = False,
                       known_hosts: Path = DEFAULT_KNOWN_HOSTS) -> int:
    """Write the host's worker logs (one GPU's with ``gpu``) to ``out``; with
    ``follow`` keep writing until interrupted. Returns ``tail``'s exit status."""
    with connect(host, known_hosts=known_hosts) as remote:
        layout = resolve_root(remote)
        files = quote(f"worker-{slot_of(gpu)}.log") if gpu is not None else "worker-*.log"
        command = (f"cd {quote(layout.logs)} && exec tail -n {int(lines)} "
                   f"{'-F ' if follow else ''}{files}")
        return remote.stream(command, out, step="logs")


def read_trial_log(host: Host, exp_id: str, tid: int, attempt: int, *,
                   known_hosts: Path = DEFAULT_KNOWN_HOSTS) -> bytes | None:
    """The full stdout/stderr of one run of a trial, kept by the worker that ran it
    (``<home>/state/logs/<exp_id>/<tid>.<attempt>.log``); ``None`` if it is gone."""
    with connect(host, known_hosts=known_hosts) as remote:
        layout = resolve_root(remote)
        return remote.read_bytes(layout.trial_log(exp_id, tid, attempt), step="logs")


def worker_of_attempt(doc: dict[str, Any], attempt: int) -> str | None:
    """The worker that ran run ``attempt`` of a trial (the current one, or a lost one
    from the trial's ``attempts`` history)."""
    if int(doc.get("attempt") or 0) == attempt:
        return doc.get("worker")
    for entry in doc.get("attempts") or []:
        if entry.get("attempt") == attempt:
            return entry.get("worker")
    return None
