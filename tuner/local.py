"""Local worker processes, for the local default and ``hyperparameters run``.

Each worker is started as its own process group (``python -m workers`` or the user's
``--worker-command``), with the tuner's connection settings in its environment, and
is stopped with SIGTERM, then SIGKILL of the whole group. On a machine with GPUs the
workers are pinned to them in turn (``--gpu``), one trial per GPU at a time.

If the tuner itself dies without stopping them (SIGKILL, a crash, a signal it does not
handle), a small watcher process forked beside it stops them the same way: it holds
the read end of a pipe only the tuner writes to, and reads EOF when the tuner is gone.
Running trials are then handed back (the workers' own SIGTERM handling), not orphaned.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from broker import gpus
from broker.errors import ServiceError
from broker.settings import Settings

STOP_GRACE_S = 10.0


class LocalWorkers:
    """A context manager owning ``count`` worker processes on this machine."""

    def __init__(self, settings: Settings, *, count: int, command: str | None = None) -> None:
        self.settings = settings
        self.count = count
        self.command = command
        self.logs_dir = (settings.state_dir / "logs" / "workers").resolve()
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self._watcher: tuple[int, int] | None = None  # (pid, lifeline write end)
        self.gpus = [gpu.index for gpu in gpus.detect()] if command is None else []

    def __enter__(self) -> LocalWorkers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        env = child_env(self.settings)
        tag = secrets.token_hex(2)
        host = socket.gethostname()
        for i in range(self.count):
            name = f"local{i}-{tag}@{host}"
            log_path = self.logs_dir / f"{name.replace('@', '_')}.log"
            self.logs.append(log_path)
            worker_env = {**env, "TUNER_WORKER_NAME": name}
            if self.gpus:
                worker_env["TUNER_GPU"] = self.gpus[i % len(self.gpus)]
            with open(log_path, "ab") as log:
                self.processes.append(subprocess.Popen(
                    self._argv(name), env=worker_env,
                    cwd=self.settings.workspace, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    shell=self.command is not None,
                ))
        self._watcher = _watch_over([p.pid for p in self.processes])

    def _argv(self, name: str) -> list[str] | str:
        if self.command is not None:
            return self.command
        return [sys.executable, "-m", "workers", "--name", name,
                "--workspace", str(Path(self.settings.workspace).resolve())]

    def check(self) -> None:
        """:class:`ServiceError` with the log tail if a worker has exited on its own."""
        for process, log in zip(self.processes, self.logs, strict=True):
            if process.poll() is not None:
                tail = log.read_bytes()[-1500:].decode(errors="replace") if log.exists() else ""
                raise ServiceError(f"local worker exited with status {process.returncode} "
                                   f"(log: {log})", log=tail)

    def stop(self) -> None:
        stop_groups(self.processes)
        self.processes = []
        if self._watcher is not None:
            pid, lifeline = self._watcher
            os.close(lifeline)  # the watcher finds nothing left to stop, and exits
            os.waitpid(pid, 0)
            self._watcher = None


def child_env(settings: Settings) -> dict[str, str]:
    """Environment for processes this machine starts for the tuner (workers, the tuning
    command): the connection settings, and this interpreter's folder first on ``PATH``
    so that ``python`` in a command means the same Python, with this project."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {**os.environ, **settings.to_env(), "PATH": path}


def stop_groups(processes: Sequence[subprocess.Popen]) -> None:
    """Stop processes started with ``start_new_session=True`` and everything they
    started (a shell's children too): SIGTERM to each group, ``STOP_GRACE_S`` to exit,
    then SIGKILL to whatever is left of the groups."""
    for process in processes:
        _kill_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _kill_group(process.pid, signal.SIGKILL)
        process.wait()


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _watch_over(groups: list[int]) -> tuple[int, int]:
    """Fork the watcher that stops ``groups`` once this process is gone (see the module
    docstring). Returns its pid and the write end of its lifeline."""
    read_end, write_end = os.pipe()  # not inherited by later subprocesses
    pid = os.fork()
    if pid == 0:  # the watcher: only system calls from here on (forked from threads)
        try:
            os.closerange(0, read_end)
            os.closerange(read_end + 1, 1 << 16)
            while os.read(read_end, 1):
                pass
            alive = [g for g in groups if _group_alive(g)]
            for group in alive:
                _kill_group(group, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline and any(_group_alive(g) for g in alive):
                time.sleep(0.2)
            for group in alive:
                _kill_group(group, signal.SIGKILL)
        finally:
            os._exit(0)
    os.close(read_end)
    return pid, write_end


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False
