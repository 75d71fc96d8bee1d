"""Past and pending trials as arrays: what the TPE reads from a ``Trials`` object.

A :class:`History` holds one row per trial: the point in internal coordinates (NaN
where a parameter is inactive), the loss (NaN unless the trial succeeded), and whether
the trial is finished or pending (queued or running). Failed trials are finished
without a loss; cancelled ones are left out.

Reading 5,000 trial documents in Python costs more than the whole model fit, so the
rows read are cached per ``Trials`` object and reused for the leading documents that
are the very objects read last time, with the very same ``misc`` and ``result``
objects (compared by identity, in C; the cache holds references, so identities stay
unique). A trial that finishes gets a new ``result``, and a document re-read from a
store is a new object: both are read again. Pending documents are re-checked for
their state every time (a queued trial may have been cancelled).

Comparing 10,000 identities still costs a few milliseconds per call. A ``Trials`` that
sets ``finished_trials_are_final = True`` promises that it never changes a finished
document and only appends to its ``trials`` list (a list it rebuilds is a new object);
:class:`tuner.trials.DistributedTrials` does. For it, while the list is the one read
last time, only the documents that were pending are compared.
"""

from __future__ import annotations

import math
import operator
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hyperopt import base

from tuner.tpe.space import Space

_FINISHED = frozenset({base.JOB_STATE_DONE, base.JOB_STATE_ERROR})
_PENDING = frozenset({base.JOB_STATE_NEW, base.JOB_STATE_RUNNING})
_MISC = operator.itemgetter("misc")
_RESULT = operator.itemgetter("result")
_FIN, _PEND, _SKIP = 0, 1, 2


@dataclass
class History:
    """Trials as arrays, finished ones first, each part in ``tid`` order."""

    X: np.ndarray  # (n, n_params) internal coordinates, NaN = inactive
    loss: np.ndarray  # (n,) loss of successful trials, NaN otherwise
    finished: np.ndarray  # (n,) bool: finished (ok or failed) vs pending
    tids: np.ndarray  # (n,) int

    @property
    def ok(self) -> np.ndarray:
        return self.finished & ~np.isnan(self.loss)


@dataclass
class _Rows:
    """What was read from one ``Trials`` object last time, document by document."""

    space: Space
    docs: list[Any] = field(default_factory=list)
    miscs: list[Any] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    X: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    loss: np.ndarray = field(default_factory=lambda: np.empty(0))
    tids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    kind: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int8))
    ids: tuple[np.ndarray, ...] = ()  # id() of docs, miscs, results (kept alive above)
    source: list[Any] | None = None  # the Trials' own list, as read last time


_CACHE: weakref.WeakKeyDictionary[Any, _Rows] = weakref.WeakKeyDictionary()


def read(trials: Any, space: Space) -> History:
    """The history of ``trials`` (a Hyperopt ``Trials``) in ``space``'s coordinates."""
    docs = trials.trials  # the cache keeps this list only to recognise it next time
    rows = _cache_for(trials, space)
    if getattr(trials, "finished_trials_are_final", False) and docs is rows.source:
        ids = None
        reuse = _reusable_pending(docs, rows)
    else:
        ids = _identities(docs)
        reuse = _reusable(ids, rows.ids)
    new = docs[reuse:]
    n_params = len(space.params)
    X = np.vstack([rows.X[:reuse].reshape(reuse, n_params),
                   np.array([_point(d, space) for d in new], float).reshape(len(new), n_params)])
    loss = np.concatenate([rows.loss[:reuse], [_loss(d) for d in new]])
    tids = np.concatenate([rows.tids[:reuse], np.array([d["tid"] for d in new], np.int64)])
    kind = np.concatenate([rows.kind[:reuse], np.array([_kind(d) for d in new], np.int8)])
    for i in np.flatnonzero(kind[:reuse] == _PEND):  # a pending trial may be cancelled
        kind[i] = _kind(docs[i])
    rows.X, rows.loss, rows.tids, rows.kind = X, loss, tids, kind
    # the cached lists are updated in place, not rebuilt: a new list of every document
    # per call would be young, and each garbage collection until it aged would walk it
    for cached, fresh in ((rows.docs, new), (rows.miscs, map(_MISC, new)),
                          (rows.results, map(_RESULT, new))):
        del cached[reuse:]
        cached.extend(fresh)
    if ids is None:
        ids = tuple(np.concatenate([old[:reuse], fresh])
                    for old, fresh in zip(rows.ids, _identities(new), strict=True))
    rows.ids = ids  # of the very objects the cached lists now hold
    rows.source = docs

    fin = np.flatnonzero(kind == _FIN)
    pend = np.flatnonzero(kind == _PEND)
    fin, pend = _by_tid(fin, tids), _by_tid(pend, tids)
    order = np.concatenate([fin, pend])
    finished = np.zeros(len(order), dtype=bool)
    finished[:len(fin)] = True
    loss_out = loss[order]
    loss_out[~finished] = np.nan
    return History(X=X[order], loss=loss_out, finished=finished, tids=tids[order])


