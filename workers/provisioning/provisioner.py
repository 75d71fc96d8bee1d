"""Turn a list of SSH hosts into a pool of workers: :func:`provision`.

For every host, in parallel: connect (verified host key), prepare it (Python, venv,
project, workspace, requirements, GPUs: :mod:`workers.provisioning.remote`), then
start one worker per GPU pinned with ``CUDA_VISIBLE_DEVICES`` (``cpu_workers`` on a
host without GPUs), concurrency 1, on the queue of the host's machine type, each with
its log in ``<home>/logs/worker-<slot>.log``. With ``worker_count``, that many workers
in total are spread over the hosts' slots in turn. Finally it waits until every
started worker has announced itself in MongoDB, so "provisioned" means "in the pool".

Idempotent: a worker already running with the same project, workspace, settings and
command is left alone (``running``); one whose inputs changed is restarted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.errors import ConfigError
from broker.gpus import Gpu
from broker.names import queue_for
from broker.settings import ENV, Settings
from broker.store import LOOPBACK, TrialStore
from broker.store import connect as connect_store
from workers.provisioning import bundle, state
from workers.provisioning.errors import ProvisionError
from workers.provisioning.fleet import MAX_PARALLEL_HOSTS, FleetResult, run_parallel
from workers.provisioning.hosts import Host
from workers.provisioning.layout import slot_of, worker_name
from workers.provisioning.remote import Prepared, Workspace, agent, prepare, tail_file
from workers.provisioning.ssh import DEFAULT_KNOWN_HOSTS, connect

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 90.0
"""How long started workers get to announce themselves in MongoDB (seconds)."""

WORKER_SETTINGS = ("broker_url", "mongo_url", "mongo_db", "secret", "heartbeat_s", "lease_s",
                   "max_attempts", "visibility_timeout_s", "result_retry_s",
                   "allow_unauthenticated_mongo")
"""The settings a worker host receives in its ``worker.env``: how to reach the services
and how to behave; not this machine's paths, experiment or display options."""


@dataclass(frozen=True)
class ProvisionOptions:
    """How to provision. ``workspace`` is a local folder or ``git+URL[@REF]``."""

    workspace: str = "."
    machine_type: str | None = None
    worker_count: int | None = None
    worker_command: str | None = None
    cpu_workers: int = 1
    known_hosts: Path = DEFAULT_KNOWN_HOSTS
    trust_new_hosts: bool = False
    project: str | None = None
    pip_args: tuple[str, ...] = ()
    join_timeout_s: float = JOIN_TIMEOUT_S
    parallel: int = MAX_PARALLEL_HOSTS


@dataclass
class WorkerReport:
    """One worker after provisioning. ``action``: ``started``, ``restarted``,
    ``running`` (left alone: already up to date) or ``failed`` (with ``error``)."""

    name: str
    host: str
    slot: str
    gpu: str | None
    queue: str
    action: str
    pid: int | None = None
    log: str | None = None
    error: str | None = None

    @property
    def new(self) -> bool:
        return self.action in ("started", "restarted")


@dataclass
class HostReport:
    """What provisioning did on one host."""

    host: Host
    python: str
    gpus: list[Gpu]
    changed: list[str]
    workers: list[WorkerReport] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    """Workers started earlier by provisioning and still running, not asked for now."""

    @property
    def started(self) -> list[str]:
        return [w.name for w in self.workers if w.new]


