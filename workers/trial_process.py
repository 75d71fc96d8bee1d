"""Start trial processes in milliseconds: forks of a server that has imported the project.

A fresh interpreter that imports Hyperopt (and with it NumPy and SciPy) spends about a
second of CPU before it can load an objective. A worker pays that whenever a slot starts
a trial process: on its first trial, after a crash, and each time the slot switches to
another experiment, which happens all the time when several experiments share a pool
(:mod:`tuner.fair_share`). The standard library's *forkserver* does the imports once
per worker process: a small server preloads :mod:`workers.child`, and each trial process
is a fork of it (about 10 ms).

Even a fork costs about 20 ms of CPU before the objective can load (the fork, the
process's watcher, its bootstrap). That matters when a new experiment reaches a
worker: every slot starts a trial process at the same moment, and 64 slots on two
cores would wait up to half a second for each other. A :class:`Launcher` keeps blank
processes forked ahead of need (one per slot, refilled by a background thread), so the
path from a claimed trial to its objective only hands one over. Spares are forked
only while the worker runs no trial: a fork costs the same CPU wherever it happens,
and while trials run that CPU belongs to them.

The server never loads an objective, so no CUDA context, user module or data is shared
between trial processes; it is started from the worker's environment (including
``CUDA_VISIBLE_DEVICES``) and exits with the worker. As with any multiprocessing start
method but *fork*, a child imports the worker's main script again unless it was run as
a package (``python -m workers``) or guards its entry point with ``__name__``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections import deque
from dataclasses import dataclass, field
from multiprocessing import forkserver, reduction
from pathlib import Path

from workers import child

log = logging.getLogger(__name__)

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["workers.child"])


def prepare() -> None:
    """Start the fork server now (about a second of imports), so that the first trial
    does not wait for it. Idempotent; restarts a server that died."""
    forkserver.ensure_running()


@dataclass
class TrialProcess:
    """A running trial process: its pid, its exit status once it ends, and the worker's
    ends of its pipes (``to_child``/``from_child`` carry JSON lines; ``lifeline`` is held
    open so the process's watcher kills its group if this worker dies)."""

    process: multiprocessing.process.BaseProcess
    to_child: int
    from_child: int
    lifeline: int
    key: str = ""
    buffer: bytearray = field(default_factory=bytearray)

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def poll(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        return self.process.exitcode

    def wait(self) -> int:
        self.process.join()
        code = self.process.exitcode
        assert code is not None
        return code

    def kill_group(self) -> None:
        """SIGKILL the trial process and everything it started (its process group)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:  # just forked, not yet the leader of its own group
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Kill the group, reap the process and release the pipes."""
        self.kill_group()
        self.wait()
        self.process.close()
        for fd in (self.to_child, self.from_child, self.lifeline):
            os.close(fd)


def start(workspace: Path, log_path: Path | None) -> TrialProcess:
    """Fork a trial process (:func:`workers.child.serve`) in its own session, in
    ``workspace``, with its output appended to ``log_path`` (or discarded)."""
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    lifeline_r, lifeline_w = os.pipe()
    try:
        process = _CONTEXT.Process(
            target=child.serve, name="trial",
            args=(_Fd(to_child_r), _Fd(from_child_w), _Fd(lifeline_r), str(workspace),
                  str(log_path) if log_path else None))
        process.start()
    except BaseException:
        for fd in (to_child_w, from_child_r, lifeline_w):
            os.close(fd)
        raise
    finally:
        for fd in (to_child_r, from_child_w, lifeline_r):
            os.close(fd)
    return TrialProcess(process, to_child_w, from_child_r, lifeline_w)


class Launcher:
    """Starts a worker's trial processes, in ``workspace`` with output to ``log_path``:
    a spare (a blank process forked ahead of need) when one is ready, else a fresh fork.

    Spares have loaded nothing, so they hold no GPU memory; they die with the worker
    (each has a lifeline) or at :meth:`close`. Thread-safe.
    """

    def __init__(self, workspace: Path, log_path: Path | None = None) -> None:
        self.workspace = workspace
        self.log_path = log_path
        self._spares: deque[TrialProcess] = deque()
        self._wanted = 0
        self._closed = False
        self._changed = threading.Condition()
        self._refiller: threading.Thread | None = None
        self._idle = True

    def launch(self) -> TrialProcess:
        """A trial process that has loaded nothing yet."""
        dead = []
        with self._changed:
            process = None
            while self._spares and process is None:
                process = self._spares.popleft()
                if process.poll() is not None:
                    dead.append(process)
                    process = None
            self._changed.notify()
        for gone in dead:
            gone.close()
        return process or start(self.workspace, self.log_path)

    @property
    def spares(self) -> list[int]:
        """The pids of the spares ready now."""
        with self._changed:
            return [spare.pid for spare in self._spares]

    def keep_spares(self, count: int) -> None:
        """Keep ``count`` spares ready from now on, forked one at a time in the background
        while the worker is idle (:meth:`set_idle`)."""
        with self._changed:
            self._wanted = count
            if count and self._refiller is None and not self._closed:
                self._refiller = threading.Thread(target=self._refill, name="spare trial "
                                                  "processes", daemon=True)
                self._refiller.start()
            self._changed.notify()

    def set_idle(self, idle: bool) -> None:
        """Whether the worker runs no trial now; spares are forked only then."""
        with self._changed:
            if idle != self._idle:  # called on every borrow and return: wake only on a change
                self._idle = idle
                self._changed.notify()

    def close(self) -> None:
        """Stop refilling and kill the spares."""
        with self._changed:
            self._closed = True
            spares, self._spares = list(self._spares), deque()
            self._changed.notify()
            refiller = self._refiller
        for spare in spares:
            spare.close()
        if refiller is not None and refiller is not threading.current_thread():
            refiller.join(timeout=10)

    def _refill(self) -> None:
        while True:
            with self._changed:
                while not self._closed and (len(self._spares) >= self._wanted
                                            or not self._idle):
                    self._changed.wait()
                if self._closed:
                    return
            try:
                spare = start(self.workspace, self.log_path)
            except Exception as exc:  # the next launch forks on demand (and says why)
                log.warning("could not fork a spare trial process: %s", exc)
                with self._changed:
                    self._changed.wait(timeout=5.0)
                continue
            with self._changed:
                if not self._closed:
                    self._spares.append(spare)
                    continue
            spare.close()
            return


class _Fd:
    """A file descriptor passed to a forkserver child: the server hands the child a
    duplicate, which arrives as a plain ``int``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple:
        return _detach, (reduction.DupFd(self.fd),)


def _detach(duplicate: object) -> int:
    return duplicate.detach()  # type: ignore[attr-defined]
