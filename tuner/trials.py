"""``DistributedTrials``: a Hyperopt ``Trials`` whose trials run on Celery workers and
live in MongoDB.

``hyperopt.fmin(fn, space, algo, max_evals, trials=DistributedTrials("name"))`` hands
control to :meth:`DistributedTrials.fmin` (the hook Hyperopt's ``SparkTrials`` uses
too), which runs :class:`tuner.loop.SuggestionLoop` instead of Hyperopt's polling loop.
The local copy of the trials is kept in step incrementally: only trials that are not
finished are re-read, since a finished trial never changes again.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from hyperopt import base
from hyperopt.fmin import generate_trials_to_calculate, space_eval

from broker import objective
from broker import space as space_codec
from broker import spec as spec_module
from broker.errors import TunerError
from broker.settings import Settings
from broker.store import TrialStore
from broker.trial_doc import TID, TrialState, new_trial_fields, state_of
from tuner.session import Session, open_session

log = logging.getLogger(__name__)


class DistributedTrials(base.Trials):
    """Trials of one named experiment, evaluated by workers.

    :param experiment: experiment name; running again under the same name resumes it.
        Default: ``TUNER_EXPERIMENT`` / ``EXPERIMENT_NAME``, else a new timestamped name.
    :param parallelism: trials running at once; default: the number of live workers on
        the queue (re-read while running, so added workers are used).
    :param points_to_evaluate: points (dicts of label -> value, ``hp.choice`` as an index)
        to evaluate first, as Hyperopt's ``fmin(points_to_evaluate=...)``.
    :param trial_timeout: seconds after which a trial's whole process tree is killed and
        the trial recorded as ``timeout`` (default ``TUNER_TRIAL_TIMEOUT_S``, none).
    :param trial_soft_timeout: seconds after which the objective gets
        :class:`~broker.errors.SoftTimeLimitExceeded`, to save a checkpoint.
    :param weight: this experiment's share of a worker pool it shares with others
        (default 1; see :mod:`tuner.fair_share`).
    """

    asynchronous = True
    finished_trials_are_final = True
    """A finished document is never changed and ``trials`` is only appended to (it is
    rebuilt as a new list when a trial leaves it): the TPE's reader relies on this to
    skip re-checking the finished ones (:mod:`tuner.tpe.history`)."""

    def __init__(
        self,
        experiment: str | None = None,
        *,
        settings: Settings | None = None,
        parallelism: int | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        local_workers: int | None = None,
        trial_timeout: float | None = None,
        trial_soft_timeout: float | None = None,
        weight: float | None = None,
    ) -> None:
        self.settings = (Settings.from_env() if settings is None else settings).replace(
            **{k: v for k, v in (("trial_timeout_s", trial_timeout),
                                 ("trial_soft_timeout_s", trial_soft_timeout),
                                 ("weight", weight))
               if v is not None})
        self.experiment_name = experiment or self.settings.experiment or _default_name()
        self.parallelism = parallelism if parallelism is not None else self.settings.parallelism
        self.points_to_evaluate = points_to_evaluate
        self.local_workers = local_workers
        self.experiment: dict[str, Any] | None = None
        self.session: Session | None = None
        self._by_tid: dict[int, dict[str, Any]] = {}
        self._unfinished: set[int] = set()
        self._counts: dict[TrialState, int] = {}
        self._membership_changed = False
        self.best_loss: float | None = None
        super().__init__(exp_key=None, refresh=False)
        self._forget_all()

    # -- Hyperopt's Trials interface ------------------------------------------------------------

    @property
    def store(self) -> TrialStore:
        if self.session is None:
            raise TunerError("DistributedTrials is not connected: call fmin() first")
        return self.session.store

    def refresh(self) -> None:
        """Bring the view up to date: re-read unfinished trials only (see :meth:`sync`)."""
        if self.session is not None and self.experiment is not None:
            self.sync()
        self._rebuild_if_needed()

    def new_trial_ids(self, n: int) -> list[int]:
        assert self.experiment is not None
        return self.store.reserve_tids(self.experiment["_id"], n)

    def insert_trial_docs(self, docs: list[dict[str, Any]]) -> list[int]:
        """Validate and store new (queued) trials; the caller dispatches them."""
        now = time.time()
        ready = []
        for doc in docs:
            doc = self.assert_valid_trial(base.SONify(doc))
            doc["misc"]["cmd"] = None  # Hyperopt's pickled-domain pointer: unused here
            doc.update(new_trial_fields(now, (self.experiment or {}).get("spec_signature")))
            ready.append(doc)
        self.store.insert_trials([dict(d) for d in ready])
        for doc in ready:
            doc.pop("_id", None)
            self._remember(doc)
        return [d[TID] for d in ready]

    def delete_all(self) -> None:
        if self.experiment is not None:
            self.store.trials.delete_many({"exp_key": self.experiment["_id"]})
        self._forget_all()

    # -- incremental view ---------------------------------------------------------------------
    #
    # Hyperopt's own Trials rebuilds its lists from every document on each refresh; here
    # a document is updated in place when it changes (so the lists Hyperopt's algorithms
    # hold stay valid), counts are kept as trials change state, and the list of valid
    # trials is rebuilt only when a trial leaves it (is cancelled), which is rare.

    def _forget_all(self) -> None:
        self._by_tid.clear()
        self._unfinished.clear()
        self._counts = {state: 0 for state in TrialState}
        self._dynamic_trials = []
        self._trials = []
        self._membership_changed = False
        self.best_loss = None

    def load_all(self) -> None:
        """Read every trial of the experiment (once, when attaching)."""
        assert self.experiment is not None
        self._forget_all()
        for doc in self.store.find_trials(self.experiment["_id"]):
            self._remember(doc)
        self._rebuild_if_needed()

    def sync(self, tids: Iterable[int] | None = None) -> list[int]:
        """Re-read the unfinished trials (or those of ``tids`` that are unfinished);
        returns the tids whose document changed. Reads at most the trials in flight,
        however long the experiment's history."""
        wanted = self._unfinished if tids is None else self._unfinished.intersection(tids)
        if not wanted or self.experiment is None:
            return []
        docs = self.store.find_trials(self.experiment["_id"], tids=sorted(wanted))
        changed = []
        for doc in docs:
            old = self._by_tid.get(doc[TID])
            if old is None or old.get("refresh_time") != doc.get("refresh_time") or (
                    old["state"] != doc["state"]):
                self._remember(doc)
                changed.append(doc[TID])
        self._rebuild_if_needed()
        return changed

    def _remember(self, doc: dict[str, Any]) -> None:
        tid = doc[TID]
        old = self._by_tid.get(tid)
        if old is not None:
            was_valid = old["state"] in base.JOB_VALID_STATES
            self._counts[state_of(old)] -= 1
            old.clear()
            old.update(doc)  # in place: keeps the object Hyperopt's lists point at
            doc = old
            if was_valid and doc["state"] not in base.JOB_VALID_STATES:
                self._membership_changed = True
        else:
            self._by_tid[tid] = doc
            self._dynamic_trials.append(doc)
            if doc["state"] in base.JOB_VALID_STATES:
                self._trials.append(doc)
        state = state_of(doc)
        self._counts[state] += 1
        if state.is_finished:
            self._unfinished.discard(tid)
        else:
            self._unfinished.add(tid)
        if state is TrialState.OK:
            loss = float(doc["result"]["loss"])
            if not math.isnan(loss) and (self.best_loss is None or loss < self.best_loss):
                self.best_loss = loss

    def _rebuild_if_needed(self) -> None:
        if self._membership_changed:
            self._trials = [d for d in self._dynamic_trials
                            if d["state"] in base.JOB_VALID_STATES]
            self._membership_changed = False

    def counts(self) -> dict[TrialState, int]:
        return dict(self._counts)

    def usage_s(self, *, since: float) -> float:
        """Worker seconds this experiment's trials used since ``since`` (epoch seconds):
        finished runs that started then, plus the time running ones have run so far."""
        now = time.time()
        finished = sum(d.get("duration_s") or 0.0 for d in self._by_tid.values()
                       if (d.get("started_at") or 0) >= since and state_of(d).is_finished)
        running = sum(now - max(since, d.get("started_at") or now)
                      for t in self._unfinished
                      if (d := self._by_tid[t])["state"] == base.JOB_STATE_RUNNING)
        return finished + running

    def doc(self, tid: int) -> dict[str, Any]:
        """The local copy of trial ``tid``'s document."""
        return self._by_tid[tid]

    @property
    def in_flight(self) -> int:
        return len(self._unfinished)

    @property
    def n_counted(self) -> int:
        """Trials that count toward ``max_evals``: all but cancelled ones."""
        return len(self._by_tid) - self._counts[TrialState.CANCELLED]

    def unfinished(self, state: TrialState) -> list[int]:
        return sorted(t for t in self._unfinished if state_of(self._by_tid[t]) is state)

    # -- fmin -----------------------------------------------------------------------------------

    def fmin(
        self,
        fn: Callable[..., Any],
        space: Any,
        algo: Callable[..., Any],
        max_evals: int,
        timeout: float | None = None,
        loss_threshold: float | None = None,
        max_queue_len: int = 1,
        rstate: np.random.Generator | None = None,
        verbose: bool = True,
        pass_expr_memo_ctrl: bool | None = None,
        catch_eval_exceptions: bool = False,
        return_argmin: bool = True,
        show_progressbar: bool = True,
        early_stop_fn: Callable[..., Any] | None = None,
        trials_save_file: str = "",
    ) -> Any:
        """Run the experiment; called by ``hyperopt.fmin`` (see that for the arguments).

        ``max_queue_len`` is ignored (workers pull; ``parallelism`` governs), as is
        ``catch_eval_exceptions`` (a raising objective is always a failed trial)."""
        call_index = objective.capture_point(fn, space)
        if objective.capturing():
            return {}  # a worker replaying the script, at a tuning call it does not serve
        if pass_expr_memo_ctrl:
            raise TunerError("pass_expr_memo_ctrl is not supported by DistributedTrials")
        if trials_save_file:
            raise TunerError("trials_save_file is not supported: MongoDB keeps the trials")
        expr = space_codec.validate(space)
        self.settings.check_time_limits()
        if algo is None:
            from tuner import tpe

            algo = tpe.suggest
        spec = spec_module.build(fn, expr, self.settings.workspace, call_index, limits={
            "timeout_s": self.settings.trial_timeout_s,
            "soft_timeout_s": self.settings.trial_soft_timeout_s})
        with self._connected(local_workers=self.local_workers or self.parallelism) as session:
            self._attach(session, spec, expr, algo, max_evals)
            domain = base.Domain(fn, expr)
            self._seed_points()
            from tuner.loop import SuggestionLoop

            loop = SuggestionLoop(
                trials=self, domain=domain, algo=algo,
                rstate=rstate if rstate is not None else _default_rstate(),
                max_evals=max_evals, session=session, timeout=timeout,
                loss_threshold=loss_threshold, early_stop_fn=early_stop_fn,
                progress=bool(verbose and show_progressbar and self.settings.progress),
            )
            loop.run()
        if return_argmin:
            return self.argmin if self.best_loss is not None else self._all_failed()
        return space_eval(space, self.argmin) if self.best_loss is not None else None

    def _all_failed(self) -> dict[str, Any]:
        if len(self._trials) == 0:
            raise base.AllTrialsFailed("no trials were evaluated")
        raise base.AllTrialsFailed(
            f"all {len(self._trials)} trials failed; see `python -m tuner experiments trials "
            f"{self.experiment_name}`")

    @contextmanager
    def _connected(self, *, local_workers: int | None) -> Iterator[Session]:
        with open_session(self.settings, local_workers=local_workers) as session:
            self.session = session
            try:
                yield session
            finally:
                self.session = None

    def _attach(self, session: Session, spec: dict[str, Any], expr: Any, algo: Any,
                max_evals: int) -> None:
        from tuner.experiment import open_experiment

        text, signature = spec_module.seal(spec, session.settings.require_secret())
        self.experiment, resumed = open_experiment(
            session.store, self.experiment_name, spec_text=text, signature=signature,
            spec=spec, params=space_codec.describe(expr), queue=session.settings.queue,
            algo=_algo_name(algo), max_evals=max_evals,
        )
        self._exp_key = self.experiment["_id"]
        self.load_all()
        if resumed:
            log.info("resuming experiment %s (%s): %d trials already recorded",
                     self.experiment_name, self._exp_key, len(self._by_tid))

    def _seed_points(self) -> None:
        """Insert ``points_to_evaluate`` not already present (so resuming adds none)."""
        if not self.points_to_evaluate or self._by_tid:
            return
        seeded = generate_trials_to_calculate(self.points_to_evaluate)
        tids = self.new_trial_ids(len(seeded._dynamic_trials))
        docs = []
        for tid, doc in zip(tids, seeded._dynamic_trials, strict=True):
            doc["tid"] = doc["misc"]["tid"] = tid
            doc["exp_key"] = self._exp_key
            doc["misc"]["idxs"] = {k: ([tid] if v else []) for k, v in doc["misc"]["idxs"].items()}
            docs.append(doc)
        self.insert_trial_docs(docs)


def _default_name() -> str:
    main = sys.modules.get("__main__")
    stem = Path(getattr(main, "__file__", "") or "experiment").stem
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _default_rstate() -> np.random.Generator:
    return np.random.default_rng()


def _algo_name(algo: Any) -> str:
    module = getattr(algo, "__module__", "") or ""
    name = getattr(algo, "__name__", None) or type(algo).__name__
    return f"{module}.{name}" if module else name