def provision(hosts: Sequence[Host], settings: Settings,
              options: ProvisionOptions = ProvisionOptions()) -> FleetResult[HostReport]:
    """Provision ``hosts`` (in parallel); every host gets a :class:`HostReport` or the
    :class:`ProvisionError` that stopped it. ``settings`` must name services the hosts
    can reach (not the loopback local default); :class:`ConfigError` otherwise, before
    any host is touched. Records the outcome for ``cluster status/logs/stop``."""
    check_reachable(settings)
    settings.require_secret()
    project: bundle.Artifact | str = options.project or bundle.project_wheel()
    workspace = _workspace(options.workspace)
    store = connect_store(settings) if options.join_timeout_s > 0 else None
    try:
        known_hosts = options.known_hosts.expanduser()

        def prepare_one(host: Host) -> Prepared:
            with connect(host, known_hosts=known_hosts,
                         trust_new_hosts=options.trust_new_hosts) as remote:
                return prepare(remote, project=project, workspace=workspace,
                               env_text=_env_text(settings, host), pip_args=options.pip_args)

        prepared = run_parallel(hosts, lambda h: h.name, prepare_one,
                                parallel=options.parallel, step="prepare")
        plan = allocate({name: p for name, p in prepared.succeeded.items()},
                        options.worker_count, options.cpu_workers)
        by_name = {h.name: h for h in hosts}

        def start_one(name: str) -> HostReport:
            return _start(prepared[name], plan[name], settings, options, known_hosts)

        started = run_parallel(list(plan), lambda n: n, start_one, parallel=options.parallel,
                               step="workers")
        if store is not None:
            _wait_until_joined(started, store, settings, options, known_hosts)
        result: FleetResult[HostReport] = FleetResult()
        for host in hosts:
            outcome = prepared[host.name]
            if isinstance(outcome, BaseException):
                result[host.name] = outcome
            elif host.name in started:
                result[host.name] = started[host.name]
            else:  # prepared, but no worker was asked of it (--worker-count)
                result[host.name] = HostReport(host, outcome.python, outcome.gpus,
                                               outcome.changed)
        state.record_workers(
            settings.state_dir.expanduser(),
            {n: by_name[n] for n in prepared.succeeded},
            {n: [w.name for w in r.workers if w.action != "failed"] + r.others
             for n, r in _reports(result).items()},
            known_hosts_path=known_hosts)
        return result
    finally:
        if store is not None:
            store.close()


def check_reachable(settings: Settings) -> None:
    """:class:`ConfigError` unless the broker and MongoDB URLs name addresses other
    hosts can reach: workers on other machines cannot use this machine's loopback."""
    if settings.uses_local_default:
        raise ConfigError(
            f"a cluster needs services every host can reach: set {ENV['broker_url']}, "
            f"{ENV['mongo_url']} and {ENV['secret']} (ansible/site.yml deploys them)")
    for name in ("broker_url", "mongo_url"):
        url = getattr(settings, name) or ""
        hosts = url.split("://", 1)[-1].split("/", 1)[0].split("?")[0]
        for item in hosts.split(","):
            address = item.rsplit("@", 1)[-1].rsplit(":", 1)[0].strip("[]")
            if address in LOOPBACK:
                raise ConfigError(
                    f"{ENV[name]} points at {address}: workers on other hosts cannot reach "
                    "this machine's loopback; use an address of the cluster network")


def allocate(prepared: dict[str, Prepared], count: int | None,
             cpu_workers: int) -> dict[str, list[tuple[str, str | None]]]:
    """Which slots (``("gpu0", "0")``, ``("cpu0", None)``) to fill on each host.

    Without ``count``: every GPU, or ``cpu_workers`` (the host's ``tuner_cpu_workers``
    first) on hosts without GPUs. With ``count``: that many in total, taking one slot
    from each host in turn; hosts without GPUs and without a fixed ``tuner_cpu_workers``
    take as many CPU workers as it needs."""
    slots: dict[str, list[tuple[str, str | None]]] = {}
    elastic = []
    for name, p in prepared.items():
        if p.gpus:
            slots[name] = [(slot_of(g.index), g.index) for g in p.gpus]
        else:
            fixed = p.host.cpu_workers
            slots[name] = [(slot_of(None, i), None) for i in range(fixed or cpu_workers)]
            if fixed is None:
                elastic.append(name)
    if count is None:
        return slots
    plan: dict[str, list[tuple[str, str | None]]] = {name: [] for name in slots}
    remaining = count
    depth = 0
    while remaining > 0 and any(depth < len(s) for s in slots.values()):
        for name, host_slots in slots.items():
            if remaining and depth < len(host_slots):
                plan[name].append(host_slots[depth])
                remaining -= 1
        depth += 1
    while remaining > 0 and elastic:
        for name in elastic:
            if remaining:
                plan[name].append((slot_of(None, len(plan[name])), None))
                remaining -= 1
    if remaining:
        log.warning("only %d of %d workers fit on these hosts (one per GPU)", count - remaining,
                    count)
    return {name: chosen for name, chosen in plan.items() if chosen}


def _workspace(spec: str) -> Workspace:
    if spec.startswith("git+"):
        return Workspace.parse_git(spec)
    return Workspace(archive=bundle.workspace_archive(Path(spec)))


def _env_text(settings: Settings, host: Host) -> str:
    """``worker.env``: the services and behaviour settings, in a format both the agent
    and systemd's ``EnvironmentFile=`` read (``KEY="value"``)."""
    env = settings.to_env()
    lines = [f"# written by gpu-tuner provisioning for {host.name}; keep private"]
    for name in WORKER_SETTINGS:
        var = ENV[name]
        if var in env:
            value = env[var].replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{var}="{value}"')
    return "\n".join(lines) + "\n"