def _by_tid(index: np.ndarray, tids: np.ndarray) -> np.ndarray:
    t = tids[index]
    if len(t) < 2 or bool(np.all(t[1:] >= t[:-1])):  # the usual case: nothing to sort
        return index
    return index[np.argsort(t, kind="stable")]


def _identities(docs: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``id()`` of each document, of its ``misc`` and of its ``result``."""
    n = len(docs)
    return _ids(docs, n), _ids(map(_MISC, docs), n), _ids(map(_RESULT, docs), n)


def _reusable(ids: tuple[np.ndarray, ...], cached: tuple[np.ndarray, ...]) -> int:
    """How many leading documents are the ones read last time, unchanged: the same
    document, ``misc`` and ``result`` objects (identities compared as arrays)."""
    n = min(len(ids[0]), len(cached[0])) if cached else 0
    if n == 0:
        return 0
    same = (ids[0][:n] == cached[0][:n]) & (ids[1][:n] == cached[1][:n])
    same &= ids[2][:n] == cached[2][:n]
    return n if same.all() else int(np.argmin(same))


def _reusable_pending(docs: list[Any], rows: _Rows) -> int:
    """:func:`_reusable` for a list that was only appended to since it was read and
    whose finished documents are final: only the rows that were pending can differ."""
    for i in np.flatnonzero(rows.kind == _PEND):
        doc = docs[i]
        if (doc is not rows.docs[i] or doc["misc"] is not rows.miscs[i]
                or doc["result"] is not rows.results[i]):
            return int(i)
    return min(len(docs), len(rows.docs))


def _ids(objects: Any, n: int) -> np.ndarray:
    return np.fromiter(map(id, objects), dtype=np.int64, count=n)


def _cache_for(trials: Any, space: Space) -> _Rows:
    try:
        rows = _CACHE.get(trials)
    except TypeError:  # not weak-referenceable: a fresh (throwaway) cache every time
        return _Rows(space)
    if rows is None or rows.space is not space:
        rows = _Rows(space)
        _CACHE[trials] = rows
    return rows


def _kind(doc: dict[str, Any]) -> int:
    state = doc["state"]
    return _FIN if state in _FINISHED else _PEND if state in _PENDING else _SKIP


def _point(doc: dict[str, Any], space: Space) -> np.ndarray:
    """A document's point; a value the space cannot hold (an option index out of range,
    something not a number, e.g. from a hand-written point) reads as inactive."""
    x = np.full(len(space.params), np.nan)
    vals = doc["misc"].get("vals") or {}
    for label, values in vals.items():
        j = space.index.get(label)
        if j is None or not values:
            continue
        param = space.params[j]
        try:
            t = param.to_internal(values[0])
        except (TypeError, ValueError, OverflowError):
            continue
        if param.categorical and not 0 <= t < param.n_options or math.isnan(t):
            continue
        x[j] = t
    return x


def _loss(doc: dict[str, Any]) -> float:
    result = doc.get("result") or {}
    if doc["state"] != base.JOB_STATE_DONE or result.get("status") != base.STATUS_OK:
        return math.nan
    try:
        value = float(result.get("loss"))
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan
