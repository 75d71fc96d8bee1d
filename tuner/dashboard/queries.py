"""Every MongoDB read the dashboard makes, with the projections it needs.

The queries stay within what every MongoDB-compatible server answers the same way:
``find`` with filters, projections, sort, skip and limit, and ``aggregate`` with
``$match``, ``$group`` on one field, and ``$count`` (``count_documents`` is avoided:
some servers run its ``$group: {_id: 1}`` pipeline very slowly). Servers differ in how
they return a projected dotted path (``{"result.loss": 1}``): real MongoDB nests it,
the embedded ``nx-27017`` returns the dotted key; :func:`nest` makes both look nested.
"""

from __future__ import annotations

from typing import Any

from broker.store import TrialStore, trial_id
from broker.trial_doc import EXP_KEY, TID, TrialState

MAX_PAGE = 200
"""Most rows one trials-table request returns."""

EXPERIMENT_FIELDS = {"spec": 0, "spec_signature": 0, "objective.sha256": 0}
"""What the experiment document loses on the way to the browser."""

ROW_PROJECTION = {"_id": 0, "misc.vals": 1, TID: 1, "state": 1, "result": 1, "attempt": 1,
                  "host": 1, "gpu": 1, "worker": 1, "duration_s": 1, "started_at": 1,
                  "ended_at": 1, "params": 1}
"""A trials-table row: what :func:`tuner.report.trial_row` reads."""

INDEX_PROJECTION = {"_id": 0, TID: 1, "state": 1, "result.status": 1, "result.loss": 1,
                    "misc.vals": 1, "started_at": 1, "ended_at": 1, "worker": 1, "host": 1,
                    "gpu": 1, "params": 1}
"""What the dashboard's in-memory index keeps of each trial (no result payload, no log)."""

DETAIL_EXCLUDE = {"_id": 0, "lease": 0, "spec": 0, "spec_signature": 0}
"""A trial's detail: everything but the lease token and the spec."""

SORT_FIELDS = {
    "tid": TID, "state": "state", "loss": "result.loss", "attempt": "attempt",
    "host": "host", "gpu": "gpu", "worker": "worker", "duration_s": "duration_s",
    "started_at": "started_at", "ended_at": "ended_at",
}
"""Table columns the browser may sort by, and the document field each sorts on;
``param.X`` sorts on ``params.X`` and ``val.X`` on ``misc.vals.X``."""