def _fingerprint(p: Prepared, env_text: str, **more: Any) -> str:
    data = {**p.fingerprints, "env": hashlib.sha256(env_text.encode()).hexdigest(), **more}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _start(p: Prepared, slots: list[tuple[str, str | None]], settings: Settings,
           options: ProvisionOptions, known_hosts: Path) -> HostReport:
    host = p.host
    machine_type = host.machine_type or options.machine_type or settings.machine_type
    queue = queue_for(machine_type)
    env_text = _env_text(settings, host)
    spec = {"workers": [
        {"name": worker_name(slot, host.name), "slot": slot, "gpu": gpu,
         "machine_type": machine_type, "queue": queue, "command": options.worker_command,
         "fingerprint": _fingerprint(p, env_text, machine_type=machine_type, gpu=gpu,
                                     command=options.worker_command)}
        for slot, gpu in slots]}
    with connect(host, known_hosts=known_hosts, trust_new_hosts=False) as remote:
        answer = agent(remote, p.layout, "start", spec, step="workers")
    report = HostReport(host, p.python, p.gpus, p.changed,
                        others=[w["name"] for w in answer.get("others", [])])
    for item in answer["workers"]:
        error = item.get("error")
        if error and item.get("log_tail"):
            error = f"{error}; log: {_last_lines(item['log_tail'])}"
        report.workers.append(WorkerReport(
            name=item["name"], host=host.name, slot=item.get("slot") or "",
            gpu=item.get("gpu"), queue=item.get("queue") or queue, action=item["action"],
            pid=item.get("pid"), log=item.get("log"), error=error))
    failed = [w for w in report.workers if w.action == "failed"]
    if failed:
        raise _workers_failed(host, report, failed)
    return report


def _wait_until_joined(started: FleetResult[HostReport], store: TrialStore,
                       settings: Settings, options: ProvisionOptions,
                       known_hosts: Path) -> None:
    """Wait until each worker heartbeats from the process that was started; a host
    whose worker does not is turned into a failure carrying the worker's log tail."""
    expected = {w.name: (name, w) for name, report in started.succeeded.items()
                for w in report.workers}
    deadline = time.monotonic() + options.join_timeout_s
    missing = set(expected)
    while missing and time.monotonic() < deadline:
        now = time.time()
        for doc in store.workers.find({"_id": {"$in": sorted(missing)}}):
            worker = expected[doc["_id"]][1]
            fresh = (doc.get("heartbeat_at") or 0) > now - settings.lease_s
            if fresh and doc.get("pid") == worker.pid:
                missing.discard(doc["_id"])
        if missing:
            time.sleep(0.5)
    by_host: dict[str, list[WorkerReport]] = {}
    for name in sorted(missing):
        host_name, worker = expected[name]
        worker.action, worker.error = "failed", (
            f"did not join the pool within {options.join_timeout_s:.0f} s")
        by_host.setdefault(host_name, []).append(worker)
    for host_name, workers in by_host.items():
        report = started[host_name]
        try:
            with connect(report.host, known_hosts=known_hosts) as remote:
                for worker in workers:
                    if worker.log:
                        worker.error += f"; log: {_last_lines(tail_file(remote, worker.log))}"
        except ProvisionError as exc:
            log.warning("cannot read the worker logs of %s: %s", host_name, exc)
        started[host_name] = _workers_failed(report.host, report, workers)


def _workers_failed(host: Host, report: HostReport,
                    failed: list[WorkerReport]) -> ProvisionError:
    names = ", ".join(f"{w.name} ({w.error})" for w in failed)
    error = ProvisionError(host.name, "workers", f"{len(failed)} worker(s) failed: {names}")
    error.report = report  # type: ignore[attr-defined]  # the host's other workers
    return error


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "(empty)"


def _reports(result: FleetResult[HostReport]) -> dict[str, HostReport]:
    """Reports, including those of hosts that failed at the worker stage."""
    out = {}
    for name, outcome in result.items():
        report = getattr(outcome, "report", None) if isinstance(outcome, BaseException) \
            else outcome
        if isinstance(report, HostReport):
            out[name] = report
    return out


def started_workers(result: FleetResult[HostReport]) -> dict[str, list[str]]:
    """Host name -> the workers this provisioning started (to stop them afterwards)."""
    return {name: r.started for name, r in _reports(result).items() if r.started}


def all_workers(result: FleetResult[HostReport]) -> Iterable[WorkerReport]:
    for report in _reports(result).values():
        yield from report.workers
