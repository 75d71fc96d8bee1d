"""Run trials in a separate process group, with a heartbeat while they run.

One :class:`Runner` per worker process keeps one trial process
(:mod:`workers.child`) alive for as long as trials of the same experiment keep
arriving, so the objective's module (and its imports, data, CUDA context) is loaded
once, not once per trial. A trial of another experiment replaces the process.

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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Outcome:
    """How a trial run ended.

    ``kind``: ``done`` (``result`` set), ``unavailable`` (the objective could not be
    loaded; ``error``/``traceback`` set), ``died`` (the trial process died; ``error``
    says how), or ``stopped`` (killed because ``tick`` said ``cancel`` or ``lost``).
    """

    kind: str
    result: dict[str, Any] | None = None
    params: Any = None
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    traceback: str | None = None
    reason: str | None = None


@dataclass
class _Child:
    key: str
    process: subprocess.Popen
    to_child: int
    from_child: int
    lifeline: int
    buffer: bytearray = field(default_factory=bytearray)


class Runner:
    """Owns at most one trial process; not thread-safe (one per worker process)."""

    def __init__(self, workspace: Path, *, log_path: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.workspace = workspace
        self.log_path = log_path
        self.env = env
        self._child: _Child | None = None
        self._load_error: Outcome | None = None

    def run(
        self,
        key: str,
        load_request: dict[str, Any],
        vals: dict[str, Any],
        log_path: Path,
        *,
        tick: Callable[[], str],
        interval_s: float,
    ) -> Outcome:
        """Run one trial of the experiment identified by ``key``."""
        unavailable = self._ensure(key, load_request, tick, interval_s)
        if unavailable is not None:
            return unavailable
        child = self._child
        assert child is not None
        self._send(child, {"op": "run", "vals": vals, "log_path": str(log_path)})
        started: dict[str, Any] = {}
        while True:
            reply = self._receive(child, tick, interval_s)
            if reply.get("event") == "started":
                started = reply
                continue
            if "event" not in reply:  # died or stopped
                reply_outcome = Outcome(**reply)
                reply_outcome.params = started.get("params")
                reply_outcome.started_at = started.get("started_at")
                return reply_outcome
            return Outcome("done", result=reply["result"], params=started.get("params"),
                           started_at=reply["started_at"], ended_at=reply["ended_at"])

    def stop(self) -> None:
        """Kill the trial process and everything it started."""
        child, self._child = self._child, None
        if child is None:
            return
        try:
            os.killpg(child.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.process.wait()
        for fd in (child.to_child, child.from_child, child.lifeline):
            os.close(fd)

    # -- internals ---------------------------------------------------------------------------

    def _ensure(self, key: str, load_request: dict[str, Any], tick: Callable[[], str],
                interval_s: float) -> Outcome | None:
        if self._child is not None and self._child.key == key and self._child.process.poll() is None:
            return None
        self.stop()
        self._child = self._spawn(key)
        self._send(self._child, {"op": "load", **load_request})
        reply = self._receive(self._child, tick, interval_s)
        if reply.get("ok"):
            return None
        self.stop()
        if "kind" in reply:  # died or stopped while loading
            return Outcome(**reply)
        return Outcome("unavailable", error=reply["error"], traceback=reply.get("traceback"))

    def _spawn(self, key: str) -> _Child:
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
        return _Child(key, process, to_child_w, from_child_r, lifeline_w)

    def _send(self, child: _Child, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        try:
            while data:
                data = data[os.write(child.to_child, data):]
        except BrokenPipeError:
            pass  # the child died; _receive reports how

    def _receive(self, child: _Child, tick: Callable[[], str], interval_s: float) -> dict:
        """The next message from the child, calling ``tick`` every ``interval_s``.

        Returns ``{"kind": "died"|"stopped", ...}`` instead when the child dies or
        ``tick`` says to stop."""
        next_tick = time.monotonic() + interval_s
        while b"\n" not in child.buffer:
            ready, _, _ = select.select([child.from_child], [], [],
                                        max(0.0, next_tick - time.monotonic()))
            if ready:
                chunk = os.read(child.from_child, 65536)
                if not chunk:
                    return {"kind": "died", "error": self._death_reason(child)}
                child.buffer += chunk
                continue
            if child.process.poll() is not None:  # died; a grandchild may hold the pipe
                return {"kind": "died", "error": self._death_reason(child)}
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
