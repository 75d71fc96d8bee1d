"""An in-memory index of one experiment's trials, kept current by small reads.

The dashboard's charts need every trial's loss and parameters (best-so-far curves,
importance, a sample of points); reading 10,000 documents on every refresh would be
slow, and shipping them to the browser slower still. A :class:`TrialIndex` reads the
experiment once, then on each refresh only the trials it has not seen finish:

* trials with a ``tid`` above the highest one it knows (suggested since), and
* the trials it holds as queued or running (a finished trial never changes again).

Each trial it sees finish gets the next *sequence number*, so a browser can ask for
"what finished after number N" exactly, whatever the hosts' clocks say. The index
re-reads everything (and takes a new ``epoch``, which tells browsers to start over)
when the number of trials in MongoDB stops matching, e.g. after trials were deleted.

Every public method is thread-safe; the HTTP server calls them from several threads.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from broker.store import TrialStore
from broker.trial_doc import EXP_KEY, TrialState, state_of
from tuner import report
from tuner.dashboard import queries
from tuner.dashboard.importance import Importance, importance

REFRESH_INTERVAL_S = 0.5
"""Requests arriving within this long of the last refresh share it: a page's one tick
makes several requests, and they should cost one set of reads."""

IMPORTANCE_INTERVAL_S = 5.0
"""Importance is recomputed at most this often while trials keep finishing."""

POINTS_LIMIT = 1000
"""Most points (trials) one points response carries."""

POINTS_BEST = 200
"""Of a sample, how many are the best trials (the rest are spread evenly by ``tid``)."""

LANES_LIMIT = 300
"""How many of the most recently started trials the worker lanes show."""


@dataclass
class IndexedTrial:
    """What the index keeps of a trial."""

    tid: int
    state: TrialState
    loss: float | None
    started_at: float | None
    ended_at: float | None
    worker: str | None
    host: str | None
    gpu: str | None
    vals: dict[str, float]
    seq: int = 0
    """Order in which the index saw the trial finish (0 while unfinished)."""


def _indexed(doc: dict[str, Any]) -> IndexedTrial:
    state = state_of(doc)
    result = doc.get("result") or {}
    loss = result.get("loss") if state is TrialState.OK else None
    vals = {}
    for label, values in ((doc.get("misc") or {}).get("vals") or {}).items():
        if values and isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            vals[label] = float(values[0])
    return IndexedTrial(
        tid=int(doc["tid"]), state=state, loss=None if loss is None else float(loss),
        started_at=doc.get("started_at"), ended_at=doc.get("ended_at"),
        worker=doc.get("worker"), host=doc.get("host"),
        gpu=None if doc.get("gpu") is None else str(doc.get("gpu")), vals=vals)


@dataclass
class _ImportanceCache:
    n_ok: int = -1
    at: float = 0.0
    scores: list[Importance] = field(default_factory=list)


class TrialIndex:
    """The trials of experiment ``exp_id``, as the dashboard needs them."""

    def __init__(self, exp_id: str) -> None:
        self.exp_id = exp_id
        self.epoch = ""
        self._lock = threading.RLock()
        self._trials: dict[int, IndexedTrial] = {}
        self._unfinished: set[int] = set()
        self._param_columns: dict[str, None] = {}
        self._max_tid = -1
        self._seq = 0
        self._refreshed_at = 0.0
        self._importance = _ImportanceCache()

    # -- reading MongoDB ------------------------------------------------------------------

    def refresh(self, store: TrialStore, *, max_age_s: float = REFRESH_INTERVAL_S) -> None:
        """Bring the index up to date, unless it was refreshed less than ``max_age_s`` ago."""
        with self._lock:
            if self.epoch and time.monotonic() - self._refreshed_at < max_age_s:
                return
            if not self.epoch:
                self._reload(store)
            else:
                docs = queries.index_after(store, self.exp_id, self._max_tid)
                docs += queries.index_tids(store, self.exp_id, sorted(self._unfinished))
                self._apply(docs)
                if queries.count(store, {EXP_KEY: self.exp_id}) != len(self._trials):
                    self._reload(store)
            self._refreshed_at = time.monotonic()

    def _reload(self, store: TrialStore) -> None:
        self.epoch = secrets.token_hex(4)
        self._trials.clear()
        self._unfinished.clear()
        self._param_columns.clear()
        self._max_tid = -1
        self._seq = 0
        self._importance = _ImportanceCache()
        docs = queries.index_all(store, self.exp_id)
        # finished trials are numbered in the order they finished
        docs.sort(key=lambda d: (d.get("ended_at") or 0.0, d["tid"]))
        self._apply(docs)

    def _apply(self, docs: Iterable[dict[str, Any]]) -> None:
        for doc in docs:
            trial = _indexed(doc)
            old = self._trials.get(trial.tid)
            if old is not None and old.state.is_finished:
                continue
            if trial.state.is_finished:
                self._seq += 1
                trial.seq = self._seq
                self._unfinished.discard(trial.tid)
            else:
                self._unfinished.add(trial.tid)
            self._trials[trial.tid] = trial
            self._max_tid = max(self._max_tid, trial.tid)
            if doc.get("params") is not None:
                for key in report.flatten(doc["params"]):
                    self._param_columns.setdefault(f"param.{key}", None)

    # -- views ------------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        return self._seq

    def counts(self) -> dict[str, int]:
        with self._lock:
            counts = {state.value: 0 for state in TrialState}
            for trial in self._trials.values():
                counts[trial.state.value] += 1
            return counts

    def param_columns(self) -> list[str]:
        with self._lock:
            return list(self._param_columns)

    def best(self) -> IndexedTrial | None:
        with self._lock:
            return min(self._ok(), key=lambda t: (t.loss, t.tid), default=None)

    def finished_points(self) -> list[tuple[int, float | None, float]]:
        """``(tid, ended_at, loss)`` of each successful trial (for best-so-far curves)."""
        with self._lock:
            return [(t.tid, t.ended_at, t.loss) for t in self._ok() if t.loss is not None]

    def points(self, labels: list[str], *, after: int = 0, epoch: str | None = None,
               limit: int = POINTS_LIMIT, best: int = POINTS_BEST) -> dict[str, Any]:
        """Successful trials as ``[tid, loss, value of each label...]`` rows.

        With ``after`` and the current ``epoch``: those that finished after sequence
        number ``after`` (a live refresh). Otherwise, or when more than ``limit``
        finished since, a sample of at most ``limit`` (``reset`` is true): the ``best``
        lowest losses and an even spread of the rest.
        """
        with self._lock:
            ok = list(self._ok())
            fresh = None
            if after > 0 and epoch == self.epoch:
                fresh = [t for t in ok if t.seq > after]
                if len(fresh) > limit:
                    fresh = None
            chosen = fresh if fresh is not None else _sample(ok, limit, best)
            chosen.sort(key=lambda t: t.tid)
            return {
                "epoch": self.epoch,
                "seq": self._seq,
                "reset": fresh is None,
                "total": len(ok),
                "labels": labels,
                "rows": [[t.tid, _short(t.loss), *(_short(t.vals.get(label)) for label in labels)]
                         for t in chosen],
            }

    def lanes(self, *, limit: int = LANES_LIMIT) -> list[IndexedTrial]:
        """The ``limit`` most recently started trials, and every running one."""
        with self._lock:
            started = sorted((t for t in self._trials.values() if t.started_at is not None),
                             key=lambda t: (t.started_at, t.tid), reverse=True)
            shown = started[:limit]
            running = [t for t in started[limit:] if t.state is TrialState.RUNNING]
            return shown + running

    def importance(self, labels: list[str], *, max_age_s: float = IMPORTANCE_INTERVAL_S
                   ) -> list[Importance]:
        """Importance scores (:mod:`tuner.dashboard.importance`) over the successful trials,
        recomputed when trials finished and the last computation is ``max_age_s`` old."""
        with self._lock:
            ok = [t for t in self._ok() if t.loss is not None]
            cache = self._importance
            if cache.n_ok == len(ok) or (cache.n_ok >= 0 and
                                         time.monotonic() - cache.at < max_age_s):
                return cache.scores
            losses = [t.loss for t in ok]
            values = {label: [t.vals.get(label) for t in ok] for label in labels}
            self._importance = _ImportanceCache(len(ok), time.monotonic(),
                                                importance(losses, values))
            return self._importance.scores

    def _ok(self) -> Iterable[IndexedTrial]:
        return (t for t in self._trials.values() if t.state is TrialState.OK)


def _sample(ok: list[IndexedTrial], limit: int, best: int) -> list[IndexedTrial]:
    if len(ok) <= limit:
        return list(ok)
    by_loss = sorted(ok, key=lambda t: (t.loss, t.tid))
    chosen = by_loss[:best]
    rest = sorted(by_loss[best:], key=lambda t: t.tid)
    step = len(rest) / (limit - best)
    chosen.extend(rest[int(i * step)] for i in range(limit - best))
    return chosen


def _short(value: float | None) -> float | None:
    """Seven significant digits: plenty for a chart, a third of the bytes of ``repr``."""
    return None if value is None else float(f"{value:.7g}")


class IndexRegistry:
    """One :class:`TrialIndex` per experiment, the ``capacity`` most recently used."""

    def __init__(self, store: TrialStore, *, capacity: int = 8) -> None:
        self.store = store
        self.capacity = capacity
        self._lock = threading.Lock()
        self._indexes: OrderedDict[str, TrialIndex] = OrderedDict()

    def get(self, exp_id: str) -> TrialIndex:
        """The experiment's index, refreshed."""
        with self._lock:
            index = self._indexes.pop(exp_id, None) or TrialIndex(exp_id)
            self._indexes[exp_id] = index
            while len(self._indexes) > self.capacity:
                self._indexes.popitem(last=False)
        index.refresh(self.store)
        return index
