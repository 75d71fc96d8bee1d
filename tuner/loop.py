"""The suggestion loop: keep the workers busy with the most promising trials.

It replaces Hyperopt's ``FMinIter`` loop (which sleeps a fixed second between looks)
with an event-driven one: whenever a slot frees up it asks the algorithm for a point,
stores it and sends it; then it sleeps until a worker announces a change (Redis
pub/sub) or the sweep interval passes, and re-reads only the unfinished trials.

Every sweep it also re-queues trials whose worker died (expired lease) and re-reads
how many workers serve the queue. Stopping (``max_evals`` reached, ``timeout``,
``loss_threshold``, ``early_stop_fn``) cancels queued trials; a timeout or an
interrupt also stops running ones, otherwise they are waited for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from hyperopt import base

from broker.notify import Subscription
from broker.trial_doc import TrialState
from tuner.experiment import finish_experiment
from tuner.progress import ProgressView, Snapshot
from tuner.session import Session

log = logging.getLogger(__name__)

NO_WORKER_WARNING_S = 30.0
"""How often to warn that trials wait and no worker serves their queue (seconds)."""


class SuggestionLoop:
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

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> str:
        """Run until a stop condition holds; returns its name."""
        subscription = Subscription(self.settings.broker_url or "", self.exp_id)
        state = "failed"
        try:
            with self._view:
                self._recover()
                while (reason := self._stop_reason()) is None:
                    self._fill()
                    self._report()
                    self._wait(subscription)
                self._wind_down(reason, subscription)
                state = "finished"
                return reason
        except KeyboardInterrupt:
            state = "interrupted"
            self.session.store.cancel(self.exp_id, running=True)
            raise
        finally:
            subscription.close()
            finish_experiment(self.session.store, self.exp_id, state)

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
        parallelism = self.trials.parallelism or max(1, self._workers)
        return parallelism + self.settings.queue_ahead - self.trials.in_flight

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
            self.session.dispatcher.send(self.exp_id, tids)

    def _wait(self, subscription: Subscription) -> None:
        timeout = max(0.0, self._next_sweep - time.monotonic())
        if self.timeout is not None and self._stop_reason() is None:
            timeout = min(timeout, max(0.0, self._started + self.timeout - time.monotonic()))
        subscription.wait(timeout)
        if time.monotonic() >= self._next_sweep:
            self._sweep()
        if self.trials.sync():
            self._check_early_stop()

    def _sweep(self) -> None:
        """Re-queue trials whose worker died; re-read how many workers are alive."""
        self._next_sweep = time.monotonic() + self.settings.heartbeat_s
        requeued, failed = self.session.store.requeue_expired(
            self.exp_id, now=time.time(), max_attempts=self.settings.max_attempts)
        if requeued:
            log.warning("re-queued trials %s: their workers stopped renewing their leases",
                        requeued)
            self.session.dispatcher.send(self.exp_id, requeued)
        if failed:
            log.warning("trials %s lost their worker %d times: recorded as failed", failed,
                        self.settings.max_attempts)
        self.session.check_local_workers()
        self._workers = max(self.session.local_workers, self.session.alive_workers())
        if self._workers == 0 and self.trials.in_flight and time.monotonic() > self._next_warning:
            self._next_warning = time.monotonic() + NO_WORKER_WARNING_S
            log.warning("no live worker consumes queue %s; start one with `python -m workers "
                        "--worker-machine-type %s`", self.settings.queue,
                        self.settings.machine_type)

    def _recover(self) -> None:
        """On resume: re-send queued trials (their messages may be gone) and re-queue
        running ones whose lease expired. A duplicate message is harmless."""
        queued = self.trials.unfinished(TrialState.QUEUED)
        if queued:
            self.session.dispatcher.send(self.exp_id, queued)
        self._sweep()
        self.trials.sync()

    def _check_early_stop(self) -> None:
        if self.early_stop_fn is None or self._early_stopped:
            return
        stop, self._early_stop_args = self.early_stop_fn(self.trials, *self._early_stop_args)
        if stop:
            log.info("early stop: %s", getattr(self.early_stop_fn, "__name__", "early_stop_fn"))
            self._early_stopped = True

    def _wind_down(self, reason: str, subscription: Subscription) -> None:
        """Cancel what is queued; stop (timeout) or wait for (otherwise) what runs."""
        self.session.store.cancel(self.exp_id, running=reason == "timeout")
        self.trials.sync()
        deadline = time.monotonic() + self.settings.lease_s + self.settings.heartbeat_s
        while self.trials.in_flight:
            if reason == "timeout" and time.monotonic() > deadline:
                log.warning("trials %s did not stop in time", sorted(self.trials._unfinished))
                break
            self._report()
            self._wait(subscription)
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
