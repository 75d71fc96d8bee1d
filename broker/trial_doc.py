"""The trial document: Hyperopt's format plus what a distributed run needs.

One document per trial in the ``trials`` collection, keyed by ``(exp_key, tid)``.
Hyperopt's fields keep their meaning (``state`` is a ``JOB_STATE_*`` integer,
``result`` is what the objective returned, ``misc.vals/idxs`` is the point), so
Hyperopt's algorithms read these documents unchanged. Times are seconds since the
epoch as floats, never BSON datetimes, so every MongoDB-compatible server round-trips
them exactly.

Fields added by this project::

    attempt      how many times a worker claimed the trial (1 on the first run)
    lease        {"token", "owner", "expires_at"} while a worker holds the trial
    attempts     [{"attempt", "worker", "host", "reason", "at"}] runs that were lost
    worker/host/gpu    who ran (or runs) it
    queued_at / started_at / ended_at / duration_s     timings (seconds)
    params       the point as the objective received it (``space_eval``), JSON-safe
    log_tail     the last bytes of the trial's captured stdout/stderr
    cancel       set by the tuner to ask the worker to stop the trial
    spec_signature     the experiment spec the trial belongs to (see broker.spec)

Hyperopt has two lifecycle vocabularies (``state`` integers and ``result.status``
strings); :class:`TrialState` is the one used everywhere else, mapped here only.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from hyperopt import base

EXP_KEY = "exp_key"
TID = "tid"


class TrialState(str, Enum):
    """Where a trial is in its life. Every state but ``QUEUED`` and ``RUNNING`` is final.

    ``TIMEOUT`` is a failure the objective did not choose: the trial hit its hard time
    limit (or failed after its soft one). Hyperopt's algorithms see it as ``fail``."""

    QUEUED = "queued"
    RUNNING = "running"
    OK = "ok"
    FAIL = "fail"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        return self not in (TrialState.QUEUED, TrialState.RUNNING)

    def query(self) -> dict[str, Any]:
        """A MongoDB filter matching trial documents in this state."""
        done = {"state": base.JOB_STATE_DONE}
        if self is TrialState.OK:
            return {**done, "result.status": base.STATUS_OK}
        if self is TrialState.FAIL:
            return {**done, "result.status": {"$ne": base.STATUS_OK},
                    "result.failure.kind": {"$ne": TIMEOUT_KIND}}
        if self is TrialState.TIMEOUT:
            return {**done, "result.failure.kind": TIMEOUT_KIND}
        return {"state": _JOB_STATE[self]}


TIMEOUT_KIND = "timeout"

_JOB_STATE = {
    TrialState.QUEUED: base.JOB_STATE_NEW,
    TrialState.RUNNING: base.JOB_STATE_RUNNING,
    TrialState.OK: base.JOB_STATE_DONE,
    TrialState.FAIL: base.JOB_STATE_DONE,
    TrialState.TIMEOUT: base.JOB_STATE_DONE,
    TrialState.CANCELLED: base.JOB_STATE_CANCEL,
}

UNFINISHED_JOB_STATES = [base.JOB_STATE_NEW, base.JOB_STATE_RUNNING]


def state_of(doc: dict[str, Any]) -> TrialState:
    """This project's state of a trial document (Hyperopt ``ERROR`` reads as ``FAIL``)."""
    job_state = doc["state"]
    if job_state == base.JOB_STATE_NEW:
        return TrialState.QUEUED
    if job_state == base.JOB_STATE_RUNNING:
        return TrialState.RUNNING
    if job_state == base.JOB_STATE_CANCEL:
        return TrialState.CANCELLED
    return finished_state(doc.get("result") or {})


def finished_state(result: dict[str, Any]) -> TrialState:
    """The final state a trial with this ``result`` is in (``OK``, ``FAIL``, ``TIMEOUT``)."""
    if result.get("status") == base.STATUS_OK:
        return TrialState.OK
    if (result.get("failure") or {}).get("kind") == TIMEOUT_KIND:
        return TrialState.TIMEOUT
    return TrialState.FAIL


def job_state(state: TrialState) -> int:
    return _JOB_STATE[state]


def failure_result(kind: str, message: str, traceback: str | None = None) -> dict[str, Any]:
    """The ``result`` of a trial that did not produce a loss.

    ``kind`` is one of ``exception``, ``invalid_result``, ``worker_lost``,
    ``objective_unavailable``, ``timeout``, ``cancelled``; Hyperopt's algorithms see
    ``status: fail`` and no loss,
    which they treat as a failed point.
    """
    failure: dict[str, Any] = {"kind": kind, "message": message}
    if traceback:
        failure["traceback"] = traceback
    return {"status": base.STATUS_FAIL, "failure": failure}


def new_trial_fields(now: float, spec_signature: str | None) -> dict[str, Any]:
    """The fields this project adds to a freshly suggested Hyperopt trial document.

    ``spec_signature`` names the experiment spec the trial was suggested under, so a
    worker knows when its cached copy of the spec is current."""
    return {
        "spec_signature": spec_signature,
        "attempt": 0,
        "lease": None,
        "attempts": [],
        "queued_at": now,
        "book_time": None,
        "refresh_time": now,
    }


def flat_vals(doc: dict[str, Any]) -> dict[str, Any]:
    """``misc.vals`` without the one-element lists: the point as ``space_eval`` takes it."""
    return {label: values[0] for label, values in doc["misc"]["vals"].items() if values}


def loss_of(doc: dict[str, Any]) -> float | None:
    if state_of(doc) is not TrialState.OK:
        return None
    return float(doc["result"]["loss"])
