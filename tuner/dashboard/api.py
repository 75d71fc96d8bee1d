"""The dashboard's JSON endpoints as plain functions: MongoDB and the index in, dicts out.

:mod:`tuner.dashboard.server` maps URLs onto :class:`DashboardAPI`'s methods and does
nothing else, so every payload can be tested without HTTP. Payloads are sized for a
browser polling every few seconds: tables are paged, charts get aggregates (record
points of best-so-far curves, importance scores) or a bounded sample of trials, and a
live refresh asks only for what changed (see :class:`tuner.dashboard.trial_index.TrialIndex`).
"""

from __future__ import annotations

import math
import time
from typing import Any

from broker.errors import TunerError
from broker.store import TrialStore
from broker.trial_doc import TrialState
from tuner import compare, report
from tuner.dashboard import queries
from tuner.dashboard.trial_index import IndexRegistry, TrialIndex

DEFAULT_PAGE = 25
"""Rows of the trials table per page."""

WORKER_ALIVE_S = 60.0
"""A worker whose heartbeat is older than this is drawn as gone in the worker lanes."""

LOG_DISTS = frozenset({"loguniform", "qloguniform", "lognormal", "qlognormal"})
"""Distributions whose values are best seen on a log axis."""

TABLE_COLUMNS = ["tid", "state", "loss", "duration_s", "host", "gpu", "attempt",
                 "started_at", "error"]
"""The trials table's fixed columns; parameter columns follow."""


class NotFound(TunerError):
    """No experiment or trial with that reference (HTTP 404)."""


class BadRequest(TunerError):
    """A query parameter is malformed (HTTP 400)."""


