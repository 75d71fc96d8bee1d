"""Where things live under a host's ``tuner_home`` (the same for Fabric and Ansible).

::

    <home>/venv/                  the virtual environment with this project installed
    <home>/workspace/             the tuning code (shipped archive or git clone)
    <home>/state/                 the workers' TUNER_HOME: trial logs in logs/<exp>/<tid>.<n>.log
    <home>/logs/worker-<slot>.log each worker's own log (slot: gpu0, gpu1, cpu0, ...)
    <home>/run/<worker>.json      what the provisioning started (pid, fingerprint, ...)
    <home>/worker.env             connection settings for the workers (mode 0600)
    <home>/installed.json         fingerprints of what was installed, for idempotency
    <home>/incoming/              uploads (project wheel, workspace archive)

Pure path arithmetic on POSIX paths: used on this machine and by the remote agent.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """Paths under one host's ``tuner_home`` (an absolute POSIX path)."""

    root: str

    def _join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    @property
    def venv(self) -> str:
        return self._join("venv")

    @property
    def python(self) -> str:
        return self._join("venv", "bin", "python")

    @property
    def workspace(self) -> str:
        return self._join("workspace")

    @property
    def state(self) -> str:
        return self._join("state")

    @property
    def logs(self) -> str:
        return self._join("logs")

    @property
    def run(self) -> str:
        return self._join("run")

    @property
    def env_file(self) -> str:
        return self._join("worker.env")

    @property
    def installed(self) -> str:
        return self._join("installed.json")

    @property
    def incoming(self) -> str:
        return self._join("incoming")

    def worker_log(self, slot: str) -> str:
        return self._join("logs", f"worker-{slot}.log")

    def trial_log(self, exp_id: str, tid: int, attempt: int) -> str:
        return self._join("state", "logs", exp_id, f"{tid}.{attempt}.log")


def slot_of(gpu: str | None, index: int = 0) -> str:
    """A worker's slot on its host: ``gpu<N>`` when pinned to a GPU, else ``cpu<i>``."""
    return f"gpu{gpu}" if gpu is not None else f"cpu{index}"


def worker_name(slot: str, host_name: str) -> str:
    """A provisioned worker's name (its Celery hostname and MongoDB ``_id``)."""
    return f"{slot}@{host_name}"
