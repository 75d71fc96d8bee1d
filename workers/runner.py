"""Run trials in a separate process group, with a heartbeat while they run.

One :class:`Runner` per worker process keeps one trial process
(:mod:`workers.child`) alive for as long as trials of the same experiment keep
arriving, so the objective's module (and its imports, data, CUDA context) is loaded
once, not once per trial. A trial of another experiment replaces the process. A spare
process that has already imported the project (about a second of imports) waits for
the next experiment, so switching experiments costs only loading the objective; spares
are started when the worker starts and when it is idle, never while trials compete for
the CPU (starting one after every switch was tried: 64 slots switching at once then
spawned 64 interpreters together and halved the pool's utilisation).

While a trial runs, :meth:`Runner.run` calls ``tick`` every heartbeat; ``tick`` renews
the lease and says whether to go on. On ``cancel``/``lost`` or a deadline the whole
process group is killed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


@dataclass
class _Child:
    key: str
    process: subprocess.Popen
    to_child: int
    from_child: int
    lifeline: int
    buffer: bytearray = field(default_factory=bytearray)


class Runner:
    """Owns at most one trial process (and a spare); not thread-safe: use one per
    concurrently running task (see :class:`RunnerPool`)."""

    def __init__(self, workspace: Path, *, log_path: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.workspace = workspace
        self.log_path = log_path
        self.env = env
        self._child: _Child | None = None
        self._spare: _Child | None = None

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

    @property
    def has_spare(self) -> bool:
        return self._spare is not None

    def prewarm(self) -> None:
        """Start the spare trial process now (e.g. when the worker starts)."""
        if self._spare is None:
            self._spare = self._spawn_process()

    def close(self) -> None:
        """Stop the trial process and the spare."""
        self.stop()
        spare, self._spare = self._spare, None
        if spare is not None:
            _kill(spare)

    def interrupt(self) -> None:
        """Kill the running trial's process group from another thread; the thread in
        :meth:`run` sees the death and cleans up (this touches no file descriptors)."""
        child = self._child
        if child is not None:
            try:
                os.killpg(child.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Kill the trial process and everything it started."""
        child, self._child = self._child, None
        if child is not None:
            _kill(child)

    # -- internals ---------------------------------------------------------------------------

    def _ensure(self, key: str, load_request: dict[str, Any], tick: Callable[[], str],
                interval_s: float) -> Outcome | None:
        child = self._child
        if child is not None and child.key == key and child.process.poll() is None:
            return None
        self.stop()
        self._child = self._take_spare(key)
        self._send(self._child, {"op": "load", **load_request})
        reply = self._receive(self._child, tick, interval_s)
        if reply.get("ok"):
            return None
        self.stop()
        if "kind" in reply:  # died or stopped while loading
            return Outcome(**reply)
        return Outcome("unavailable", error=reply["error"], traceback=reply.get("traceback"))

    def _take_spare(self, key: str) -> _Child:
        spare, self._spare = self._spare, None
        if spare is None or spare.process.poll() is not None:
            if spare is not None:
                _kill(spare)
            spare = self._spawn_process()
        spare.key = key
        return spare

    def _spawn_process(self) -> _Child:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        lifeline_r, lifeline_w = os.pipe()
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "workers.child",
                 "--control-in", str(to_child_r), "--control-out", str(from_child_w),
                 "--lifeline", str(lifeline_r), "--workspace", str(self.workspace)],
                pass_fds=(to_child_r, from_child_w, lifeline_r),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self.workspace, env=self.env, start_new_session=True,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
            for fd in (to_child_r, from_child_w, lifeline_r):
                os.close(fd)
        return _Child("", process, to_child_w, from_child_r, lifeline_w)

    def _send(self, child: _Child, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        try:
            while data:
                data = data[os.write(child.to_child, data):]
        except BrokenPipeError:
            pass  # the child died; _receive reports how

    def _receive(self, child: _Child, tick: Callable[[], str], interval_s: float,
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
            if child.process.poll() is not None:  # died; a grandchild may hold the pipe
                return {"kind": "died", "error": self._death_reason(child)}
            now = time.monotonic()
            if deadlines.hard_at is not None and now >= deadlines.hard_at:
                self.stop()
                return {"kind": "timeout"}
            if deadlines.soft_at is not None and now >= deadlines.soft_at and not (
                    deadlines.soft_sent):
                deadlines.soft_sent = True
                os.kill(child.process.pid, signal.SIGUSR1)
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

    def _death_reason(self, child: _Child) -> str:
        code = child.process.wait()
        self.stop()
        if code < 0:
            return f"trial process killed by {signal.Signals(-code).name}"
        return f"trial process exited with status {code}"


def _kill(child: _Child) -> None:
    """Kill a trial process's whole group and release its pipes."""
    try:
        os.killpg(child.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.process.wait()
    for fd in (child.to_child, child.from_child, child.lifeline):
        os.close(fd)


class RunnerPool:
    """Runners for a worker's concurrent tasks (one per task running at once).

    A task borrows a runner, preferring one that already holds its experiment, and
    gives it back when the trial ends. A background thread gives idle runners a spare
    trial process. Thread-safe.
    """

    IDLE_S = 1.0
    """A runner idle this long (seconds) gets a spare trial process."""

    def __init__(self, factory: Callable[[], Runner]) -> None:
        self._factory = factory
        self._free: dict[Runner, float] = {}  # runner -> idle since (monotonic)
        self._all: list[Runner] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._janitor: threading.Thread | None = None

    @contextmanager
    def borrow(self, key: str) -> Iterator[Runner]:
        with self._lock:
            runner = next((r for r in self._free if r.loaded_key == key), None)
            runner = runner or next((r for r in self._free if r.has_spare), None)
            runner = runner or next(iter(self._free), None)
            if runner is None:
                runner = self._factory()
                self._all.append(runner)
            else:
                del self._free[runner]
        try:
            yield runner
        finally:
            with self._lock:
                self._free[runner] = time.monotonic()
            self._start_janitor()

    def prewarm(self) -> None:
        """Have one runner with a spare trial process ready before the first trial."""
        with self._lock:
            if not self._all:
                runner = self._factory()
                self._all.append(runner)
                self._free[runner] = time.monotonic()
            self._all[0].prewarm()
        self._start_janitor()

    def interrupt(self) -> None:
        """Kill every running trial (the worker is shutting down); see Runner.interrupt."""
        with self._lock:
            busy = [r for r in self._all if r not in self._free]
        for runner in busy:
            runner.interrupt()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            for runner in self._all:
                runner.close()
            self._all.clear()
            self._free.clear()

    def _start_janitor(self) -> None:
        with self._lock:
            if self._janitor is None and not self._closed.is_set():
                self._janitor = threading.Thread(target=self._give_spares, daemon=True,
                                                 name="runner-spares")
                self._janitor.start()

    def _give_spares(self) -> None:
        while not self._closed.wait(self.IDLE_S):
            with self._lock:
                now = time.monotonic()
                for runner, since in self._free.items():
                    if now - since >= self.IDLE_S:
                        runner.prewarm()
