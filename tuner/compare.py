"""Compare experiments: best-loss-so-far curves and the best trial of each.

The same comparison feeds ``python -m tuner experiments compare`` (a table or JSON) and
the dashboard's comparison view (one chart, one table). A curve holds only the points
where the best loss improved (its *records*), so it stays a few dozen points long
however many trials an experiment has.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from broker.errors import TunerError
from broker.store import TrialStore
from broker.trial_doc import EXP_KEY, TID, TrialState
from tuner import report

FINISHED_PROJECTION = {"_id": 0, TID: 1, "ended_at": 1, "result.loss": 1}
"""What a best-so-far curve needs of each successful trial."""


@dataclass(frozen=True)
class Record:
    """A trial that set a new best loss: by trial number (``tid``) and by wall time."""

    tid: int
    ended_at: float | None
    loss: float


@dataclass
class Curve:
    """Best loss so far, as the steps where it improved.

    ``by_trial`` orders successful trials by ``tid`` (the order they were suggested in);
    ``by_time`` by ``ended_at`` (when they finished). ``last_tid``/``last_time`` are the
    x values where the curves end, so a step plot can be drawn to the right edge.
    """

    by_trial: list[Record] = field(default_factory=list)
    by_time: list[Record] = field(default_factory=list)
    last_tid: int | None = None
    last_time: float | None = None

    @property
    def best(self) -> Record | None:
        return self.by_trial[-1] if self.by_trial else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "by_trial": [[r.tid, r.loss] for r in self.by_trial],
            "by_time": [[r.ended_at, r.loss, r.tid] for r in self.by_time],
            "last_tid": self.last_tid,
            "last_time": self.last_time,
        }


def best_so_far(finished: Iterable[tuple[int, float | None, float]]) -> Curve:
    """The curve of successful trials given as ``(tid, ended_at, loss)``, any order."""
    points = list(finished)
    curve = Curve()
    if not points:
        return curve
    curve.last_tid = max(p[0] for p in points)
    times = [p[1] for p in points if p[1] is not None]
    curve.last_time = max(times) if times else None
    curve.by_trial = _records(sorted(points, key=lambda p: p[0]))
    curve.by_time = _records(sorted((p for p in points if p[1] is not None),
                                    key=lambda p: (p[1], p[0])))
    return curve


def _records(ordered: list[tuple[int, float | None, float]]) -> list[Record]:
    records: list[Record] = []
    best = float("inf")
    for tid, ended_at, loss in ordered:
        if loss < best:
            best = loss
            records.append(Record(tid, ended_at, loss))
    return records


@dataclass
class ExperimentResult:
    """One experiment as a comparison shows it."""

    id: str
    name: str
    state: str | None
    algo: str | None
    started_at: float | None
    counts: dict[str, int]
    curve: Curve
    best_trial: dict[str, Any] | None
    """The best trial as a flat row (:func:`tuner.report.trial_row`), or ``None``."""

    def row(self) -> dict[str, Any]:
        """A flat summary: what ``experiments compare`` prints, one row per experiment."""
        best = self.curve.best
        trial = self.best_trial or {}
        elapsed = None
        if best is not None and best.ended_at is not None and self.started_at:
            elapsed = round(best.ended_at - self.started_at, 3)
        return {
            "name": self.name,
            "id": self.id,
            "state": self.state,
            "algo": self.algo,
            "ok": self.counts.get("ok", 0),
            "fail": self.counts.get("fail", 0),
            "best_loss": None if best is None else best.loss,
            "best_tid": None if best is None else best.tid,
            "best_after_s": elapsed,
            **{k: v for k, v in trial.items() if k.startswith(("param.", "val."))},
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.row(), "counts": self.counts, "curve": self.curve.to_dict(),
                "best_trial": self.best_trial}


def require_experiment(store: TrialStore, ref: str) -> dict[str, Any]:
    """The experiment named (or with id) ``ref``, without its spec; ``TunerError`` if
    there is none."""
    doc = store.experiments.find_one({"name": ref}, {"spec": 0}) or store.experiments.find_one(
        {"_id": ref}, {"spec": 0})
    if doc is None:
        raise TunerError(f"no experiment named {ref!r}")
    return doc


def finished_points(store: TrialStore, exp_id: str) -> list[tuple[int, float | None, float]]:
    """``(tid, ended_at, loss)`` of every successful trial of the experiment."""
    docs = store.trials.find({EXP_KEY: exp_id, **TrialState.OK.query()}, FINISHED_PROJECTION)
    points = []
    for doc in docs:
        loss = _loss(doc)
        if loss is not None:
            points.append((int(doc[TID]), doc.get("ended_at"), loss))
    return points


def count_states(store: TrialStore, exp_id: str) -> dict[str, int]:
    """Trials of the experiment by state, one ``$count`` aggregation per state (cheaper
    than ``count_documents`` on some MongoDB-compatible servers)."""
    counts = {}
    for state in TrialState:
        result = list(store.trials.aggregate(
            [{"$match": {EXP_KEY: exp_id, **state.query()}}, {"$count": "n"}]))
        counts[state.value] = int(result[0]["n"]) if result else 0
    return counts


def result_of(store: TrialStore, experiment: dict[str, Any],
              points: list[tuple[int, float | None, float]] | None = None,
              counts: dict[str, int] | None = None) -> ExperimentResult:
    """One experiment's comparison entry; ``points``/``counts`` may come from a cache."""
    exp_id = experiment["_id"]
    curve = best_so_far(finished_points(store, exp_id) if points is None else points)
    best_trial = None
    if curve.best is not None:
        doc = store.trial(exp_id, curve.best.tid)
        best_trial = report.trial_row(doc) if doc is not None else None
    return ExperimentResult(
        id=exp_id, name=experiment["name"], state=experiment.get("state"),
        algo=experiment.get("algo"), started_at=experiment.get("started_at"),
        counts=count_states(store, exp_id) if counts is None else counts,
        curve=curve, best_trial=best_trial,
    )


def compare(store: TrialStore, refs: list[str]) -> list[ExperimentResult]:
    """The experiments named (or with ids) ``refs``, in that order.

    :raises TunerError: fewer than two references, or one names no experiment.
    """
    if len(refs) < 2:
        raise TunerError("compare needs at least two experiments")
    return [result_of(store, require_experiment(store, ref)) for ref in refs]


def _loss(doc: dict[str, Any]) -> float | None:
    """``result.loss`` of a projected document (some servers return the dotted key)."""
    if "result.loss" in doc:
        value = doc["result.loss"]
    else:
        value = (doc.get("result") or {}).get("loss")
    return None if value is None else float(value)
