"""Finding things from this machine: which hosts a command is about, and where the
full log of a trial's run is.

Hosts come from an Ansible inventory, from ``--hosts`` (names of hosts provisioned from
here, or new addresses), else from the cluster last provisioned from here
(:mod:`workers.provisioning.state`). A trial's log is kept by the worker that ran it:
under this machine's state folder for local workers, on its host for provisioned ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.errors import TunerError
from workers.provisioning import state
from workers.provisioning.hosts import Host, load_inventory, parse_hosts, with_defaults
from workers.provisioning.operations import read_trial_log, worker_of_attempt


@dataclass(frozen=True)
class HostQuery:
    """What a user named: ``hosts`` (comma-separated), ``inventory`` (a path), and the
    defaults for what neither says (SSH user, key, port; interpreter, folder)."""

    hosts: str | None = None
    inventory: str | None = None
    user: str | None = None
    key: str | None = None
    port: int | None = None
    python: str | None = None
    remote_dir: str | None = None
    system_site_packages: bool | None = None


def select_hosts(query: HostQuery, state_dir: Path, *, required: bool = False) -> list[Host]:
    """The hosts ``query`` names (with ``inventory``: its hosts, those of ``hosts`` only
    when both are given), else every host provisioned from here; with ``required``, a
    :class:`TunerError` when the query names none."""
    if query.inventory:
        hosts = load_inventory(Path(query.inventory), user=query.user, key_filename=query.key)
        if query.hosts:
            wanted = [h.strip() for h in query.hosts.split(",") if h.strip()]
            hosts = [h for h in hosts if h.name in wanted]
    elif query.hosts:
        recorded = state.load(state_dir)["hosts"]
        hosts = []
        for item in (h.strip() for h in query.hosts.split(",")):
            if item in recorded:
                hosts += state.hosts(state_dir, [item])
            elif item:
                hosts += parse_hosts(item, user=query.user, key_filename=query.key,
                                     port=query.port)
    elif required:
        raise TunerError("name the hosts: --hosts gpu1,gpu2 or --inventory hosts.yml")
    else:
        hosts = state.hosts(state_dir)
    return with_defaults(hosts, python=query.python, remote_dir=query.remote_dir,
                         system_site_packages=query.system_site_packages)


def trial_log(doc: dict[str, Any], attempt: int | None, state_dir: Path, *,
              known_hosts: Path) -> tuple[str, str | None]:
    """The full stdout/stderr of run ``attempt`` (default: the last) of the trial
    ``doc``, and ``None``; or the tail kept in the trial and why the full log could not
    be read. :class:`TunerError` for a run the trial never had."""
    exp_id, tid = doc["exp_key"], int(doc["tid"])
    runs = int(doc.get("attempt") or 0)
    attempt = attempt or runs
    tail = doc.get("log_tail") or ""
    if runs < 1:
        return "", "the trial has not run yet"
    if not 1 <= attempt <= runs:
        raise TunerError(f"trial {tid} has no run {attempt} (it ran {runs} time(s))")
    local = state_dir / "logs" / exp_id / f"{tid}.{attempt}.log"
    if local.is_file():
        return local.read_text(errors="replace"), None
    worker = worker_of_attempt(doc, attempt)
    host_name = state.workers_of(state_dir).get(worker or "")
    if host_name is None and worker and "@" in worker:
        candidate = worker.rsplit("@", 1)[1]
        host_name = candidate if candidate in state.load(state_dir)["hosts"] else None
    if host_name is None:
        return tail, (f"run {attempt} ran on {worker or 'an unknown worker'}, which is neither "
                      "a local worker nor part of the cluster provisioned from here: showing "
                      "the tail kept in the trial")
    (host,) = state.hosts(state_dir, [host_name])
    data = read_trial_log(host, exp_id, tid, attempt, known_hosts=known_hosts)
    if data is None:
        return tail, f"the log of run {attempt} is gone from {host_name}: showing the kept tail"
    return data.decode(errors="replace"), None
