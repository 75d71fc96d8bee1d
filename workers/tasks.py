"""The Celery task: claim one trial, run it, record its one result.

A thin adapter over the store and the runner. Every delivery of a message is safe:
the claim is conditional (a duplicate or redelivered message finds the trial running
or finished and does nothing), and the result write is fenced by the lease token (a
worker that lost its lease writes nothing).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.exceptions import Reject
from kombu.exceptions import KombuError
from pymongo.errors import AutoReconnect, ConnectionFailure

from broker import defaults, names
from broker.celery_app import send_trial
from broker.errors import SignatureError
from broker.spec import open_spec
from broker.store import Claim
from broker.trial_doc import (
    TIMEOUT_KIND,
    TrialState,
    failure_result,
    finished_state,
    flat_vals,
    state_of,
)
from workers import context
from workers.context import VerifiedExperiment, WorkerContext
from workers.runner import Limits, Outcome

log = logging.getLogger(__name__)

HANDED_BACK = "handed back: worker shutting down"


def register(app: Celery) -> None:
    """Register the trial task on ``app`` (the worker side of :mod:`broker.celery_app`)."""

    @app.task(name=names.EVALUATE_TRIAL, bind=True, acks_late=True,
              reject_on_worker_lost=True)
    def evaluate_trial(self: Any, exp_id: str, tid: int) -> dict[str, Any]:
        ctx = context.current(self.request.hostname or "worker")
        return evaluate(ctx, self.app, str(exp_id), int(tid))


def evaluate(ctx: WorkerContext, app: Celery, exp_id: str, tid: int) -> dict[str, Any]:
    """Evaluate trial ``tid`` of experiment ``exp_id`` if nobody else holds it."""
    settings = ctx.settings
    if ctx.stopping.is_set():  # delivered while shutting down: back to the queue
        raise Reject("worker shutting down", requeue=True)
    claim, doc = _with_retry(lambda: ctx.store.claim(
        exp_id, tid, ctx.identity, lease_s=settings.lease_s, now=time.time()),
        settings.result_retry_s)
    if claim is None:
        state = state_of(doc).value if doc else "missing"
        log.info("trial %s/%s is %s: nothing to do (duplicate or late delivery)",
                 exp_id, tid, state)
        return {"exp_id": exp_id, "tid": tid, "skipped": state}

    try:
        experiment = _with_retry(lambda: _experiment(ctx, exp_id,
                                                     claim.doc.get("spec_signature")),
                                 settings.result_retry_s)
    except SignatureError as exc:
        log.error("REFUSED trial %s/%s: %s", exp_id, tid, exc)
        refused = Outcome("unavailable", error=f"SignatureError: {exc}")
        return _record(ctx, claim, refused, None)

    log_path = ctx.logs_dir / exp_id / f"{tid}.{claim.attempt}.log"
    spec = experiment.spec
    key = f"{exp_id}:{experiment.signature}"
    with ctx.runners.borrow(key) as runner:
        outcome = runner.run(
            key,
            {"objective": spec["objective"], "space": spec["space"],
             "space_fingerprint": spec["space_fingerprint"]},
            flat_vals(claim.doc),
            log_path,
            tick=lambda: _renew(ctx, claim),
            interval_s=settings.heartbeat_s,
            limits=Limits(**spec.get("limits", {})),
        )
    if outcome.kind == "died":
        return _released(ctx, app, claim, outcome, experiment)
    return _record(ctx, claim, outcome, log_path)


def _renew(ctx: WorkerContext, claim: Claim) -> str:
    """Heartbeat: renew the lease; through a MongoDB outage keep running (the lease may
    lapse; if the trial is taken over meanwhile, the fenced result write says so)."""
    try:
        return ctx.store.renew(claim, lease_s=ctx.settings.lease_s, now=time.time())
    except (AutoReconnect, ConnectionFailure) as exc:
        log.warning("trial %s/%s: cannot renew the lease (%s); still running",
                    claim.exp_id, claim.tid, exc)
        return "ok"


def _experiment(ctx: WorkerContext, exp_id: str, signature: str | None) -> VerifiedExperiment:
    """The experiment's verified spec, from the cache while the trial's recorded
    signature matches it (saves a read per trial), else read and verified again."""
    cached = ctx.experiments.get(exp_id)
    if cached is not None and signature is not None and cached.signature == signature:
        return cached
    doc = ctx.store.experiment(exp_id) or {}
    spec = open_spec(doc.get("spec"), doc.get("spec_signature"),
                     ctx.settings.require_secret())
    verified = VerifiedExperiment(spec, doc["spec_signature"], doc.get("queue"))
    ctx.experiments[exp_id] = verified
    return verified


def _record(ctx: WorkerContext, claim: Claim, outcome: Outcome,
            log_path: Path | None) -> dict[str, Any]:
    """Write the trial's one result (fenced by the lease) and announce it."""
    summary = {"exp_id": claim.exp_id, "tid": claim.tid, "attempt": claim.attempt,
               "host": ctx.identity.host, "gpu": ctx.identity.gpu}
    if outcome.kind == "stopped" and outcome.reason == "lost":
        log.warning("trial %s/%s: lease lost (re-queued elsewhere); stopped, nothing written",
                    claim.exp_id, claim.tid)
        return {**summary, "state": "lost"}
    result = _result_of(outcome)
    now = time.time()
    fields: dict[str, Any] = {"log_tail": _tail(log_path)}
    if outcome.started_at is not None:
        fields.update(started_at=outcome.started_at,
                      duration_s=(outcome.ended_at or now) - outcome.started_at)
    if outcome.params is not None:
        fields["params"] = outcome.params
    cancelled = outcome.kind == "stopped"
    written = _with_retry(lambda: ctx.store.finish(claim, result, now=now, cancelled=cancelled,
                                                   **fields), ctx.settings.result_retry_s)
    state = TrialState.CANCELLED if cancelled else finished_state(result)
    if not written:
        log.warning("trial %s/%s: result discarded, the trial was taken over (lease lost)",
                    claim.exp_id, claim.tid)
        return {**summary, "state": "lost"}
    ctx.notifier.trial_changed(claim.exp_id, claim.tid, state.value)
    failure = result.get("failure", {})
    return {**summary, "state": state.value, "loss": result.get("loss"),
            "params": outcome.params, "error": failure.get("message"),
            "log_tail": (fields["log_tail"] or "")[-1000:]}