def nest(doc: dict[str, Any]) -> dict[str, Any]:
    """``{"result.loss": 1}`` -> ``{"result": {"loss": 1}}`` (other keys unchanged)."""
    if not any("." in key for key in doc):
        return doc
    out: dict[str, Any] = {}
    for key, value in doc.items():
        parts = key.split(".")
        target = out
        for part in parts[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = target[part] = {}
            target = child
        if isinstance(value, dict) and isinstance(target.get(parts[-1]), dict):
            target[parts[-1]].update(value)
        else:
            target[parts[-1]] = value
    return out


# -- experiments -----------------------------------------------------------------------------


def experiments(store: TrialStore) -> list[dict[str, Any]]:
    """Every experiment document (without spec), oldest first."""
    return list(store.experiments.find({}, EXPERIMENT_FIELDS).sort("created_at", 1))


def experiment(store: TrialStore, ref: str) -> dict[str, Any] | None:
    """The experiment with id or name ``ref`` (without spec)."""
    return (store.experiments.find_one({"_id": ref}, EXPERIMENT_FIELDS)
            or store.experiments.find_one({"name": ref}, EXPERIMENT_FIELDS))


def counts_by_experiment(store: TrialStore) -> dict[str, dict[str, int]]:
    """``{exp_id: {state: n}}`` for every experiment: one aggregation per state."""
    counts: dict[str, dict[str, int]] = {}
    for state in TrialState:
        pipeline = [{"$match": state.query()}, {"$group": {"_id": f"${EXP_KEY}", "n": {"$sum": 1}}}]
        for group in store.trials.aggregate(pipeline):
            per_state = counts.setdefault(group["_id"], {s.value: 0 for s in TrialState})
            per_state[state.value] = int(group["n"])
    return counts


def best_losses(store: TrialStore) -> dict[str, float]:
    """``{exp_id: lowest loss of a successful trial}``, one aggregation."""
    pipeline = [{"$match": TrialState.OK.query()},
                {"$group": {"_id": f"${EXP_KEY}", "best": {"$min": "$result.loss"}}}]
    return {g["_id"]: float(g["best"]) for g in store.trials.aggregate(pipeline)
            if g.get("best") is not None}


def count(store: TrialStore, query: dict[str, Any]) -> int:
    result = list(store.trials.aggregate([{"$match": query}, {"$count": "n"}]))
    return int(result[0]["n"]) if result else 0


# -- trials ------------------------------------------------------------------------------------


def sort_key(column: str) -> str | None:
    """The document field a table column sorts on, or ``None`` if it cannot sort."""
    if column in SORT_FIELDS:
        return SORT_FIELDS[column]
    for prefix, path in (("param.", "params."), ("val.", "misc.vals.")):
        if column.startswith(prefix) and len(column) > len(prefix):
            return path + column[len(prefix):]
    return None


def trial_page(
    store: TrialStore,
    exp_id: str,
    *,
    state: TrialState | None,
    sort: str,
    descending: bool,
    offset: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    """One page of the trials table and the number of trials matching the filter.

    Sorting by loss ascending puts successful trials first (best first), then the rest;
    any other sort breaks ties by ``tid``.
    """
    query: dict[str, Any] = {EXP_KEY: exp_id, **(state.query() if state else {})}
    field = sort_key(sort) or TID
    direction = -1 if descending else 1
    order: list[tuple[str, int]] = []
    if field == "result.loss" and not descending:
        order.append(("result.status", -1))  # "ok" before "new"/"fail": losses first
    order.append((field, direction))
    if field != TID:
        order.append((TID, 1))
    cursor = store.trials.find(query, ROW_PROJECTION).sort(order).skip(max(0, offset))
    docs = [nest(d) for d in cursor.limit(max(1, min(limit, MAX_PAGE)))]
    return docs, count(store, query)


def trial(store: TrialStore, exp_id: str, tid: int) -> dict[str, Any] | None:
    doc = store.trials.find_one({"_id": trial_id(exp_id, tid)}, DETAIL_EXCLUDE)
    return None if doc is None else nest(doc)


def index_all(store: TrialStore, exp_id: str) -> list[dict[str, Any]]:
    """Every trial of the experiment, as the index keeps them."""
    return [nest(d) for d in store.trials.find({EXP_KEY: exp_id}, INDEX_PROJECTION)]


def index_after(store: TrialStore, exp_id: str, tid: int) -> list[dict[str, Any]]:
    """Trials with a ``tid`` above ``tid`` (those suggested since)."""
    return [nest(d) for d in store.trials.find({EXP_KEY: exp_id, TID: {"$gt": tid}},
                                               INDEX_PROJECTION)]


def index_tids(store: TrialStore, exp_id: str, tids: list[int]) -> list[dict[str, Any]]:
    """The trials ``tids`` (those that were unfinished when last read)."""
    if not tids:
        return []
    keys = [trial_id(exp_id, tid) for tid in tids]
    return [nest(d) for d in store.trials.find({"_id": {"$in": keys}}, INDEX_PROJECTION)]


def workers(store: TrialStore, queue: str | None) -> list[dict[str, Any]]:
    """Workers that ever served ``queue`` (every worker when ``None``), for the lanes."""
    query = {} if queue is None else {"queue": queue}
    fields = {"_id": 1, "host": 1, "gpu": 1, "heartbeat_at": 1, "started_at": 1, "queue": 1}
    return list(store.workers.find(query, fields))
