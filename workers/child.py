"""The trial process: loads one experiment's objective once, then runs trials on request.

Forked by :mod:`workers.trial_process` for :class:`workers.runner.Runner`, in its own
session (process group), so a timeout or a cancel kills the objective *and* anything it
spawned. It talks JSON lines over two pipes passed as file descriptors; its own
stdout/stderr go to the worker's log, and during a trial to that trial's log file
(redirected at the file-descriptor level, so output of C extensions and child
processes is captured too).

A forked watcher process holds the read end of a *lifeline* pipe whose write end only
the worker holds: when the worker dies for any reason, the watcher reads EOF and kills
the whole group, so no orphaned objective keeps a GPU busy.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from broker import objective
from broker import space as space_codec
from broker.errors import SoftTimeLimitExceeded
from broker.trial_doc import failure_result
from workers.result import normalize


def serve(control_in: int, control_out: int, lifeline: int, workspace: str,
          log_path: str | None) -> None:
    """Run trials on request until the worker closes ``control_in``.

    Called in a fresh fork of the fork server (:mod:`workers.trial_process`): it becomes
    the leader of a new session first, so that the whole group can be killed at once.
    """
    os.setsid()
    _redirect_output(log_path)
    os.chdir(workspace)
    sys.path.insert(0, workspace)  # as ``python -m`` would have, for the objective's imports
    _start_watcher(lifeline)
    for fd in (control_in, control_out):
        os.set_inheritable(fd, False)  # not into programs the objective starts
    requests = os.fdopen(control_in, "rb")
    replies = os.fdopen(control_out, "wb", buffering=0)
    loaded: tuple[Any, Any] | None = None
    for line in requests:
        request = json.loads(line)
        if request["op"] == "load":
            loaded, reply = _load(request, Path(workspace))
            _send(replies, reply)
        elif request["op"] == "run":
            assert loaded is not None, "run before load"
            _run(replies, request, *loaded)


def _redirect_output(log_path: str | None) -> None:
    """stdout and stderr to the worker's trial log, so output outside trials is kept."""
    fd = os.open(log_path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)


def _start_watcher(lifeline: int) -> None:
    if os.fork() == 0:
        try:
            os.closerange(3, lifeline)
            os.closerange(lifeline + 1, 1 << 16)
            while os.read(lifeline, 1):
                pass
        finally:
            os.killpg(os.getpgrp(), signal.SIGKILL)
    os.close(lifeline)


def _send(out: BinaryIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message).encode() + b"\n")


def _load(request: dict[str, Any], workspace: Path) -> tuple[tuple[Any, Any] | None, dict]:
    try:
        os.chdir(workspace)
        fn, space = objective.load(request["objective"], workspace)
        expr = space_codec.validate(space) if space is not None else space_codec.decode(
            request["space"])
        actual = space_codec.fingerprint(space_codec.encode(expr))
        if actual != request["space_fingerprint"]:
            raise objective.ObjectiveError(
                "the search space built from this worker's workspace differs from the "
                "tuner's: sync the workspace")
    except Exception as exc:
        return None, {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()}
    return (fn, expr), {"ok": True}


def _run(replies: BinaryIO, request: dict[str, Any], fn: Any, expr: Any) -> None:
    from hyperopt import space_eval

    with _redirected_output(request["log_path"]), _soft_time_limit():
        started_at = time.time()
        params: Any = None
        try:
            params = space_eval(expr, request["vals"])
            _send(replies, {"event": "started", "params": space_codec.to_jsonable(params),
                            "started_at": started_at})
            result = normalize(fn(params))
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a failed trial
            if isinstance(exc, KeyboardInterrupt) and params is None:
                raise
            message = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, SystemExit):
                message = f"objective called sys.exit({exc.code!r})"
            traceback.print_exc()
            result = failure_result("exception", message, traceback.format_exc())
        ended_at = time.time()
    _send(replies, {"event": "done", "result": result, "started_at": started_at,
                    "ended_at": ended_at})


@contextmanager
def _soft_time_limit() -> Iterator[None]:
    """While the objective runs, SIGUSR1 (sent at the soft time limit) raises
    SoftTimeLimitExceeded in it, so it can save a checkpoint."""

    def raise_soft_limit(signum: int, frame: object) -> None:
        raise SoftTimeLimitExceeded("the trial reached its soft time limit")

    previous = signal.signal(signal.SIGUSR1, raise_soft_limit)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


class _redirected_output:
    """Point fds 1 and 2 (and Python's sys.stdout/err) at a trial's log file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for target, saved in zip((1, 2), self.saved, strict=True):
            os.dup2(saved, target)
            os.close(saved)
