"""This machine's memory of the cluster: which hosts were provisioned, how to reach
them, and which workers run there.

Kept in ``<state_dir>/cluster.json`` (``./.tuner`` by default, mode 0600), so that
``cluster status``, ``cluster logs``, ``cluster stop`` and ``experiments logs`` work
without repeating ``--hosts``. It holds no secrets: connection settings are in each
host's ``worker.env``, keys stay where the user keeps them (only their paths are here).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workers.provisioning.errors import InventoryError
from workers.provisioning.hosts import Host

FILENAME = "cluster.json"


@contextmanager
def _edit(state_dir: Path) -> Iterator[dict[str, Any]]:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / FILENAME
    with open(state_dir / "cluster.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _read(path)
        yield data
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"hosts": {}}
    except (OSError, ValueError) as exc:
        raise InventoryError(f"cannot read the cluster state: {exc}", source=str(path)) from None
    data.setdefault("hosts", {})
    return data


def load(state_dir: Path) -> dict[str, Any]:
    """The recorded cluster: ``{"known_hosts": path, "hosts": {name: {"host": ...,
    "workers": [names]}}}`` (empty when nothing was provisioned from here)."""
    return _read(state_dir / FILENAME)


def known_hosts(state_dir: Path) -> str | None:
    return load(state_dir).get("known_hosts")


def hosts(state_dir: Path, names: Iterable[str] | None = None) -> list[Host]:
    """The recorded hosts (those named, in that order); :class:`InventoryError` for a
    name that was never provisioned from here, or when none was."""
    recorded = load(state_dir)["hosts"]
    if not recorded:
        raise InventoryError("no cluster was provisioned from here: pass --hosts or "
                             "--inventory", source=str(state_dir / FILENAME))
    if names is None:
        return [Host.from_json(entry["host"]) for entry in recorded.values()]
    out = []
    for name in names:
        if name not in recorded:
            raise InventoryError(f"host {name} is not part of the cluster (known: "
                                 f"{', '.join(recorded)})", source=str(state_dir / FILENAME))
        out.append(Host.from_json(recorded[name]["host"]))
    return out


def workers_of(state_dir: Path) -> dict[str, str]:
    """Worker name -> the name of the host it runs on."""
    return {worker: name for name, entry in load(state_dir)["hosts"].items()
            for worker in entry.get("workers", [])}


def record_workers(state_dir: Path, hosts_by_name: Mapping[str, Host],
                   running: Mapping[str, Iterable[str]], *,
                   known_hosts_path: Path | None = None) -> None:
    """Remember ``hosts_by_name`` and add ``running[host]`` to their workers."""
    with _edit(state_dir) as data:
        if known_hosts_path is not None:
            data["known_hosts"] = str(known_hosts_path)
        for name, host in hosts_by_name.items():
            entry = data["hosts"].setdefault(name, {"workers": []})
            entry["host"] = host.to_json()
            entry["workers"] = sorted(set(entry.get("workers", [])) | set(running.get(name, [])))


def forget_workers(state_dir: Path, stopped: Mapping[str, Iterable[str]]) -> None:
    """Drop stopped workers from the record (hosts stay known)."""
    with _edit(state_dir) as data:
        for name, workers in stopped.items():
            entry = data["hosts"].get(name)
            if entry is not None:
                entry["workers"] = sorted(set(entry.get("workers", [])) - set(workers))
