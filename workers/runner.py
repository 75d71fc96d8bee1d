"""Run trials in a separate process group, with a heartbeat while they run.

One :class:`Runner` per concurrently running task keeps one trial process
(:mod:`workers.child`) alive for as long as trials of the same experiment keep
arriving, so the objective's module (and its imports, data, CUDA context) is loaded
once, not once per trial. A trial of another experiment replaces the process; trial
processes are forks of a server that has already imported the project
(:mod:`workers.trial_process`), so a replacement costs milliseconds plus loading the
objective (or nothing but loading it, when the worker's :class:`~workers.trial_process.Launcher`
has a spare ready).

While a trial runs, :meth:`Runner.run` calls ``tick`` every heartbeat; ``tick`` renews
the lease and says whether to go on. On ``cancel``/``lost`` or a deadline the whole
process group is killed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers import trial_process
from workers.trial_process import Launcher, TrialProcess


@dataclass(frozen=True)
class Limits:
    """A trial's time limits (seconds from the objective's start). At the soft limit the
    objective gets :class:`~broker.errors.SoftTimeLimitExceeded` (SIGUSR1); at the hard
    limit its process group is killed."""

    timeout_s: float | None = None
    soft_timeout_s: float | None = None


@dataclass
class Outcome:
    """How a trial run ended.

    ``kind``: ``done`` (``result`` set), ``unavailable`` (the objective could not be
    loaded; ``error``/``traceback`` set), ``died`` (the trial process died; ``error``
    says how), ``stopped`` (killed because ``tick`` said ``cancel`` or ``lost``), or
    ``timeout`` (killed at the hard time limit). ``soft_signalled``: the objective was
    told it reached its soft limit before it ended.
    """

    kind: str
    result: dict[str, Any] | None = None
    params: Any = None
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    traceback: str | None = None
    reason: str | None = None
    soft_signalled: bool = False


class _Deadlines:
    """When to signal and when to kill the running trial (monotonic seconds)."""

    def __init__(self) -> None:
        self.soft_at: float | None = None
        self.hard_at: float | None = None
        self.soft_sent = False

    def arm(self, limits: Limits | None) -> None:
        now = time.monotonic()
        if limits is not None and limits.timeout_s:
            self.hard_at = now + limits.timeout_s
        if limits is not None and limits.soft_timeout_s:
            self.soft_at = now + limits.soft_timeout_s

    def next(self) -> float:
        pending = [t for t in (self.hard_at, None if self.soft_sent else self.soft_at)
                   if t is not None]
        return min(pending, default=float("inf"))


class Runner:
    """Owns at most one trial process; not thread-safe: use one per concurrently
    running task (see :class:`RunnerPool`)."""

    def __init__(self, launcher: Launcher) -> None:
        self._launcher = launcher
        self._child: TrialProcess | None = None
        self._interrupted = False
        self._interrupt_lock = threading.Lock()

    def run(
        self,
        key: str,
        load_request: dict[str, Any],
        vals: dict[str, Any],
        log_path: Path,
        *,
        tick: Callable[[], str],
        interval_s: float,
        limits: Limits | None = None,
    ) -> Outcome:
        """Run one trial of the experiment identified by ``key``."""
        unavailable = self._ensure(key, load_request, tick, interval_s)
        if unavailable is not None:
            return unavailable
        child = self._child
        assert child is not None
        self._send(child, {"op": "run", "vals": vals, "log_path": str(log_path)})
        started: dict[str, Any] = {}
        deadlines = _Deadlines()
        while True:
            reply = self._receive(child, tick, interval_s, deadlines)
            if reply.get("event") == "started":
                started = reply
                deadlines.arm(limits)
                continue
            if "event" not in reply:  # died, stopped or timed out
                return Outcome(**reply, params=started.get("params"),
                               started_at=started.get("started_at"), ended_at=time.time(),
                               soft_signalled=deadlines.soft_sent)
            return Outcome("done", result=reply["result"], params=started.get("params"),
                           started_at=reply["started_at"], ended_at=reply["ended_at"],
                           soft_signalled=deadlines.soft_sent)

    @property
    def loaded_key(self) -> str | None:
        """The experiment key whose objective the current trial process holds."""
        return self._child.key if self._child is not None else None

    def close(self) -> None:
        """Stop the trial process."""
        self.stop()

    def interrupt(self) -> None:
        """Kill the running trial's process group from another thread, and any trial
        process this runner starts from now on (the worker is shutting down); the thread
        in :meth:`run` sees the death and cleans up (this touches no file descriptors)."""
        with self._interrupt_lock:
            self._interrupted = True
            child = self._child
        if child is not None:
            child.kill_group()

    def stop(self) -> None:
        """Kill the trial process and everything it started."""
        child, self._child = self._child, None
        if child is not None:
            child.close()

    # -- internals ---------------------------------------------------------------------------

    def _ensure(self, key: str, load_request: dict[str, Any], tick: Callable[[], str],
                interval_s: float) -> Outcome | None:
        child = self._child
        if child is not None and child.key == key and child.poll() is None:
            return None
        self.stop()
        child = self._launcher.launch()
        child.key = key
        with self._interrupt_lock:  # an interrupt while it started still applies
            self._child = child
            if self._interrupted:
                child.kill_group()
        self._send(child, {"op": "load", **load_request})
        reply = self._receive(child, tick, interval_s)
        if reply.get("ok"):
            return None
        self.stop()
        if "kind" in reply:  # died or stopped while loading
            return Outcome(**reply)
        return Outcome("unavailable", error=reply["error"], traceback=reply.get("traceback"))

    def _send(self, child: TrialProcess, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        try:
            while data:
                data = data[os.write(child.to_child, data):]
        except BrokenPipeError:
            pass  # the child died; _receive reports how

    def _receive(self, child: TrialProcess, tick: Callable[[], str], interval_s: float,
                 deadlines: _Deadlines | None = None) -> dict:
        """The next message from the child, calling ``tick`` every ``interval_s`` and
        acting on ``deadlines``.

        Returns ``{"kind": "died"|"stopped"|"timeout", ...}`` instead when the child
        dies, ``tick`` says to stop, or the hard time limit passes."""
        deadlines = deadlines or _Deadlines()
        next_tick = time.monotonic() + interval_s
        while b"\n" not in child.buffer:
            wake = min(next_tick, deadlines.next())
            ready, _, _ = select.select([child.from_child], [], [],
                                        max(0.0, wake - time.monotonic()))
            if ready:
                chunk = os.read(child.from_child, 65536)
                if not chunk:
                    return {"kind": "died", "error": self._death_reason(child)}
                child.buffer += chunk
                continue
            if child.poll() is not None:  # died; a grandchild may hold the pipe
                return {"kind": "died", "error": self._death_reason(child)}
            now = time.monotonic()
            if deadlines.hard_at is not None and now >= deadlines.hard_at:
                self.stop()
                return {"kind": "timeout"}
            if deadlines.soft_at is not None and now >= deadlines.soft_at and not (
                    deadlines.soft_sent):
                deadlines.soft_sent = True
                os.kill(child.pid, signal.SIGUSR1)
            if now < next_tick:
                continue
            verdict = tick()
            if verdict != "ok":
                self.stop()
                return {"kind": "stopped", "reason": verdict}
            next_tick = time.monotonic() + interval_s
        line, _, rest = bytes(child.buffer).partition(b"\n")
        child.buffer = bytearray(rest)
        return json.loads(line)

    def _death_reason(self, child: TrialProcess) -> str:
        code = child.wait()
        self.stop()
        if code < 0:
            return f"trial process killed by {signal.Signals(-code).name}"
        return f"trial process exited with status {code}"


class RunnerPool:
    """Runners for a worker's concurrent tasks (one per task running at once).

    A task borrows a runner, preferring one whose trial process already holds its
    experiment, and gives it back when the trial ends. Up to ``keep_idle`` runners beyond
    the busy ones keep the trial processes of other experiments loaded: when several
    experiments share a pool, a slot alternates between them, and reusing a loaded
    objective skips its imports and data loading. Keep it 0 where an idle process would
    hold what the next trial needs, such as a GPU's memory. The pool tells ``launcher``
    when no trial runs, the time it forks spare trial processes in. Thread-safe.
    """

    def __init__(self, factory: Callable[[], Runner], *, keep_idle: int = 0,
                 launcher: Launcher | None = None) -> None:
        self._factory = factory
        self._keep_idle = keep_idle
        self._launcher = launcher
        self._free: dict[Runner, None] = {}  # least recently used first
        self._all: list[Runner] = []
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self, key: str) -> Iterator[Runner]:
        with self._lock:
            runner = next((r for r in self._free if r.loaded_key == key), None)
            if runner is None and len(self._free) > self._keep_idle:
                runner = next(iter(self._free))
            if runner is None:
                runner = self._factory()
                self._all.append(runner)
            else:
                del self._free[runner]
            self._tell_launcher()
        try:
            yield runner
        finally:
            with self._lock:
                self._free[runner] = None
                self._tell_launcher()

    def _tell_launcher(self) -> None:
        if self._launcher is not None:
            self._launcher.set_idle(len(self._free) == len(self._all))

    def prewarm(self, spares: int = 0) -> None:
        """Start the fork server of trial processes before the first trial, and keep
        ``spares`` blank trial processes ready (see :class:`~workers.trial_process.Launcher`)."""
        trial_process.prepare()
        if self._launcher is not None:
            self._launcher.keep_spares(spares)

    def interrupt(self) -> None:
        """Kill every running trial (the worker is shutting down); see Runner.interrupt."""
        with self._lock:
            busy = [r for r in self._all if r not in self._free]
        for runner in busy:
            runner.interrupt()

    def close(self) -> None:
        with self._lock:
            for runner in self._all:
                runner.close()
            self._all.clear()
            self._free.clear()
        if self._launcher is not None:
            self._launcher.close()