class DashboardAPI:
    """Read-only views of the experiments in ``store``; safe to call from many threads."""

    def __init__(self, store: TrialStore) -> None:
        self.store = store
        self.indexes = IndexRegistry(store)

    # -- experiments ------------------------------------------------------------------------

    def experiments(self) -> dict[str, Any]:
        """``GET /api/experiments``: every experiment with its counts and best loss."""
        counts = queries.counts_by_experiment(self.store)
        best = queries.best_losses(self.store)
        now = time.time()
        rows = []
        for doc in queries.experiments(self.store):
            exp_counts = counts.get(doc["_id"], {s.value: 0 for s in TrialState})
            started, ended = doc.get("started_at"), doc.get("ended_at")
            running = doc.get("state") == "running"
            if running:
                ended = now
            rows.append({
                "id": doc["_id"], "name": doc["name"], "state": doc.get("state"),
                "algo": doc.get("algo"), "max_evals": doc.get("max_evals"),
                "queue": doc.get("queue"), "counts": exp_counts,
                "best_loss": best.get(doc["_id"]), "started_at": started,
                "ended_at": None if running else ended,
                "duration_s": round(ended - started, 3) if started and ended else None,
            })
        rows.reverse()  # newest first
        return {"now": now, "experiments": rows}

    def summary(self, ref: str) -> dict[str, Any]:
        """``GET /api/experiments/{id}``: the experiment, its counts, best trial, space."""
        doc, index = self._experiment(ref)
        best = index.best()
        best_row = None
        if best is not None:
            trial = queries.trial(self.store, doc["_id"], best.tid)
            best_row = None if trial is None else report.trial_row(trial)
        return {
            "experiment": _experiment_fields(doc),
            "space": space(doc),
            "counts": index.counts(),
            "best": best_row,
            "epoch": index.epoch,
            "seq": index.seq,
            "now": time.time(),
        }

    # -- trials -----------------------------------------------------------------------------

    def trials(self, ref: str, *, state: str | None = None, sort: str = "tid",
               descending: bool = False, offset: int = 0, limit: int = DEFAULT_PAGE
               ) -> dict[str, Any]:
        """``GET /api/experiments/{id}/trials``: one page of the table, server-sorted."""
        doc, index = self._experiment(ref)
        wanted = None
        if state:
            try:
                wanted = TrialState(state)
            except ValueError:
                raise BadRequest(f"unknown state {state!r}") from None
        if queries.sort_key(sort) is None:
            raise BadRequest(f"cannot sort by {sort!r}")
        docs, total = queries.trial_page(self.store, doc["_id"], state=wanted, sort=sort,
                                         descending=descending, offset=offset, limit=limit)
        rows = [report.trial_row(d) for d in docs]
        columns = TABLE_COLUMNS + index.param_columns()
        for row in rows:
            columns.extend(k for k in row if k not in columns and k.startswith(
                ("param.", "val.")))
        return {"total": total, "offset": offset, "limit": limit, "sort": sort,
                "descending": descending, "state": state, "columns": columns,
                "rows": [[_cell(row.get(c)) for c in columns] for row in rows]}

    def trial(self, ref: str, tid: int) -> dict[str, Any]:
        """``GET /api/experiments/{id}/trials/{tid}``: everything about one trial."""
        doc = self._document(ref)
        trial = queries.trial(self.store, doc["_id"], tid)
        if trial is None:
            raise NotFound(f"experiment {doc['name']!r} has no trial {tid}")
        misc = trial.pop("misc", None) or {}
        row = report.trial_row({**trial, "misc": misc})
        return {
            "tid": trial.get("tid"),
            "state": row["state"],
            "row": row,
            "params": trial.get("params"),
            "vals": {k: v[0] for k, v in (misc.get("vals") or {}).items() if v},
            "result": trial.get("result"),
            "timings": {k: trial.get(k) for k in ("queued_at", "started_at", "ended_at",
                                                   "duration_s")},
            "worker": trial.get("worker"), "host": trial.get("host"), "gpu": trial.get("gpu"),
            "attempt": trial.get("attempt"), "attempts": trial.get("attempts") or [],
            "log_tail": trial.get("log_tail") or "",
        }

    # -- charts -----------------------------------------------------------------------------

    def points(self, ref: str, *, after: int = 0, epoch: str | None = None) -> dict[str, Any]:
        """``GET /api/experiments/{id}/points``: trials for the loss-vs-parameter and
        parallel-coordinates charts (a sample, or what finished after ``after``)."""
        doc, index = self._experiment(ref)
        return index.points([p["label"] for p in space(doc)], after=after, epoch=epoch)

    def curve(self, ref: str) -> dict[str, Any]:
        """``GET /api/experiments/{id}/curve``: best loss so far by trial and by time."""
        doc, index = self._experiment(ref)
        curve = compare.best_so_far(index.finished_points())
        return {"started_at": doc.get("started_at"), **curve.to_dict()}

    def lanes(self, ref: str) -> dict[str, Any]:
        """``GET /api/experiments/{id}/lanes``: recent trials per worker, and idle workers."""
        doc, index = self._experiment(ref)
        now = time.time()
        lanes: dict[str, dict[str, Any]] = {}
        for worker in queries.workers(self.store, doc.get("queue")):
            if now - float(worker.get("heartbeat_at") or 0) < WORKER_ALIVE_S:
                lanes[worker["_id"]] = {"id": worker["_id"], "host": worker.get("host"),
                                        "gpu": worker.get("gpu"), "alive": True}
        bars = []
        for trial in index.lanes():
            lane_id = trial.worker or trial.host or "?"
            lanes.setdefault(lane_id, {"id": lane_id, "host": trial.host, "gpu": trial.gpu,
                                       "alive": False})
            bars.append([lane_id, trial.tid, _time(trial.started_at),
                         _time(trial.ended_at), trial.state.value])
        ordered = sorted(lanes.values(), key=lambda lane: (str(lane["host"]), str(lane["gpu"]),
                                                             lane["id"]))
        return {"now": now, "lanes": ordered, "bars": bars}

    def importance(self, ref: str) -> dict[str, Any]:
        """``GET /api/experiments/{id}/importance``: one score per parameter, highest first
        (see :mod:`tuner.dashboard.importance`)."""
        doc, index = self._experiment(ref)
        scores = index.importance([p["label"] for p in space(doc)])
        return {"measure": "epsilon-squared of loss ranks by parameter (main effect)",
                "scores": [s.to_dict() for s in scores]}

    def compare(self, refs: list[str]) -> dict[str, Any]:
        """``GET /api/compare?e=...&e=...``: best-so-far curves and best trials."""
        if not refs:
            raise BadRequest("name at least one experiment: /api/compare?e=NAME&e=NAME")
        results = []
        for ref in refs:
            doc, index = self._experiment(ref)
            result = compare.result_of(self.store, doc, points=index.finished_points(),
                                       counts=index.counts())
            results.append({**result.to_dict(), "started_at": doc.get("started_at")})
        return {"experiments": results}

    # -- helpers ----------------------------------------------------------------------------

    def _document(self, ref: str) -> dict[str, Any]:
        doc = queries.experiment(self.store, ref)
        if doc is None:
            raise NotFound(f"no experiment named {ref!r}")
        return doc

    def _experiment(self, ref: str) -> tuple[dict[str, Any], TrialIndex]:
        """The experiment and its index, brought up to date."""
        doc = self._document(ref)
        return doc, self.indexes.get(doc["_id"])


def space(experiment: dict[str, Any]) -> list[dict[str, Any]]:
    """The experiment's hyperparameters with what a chart needs to draw them: ``log``
    (a log axis) and ``range`` (the values' bounds, when the distribution has them)."""
    out = []
    for param in experiment.get("params") or []:
        dist, args = param.get("dist"), param.get("args") or {}
        low, high = args.get("low"), args.get("high")
        value_range = None
        if dist in ("loguniform", "qloguniform") and low is not None and high is not None:
            value_range = [math.exp(low), math.exp(high)]
        elif dist in ("uniform", "quniform") and low is not None and high is not None:
            value_range = [low, high]
        elif dist == "randint" and high is not None:
            value_range = [low or 0, high - 1]
        out.append({"label": param["label"], "dist": dist, "args": args,
                    "log": dist in LOG_DISTS, "range": value_range,
                    "categorical": dist in ("randint", "categorical")})
    return out


def _experiment_fields(doc: dict[str, Any]) -> dict[str, Any]:
    keep = ("_id", "name", "state", "algo", "max_evals", "queue", "created_at", "started_at",
            "ended_at", "objective")
    fields = {k: doc.get(k) for k in keep}
    fields["id"] = fields.pop("_id")
    return fields


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.10g}") if math.isfinite(value) else None
    return value


def _time(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
