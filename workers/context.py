"""Per-process state of a worker: settings, store, notifier, runner and identity.

Built lazily in the process that runs tasks (after Celery's pool forks), because
PyMongo clients and the trial process must not be shared across a fork.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.notify import Notifier
from broker.settings import Settings
from broker.store import TrialStore, WorkerIdentity, connect
from workers.runner import Runner, RunnerPool
from workers.trial_process import Launcher

_settings: Settings | None = None
_context: WorkerContext | None = None


@dataclass(frozen=True)
class VerifiedExperiment:
    """An experiment spec whose signature was checked, cached per experiment id."""

    spec: dict[str, Any]
    signature: str
    queue: str | None


@dataclass
class WorkerContext:
    settings: Settings
    store: TrialStore
    notifier: Notifier
    runners: RunnerPool
    identity: WorkerIdentity
    logs_dir: Path
    pid: int
    experiments: dict[str, VerifiedExperiment] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)


def configure(settings: Settings) -> None:
    """Set the settings every worker process uses (called before Celery starts)."""
    global _settings
    _settings = settings


def identity(name: str, settings: Settings, slots: int = 1) -> WorkerIdentity:
    return WorkerIdentity(name=name, host=socket.gethostname(), pid=os.getpid(),
                          gpu=settings.gpu, queue=settings.queue, slots=slots)


def initialised() -> bool:
    """Whether this process has built its context (it may not have run a task yet)."""
    return _context is not None and _context.pid == os.getpid()


def current(worker_name: str) -> WorkerContext:
    global _context
    if _context is not None and _context.pid == os.getpid():
        return _context
    if _settings is None:
        raise RuntimeError("workers.context.configure() was not called")
    settings = _settings
    logs_dir = (settings.state_dir / "logs").resolve()
    logs_dir.mkdir(parents=True, exist_ok=True)
    launcher = Launcher(settings.workspace.resolve(),
                        log_path=logs_dir / f"{worker_name.replace('@', '_')}.trials.log")
    _context = WorkerContext(
        settings=settings,
        store=connect(settings),
        notifier=Notifier(settings.broker_url or ""),
        runners=RunnerPool(lambda: Runner(launcher), keep_idle=settings.idle_processes or 0,
                           launcher=launcher),
        identity=identity(worker_name, settings),
        logs_dir=logs_dir,
        pid=os.getpid(),
    )
    return _context
