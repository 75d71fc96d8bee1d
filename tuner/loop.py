"""The suggestion loop: keep the workers busy with the most promising trials.

It replaces Hyperopt's ``FMinIter`` loop (which sleeps a fixed second between looks)
with an event-driven one: whenever a slot frees up it asks the algorithm for a point,
stores it and sends it; then it sleeps until a worker announces a change (Redis
pub/sub) or the sweep interval passes, and re-reads only the unfinished trials.

Every sweep (one heartbeat) it also re-queues trials whose worker died (expired lease),
re-sends queued trials whose message was lost, and re-reads how many worker slots serve
the queue and this experiment's share of them (:mod:`tuner.fair_share`). A MongoDB
outage is waited out (:mod:`tuner.outage`). Stopping (``max_evals`` reached,
``timeout``, ``loss_threshold``, ``early_stop_fn``) cancels queued trials; a timeout or
an interrupt also stops running ones, otherwise they are waited for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from hyperopt import base
from kombu.exceptions import KombuError

from broker import defaults
from broker.notify import Subscription
from broker.trial_doc import TrialState, state_of
from tuner.experiment import finish_experiment
from tuner.fair_share import FairShare
from tuner.outage import OutageGuard
from tuner.progress import ProgressView, Snapshot
from tuner.session import Session

log = logging.getLogger(__name__)

NO_WORKER_WARNING_S = 30.0
"""How often to warn that trials wait and no worker serves their queue (seconds)."""


class SuggestionLoop:
    """One experiment's loop; :meth:`run` returns why it stopped."""

    def __init__(
        self,
        *,
        trials: Any,
        domain: base.Domain,
        algo: Callable[..., Any],
        rstate: np.random.Generator,
        max_evals: int,
        session: Session,
        timeout: float | None = None,
        loss_threshold: float | None = None,
        early_stop_fn: Callable[..., Any] | None = None,
        progress: bool = True,
    ) -> None:
        self.trials = trials
        self.domain = domain
        self.algo = algo
        self.rstate = rstate
        self.max_evals = max_evals
        self.session = session
        self.settings = session.settings
        self.exp_id: str = trials.experiment["_id"]
        self.timeout = timeout
        self.loss_threshold = loss_threshold
        self.early_stop_fn = early_stop_fn
        self._early_stop_args: list[Any] = []
        self._early_stopped = False
        self._exhausted = False
        self._workers = max(session.local_workers, session.alive_workers())
        self._next_sweep = 0.0
        self._next_warning = time.monotonic() + NO_WORKER_WARNING_S
        self._started = time.monotonic()
        self._view = ProgressView(trials.experiment_name, enabled=progress)
        # after an outage, workers need a lease period plus a retry and a reconnection
        # to write the results they held (or renew) before their trials are taken away
        self._outage = OutageGuard(
            budget_s=self.settings.mongo_outage_s,
            settle_s=(self.settings.lease_s + 2 * self.settings.heartbeat_s
                      + defaults.RESULT_RETRY_MAX_DELAY_S + defaults.CONNECT_TIMEOUT_S))
        self._subscription: Subscription | None = None
        self._share = FairShare(session.store, session.redis, exp_id=self.exp_id,
                                queue=self.settings.queue, weight=self.settings.weight,
                                stale_s=3 * self.settings.heartbeat_s + 1)
        self._seats = 0

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> str:
        """Run until a stop condition holds; returns its name."""
        subscription = Subscription(self.settings.broker_url or "", self.exp_id,
                                    self.settings.queue)
        self._subscription = subscription
        state = "failed"
        try:
            with self._view:
                while not self._outage.attempt(self._recover)[0]:
                    pass
                while (reason := self._outage.attempt(self._step)[1]) is None:
                    pass
                while not self._outage.attempt(lambda: self._wind_down(reason))[0]:
                    pass
                state = "finished"
                return reason
        except KeyboardInterrupt:
            state = "interrupted"
            self.session.store.cancel(self.exp_id, running=True)
            raise
        finally:
            subscription.close()
            self._outage.attempt(self._share.leave)
            self._outage.attempt(lambda: finish_experiment(self.session.store, self.exp_id,
                                                           state))

    def _step(self) -> str | None:
        """One turn of the loop; returns why to stop, or None to go on."""
        reason = self._stop_reason()
        if reason is None:
            self._fill()
            self._report()
            self._wait()
        return reason

    def _stop_reason(self) -> str | None:
        if self.timeout is not None and time.monotonic() - self._started >= self.timeout:
            return "timeout"
        best = self.trials.best_loss
        if self.loss_threshold is not None and best is not None and best < self.loss_threshold:
            return "loss_threshold"
        if self._early_stopped:
            return "early_stop"
        if self.trials.in_flight == 0 and (self._remaining() == 0 or self._exhausted):
            return "max_evals" if not self._exhausted else "algo_exhausted"
        return None

    def _remaining(self) -> int:
        return max(0, self.max_evals - self.trials.n_counted)

    def _slots(self) -> int:
        if self._share.sharing:  # our share of the pool, and no look-ahead (fair_share)
            return self._seats - self.trials.in_flight
        parallelism = self.trials.parallelism or max(1, self._workers)
        ahead = self.settings.queue_ahead
        if ahead is None:
            ahead = -(-parallelism // defaults.WORKERS_PER_QUEUED_AHEAD)
        return parallelism + ahead - self.trials.in_flight

    def _demand(self) -> int:
        """How many trials this experiment could have in flight now."""
        if self._exhausted or self._stop_reason() is not None:
            return self.trials.in_flight
        counts = self.trials.counts()
        unfinished = self.max_evals - sum(counts[s] for s in TrialState if s.is_finished
                                          and s is not TrialState.CANCELLED)
        cap = self.trials.parallelism or max(1, self._workers)
        return max(0, min(cap, unfinished))

    def _fill(self) -> None:
        """Suggest and send trials until every slot is taken or ``max_evals`` is reached.

        An algorithm with ``supports_batch = True`` proposes all free slots in one call
        (one model fit); others are asked once per trial, each call seeing the earlier
        ones as pending."""
        batch = bool(getattr(self.algo, "supports_batch", False))
        while not self._exhausted and (wanted := min(self._slots(), self._remaining())) > 0:
            new_ids = self.trials.new_trial_ids(wanted if batch else 1)
            seed = int(self.rstate.integers(2**31 - 1))
            docs = self.algo(new_ids, self.domain, self.trials, seed)
            if not docs:
                self._exhausted = True
                return
            tids = self.trials.insert_trial_docs(docs)
            self._send(tids)

    def _send(self, tids: list[int]) -> None:
        """Send trials; if the broker is down they stay queued in MongoDB and the sweep's
        queue audit sends them again once it is back."""
        try:
            self.session.dispatcher.send(self.exp_id, tids)
        except KombuError as exc:
            log.warning("could not send trials %s (%s); will retry", tids, exc)

    def _wait(self) -> None:
        assert self._subscription is not None
        timeout = max(0.0, self._next_sweep - time.monotonic())
        if self.timeout is not None and self._stop_reason() is None:
            timeout = min(timeout, max(0.0, self._started + self.timeout - time.monotonic()))
        announced = self._subscription.wait(timeout)
        sweep = self._subscription.pool_changed or time.monotonic() >= self._next_sweep
        if sweep:
            self._subscription.pool_changed = False
            self._sweep()
        # workers announce each finished trial: read just those, and everything in
        # flight only at a sweep or when no announcement came (Redis down, a timeout)
        if self.trials.sync(None if sweep or not announced else announced):
            self._check_early_stop()

    def _sweep(self) -> None:
        """Re-queue trials whose worker died, re-send trials whose message was lost, and
        re-read how many workers are alive."""
        self._next_sweep = time.monotonic() + self.settings.heartbeat_s
        if self._outage.settled:
            requeued, failed = self.session.store.requeue_expired(
                self.exp_id, now=time.time(), max_attempts=self.settings.max_attempts)
            if requeued:
                log.warning("re-queued trials %s: their workers stopped renewing their "
                            "leases", requeued)
                self._send(requeued)
            if failed:
                log.warning("trials %s lost their worker %d times: recorded as failed",
                            failed, self.settings.max_attempts)
        self._audit_queue()
        self.session.check_local_workers()
        self._workers = max(self.session.local_workers, self.session.alive_workers())
        self._seats = self._share.seats(demand=self._demand(), workers=self._workers,
                                        usage_s=self.trials.usage_s(since=self._share.joined_at))
        if self._workers == 0 and self.trials.in_flight and time.monotonic() > self._next_warning:
            self._next_warning = time.monotonic() + NO_WORKER_WARNING_S
            log.warning("no live worker consumes queue %s; start one with `python -m workers "
                        "--worker-machine-type %s`", self.settings.queue,
                        self.settings.machine_type)

    def _audit_queue(self) -> None:
        """Queued trials whose message is gone (Redis restarted empty, a send failed, a
        worker died between taking a message and claiming it) are sent again: when the
        broker's queue is empty but trials have waited longer than two heartbeats. A
        duplicate message is harmless (the claim is conditional)."""
        stale_before = time.time() - 2 * self.settings.heartbeat_s
        candidates = [tid for tid in self.trials.unfinished(TrialState.QUEUED)
                      if (self.trials.doc(tid).get("queued_at") or 0) < stale_before]
        if not candidates or self.session.queue_length() != 0:
            return
        stale = [d["tid"] for d in self.session.store.find_trials(
            self.exp_id, tids=candidates, projection={"tid": 1, "state": 1, "queued_at": 1})
            if state_of(d) is TrialState.QUEUED and d.get("queued_at", 0) < stale_before]
        if stale:
            log.warning("trials %s are queued but their messages are gone; sending again",
                        stale)
            self._send(stale)

    def _recover(self) -> None:
        """On resume: re-send queued trials (their messages may be gone) and re-queue
        running ones whose lease expired. A duplicate message is harmless."""
        queued = self.trials.unfinished(TrialState.QUEUED)
        if queued:
            self._send(queued)
        self._sweep()
        self.trials.sync()

    def _check_early_stop(self) -> None:
        if self.early_stop_fn is None or self._early_stopped:
            return
        stop, self._early_stop_args = self.early_stop_fn(self.trials, *self._early_stop_args)
        if stop:
            log.info("early stop: %s", getattr(self.early_stop_fn, "__name__", "early_stop_fn"))
            self._early_stopped = True

    def _wind_down(self, reason: str) -> None:
        """Cancel what is queued; stop (timeout) or wait for (otherwise) what runs."""
        self.session.store.cancel(self.exp_id, running=reason == "timeout")
        self.trials.sync()
        deadline = time.monotonic() + self.settings.lease_s + self.settings.heartbeat_s
        while self.trials.in_flight:
            if reason == "timeout" and time.monotonic() > deadline:
                log.warning("trials %s did not stop in time", sorted(self.trials._unfinished))
                break
            self._report()
            self._wait()
        self._report()

    def _report(self) -> None:
        counts = self.trials.counts()
        self._view.update(Snapshot(
            finished=counts[TrialState.OK] + counts[TrialState.FAIL],
            max_evals=self.max_evals,
            best_loss=self.trials.best_loss,
            running=counts[TrialState.RUNNING],
            queued=counts[TrialState.QUEUED],
            failed=counts[TrialState.FAIL],
            workers=self._workers,
        ))
