"""Provisioning: SSH hosts -> a pool of GPU workers (Fabric, verified host keys).

The library behind ``python -m tuner cluster ...``:

* :func:`provision` prepares every host in parallel and starts one worker per GPU;
* :func:`cluster_status`, :func:`stop_workers`, :func:`stream_worker_logs`,
  :func:`read_trial_log` inspect and manage what it started;
* :func:`parse_hosts` / :func:`load_inventory` read ``--hosts`` and Ansible inventories.

Every fleet operation returns a :class:`FleetResult`: each host's result or exception.
The on-host half is :mod:`workers.provisioning.agent`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "errors": ["FleetError", "HostKeyError", "InventoryError", "ProvisionError"],
    "fleet": ["FleetResult"],
    "hosts": ["Host", "load_inventory", "parse_hosts", "with_defaults"],
    "operations": ["HostState", "StopReport", "WorkerState", "cluster_status",
                   "read_trial_log", "stop_workers", "stream_worker_logs"],
    "provisioner": ["HostReport", "ProvisionOptions", "WorkerReport", "check_reachable",
                  "provision", "started_workers"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Imported on first use: the on-host agent (a submodule) must start without
    loading Fabric, Paramiko or PyMongo."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