def _result_of(outcome: Outcome) -> dict[str, Any]:
    elapsed = (outcome.ended_at or 0.0) - (outcome.started_at or outcome.ended_at or 0.0)
    if outcome.kind == "timeout":
        return failure_result(TIMEOUT_KIND, f"killed at the hard time limit after "
                                            f"{elapsed:.1f} s")
    if outcome.kind == "done":
        assert outcome.result is not None
        if outcome.soft_signalled and outcome.result.get("status") != "ok":
            failure = outcome.result.get("failure") or {}
            return failure_result(TIMEOUT_KIND, f"stopped at the soft time limit after "
                                                f"{elapsed:.1f} s: {failure.get('message')}",
                                  failure.get("traceback"))
        return outcome.result
    if outcome.kind == "stopped":
        return failure_result("cancelled", "cancelled by the tuner while running")
    return failure_result("objective_unavailable", outcome.error or "unknown error",
                          outcome.traceback)


def _released(ctx: WorkerContext, app: Celery, claim: Claim, outcome: Outcome,
              experiment: VerifiedExperiment) -> dict[str, Any]:
    """The trial process died: give the trial back (or fail it after the attempt cap).

    If the worker is shutting down (it killed the process itself), the trial is handed
    back without counting the run, to be re-run elsewhere at once."""
    settings = ctx.settings
    stopping = ctx.stopping.is_set()
    reason = HANDED_BACK if stopping else (outcome.error or "trial process died")
    verdict = _with_retry(lambda: ctx.store.release(
        claim, reason, max_attempts=settings.max_attempts, now=time.time(),
        counted=not stopping), settings.result_retry_s)
    log.warning("trial %s/%s attempt %s: %s -> %s", claim.exp_id, claim.tid, claim.attempt,
                outcome.error, verdict)
    if verdict == "queued":
        try:
            send_trial(app, claim.exp_id, claim.tid, queue=experiment.queue or settings.queue)
        except KombuError as exc:  # the tuner's queue audit sends it again
            log.warning("trial %s/%s: could not re-send (%s)", claim.exp_id, claim.tid, exc)
    if verdict != "lost":
        state = TrialState.QUEUED if verdict == "queued" else TrialState.FAIL
        ctx.notifier.trial_changed(claim.exp_id, claim.tid, state.value)
    return {"exp_id": claim.exp_id, "tid": claim.tid, "attempt": claim.attempt,
            "state": verdict, "error": outcome.error}


def _with_retry(write: Any, budget_s: float) -> Any:
    """Retry a MongoDB operation through an outage with bounded exponential backoff; the
    message stays unacknowledged meanwhile (late acks). Raises once ``budget_s`` is
    spent: the trial's lease then expires and the tuner re-queues it (or, before the
    claim, the tuner's queue audit sends the trial again)."""
    deadline = time.monotonic() + budget_s
    delay = 0.25
    while True:
        try:
            return write()
        except (AutoReconnect, ConnectionFailure) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("MongoDB unavailable (%s); retrying the result write in %.1f s",
                        exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, defaults.RESULT_RETRY_MAX_DELAY_S)


def _tail(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - defaults.LOG_TAIL_BYTES))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
