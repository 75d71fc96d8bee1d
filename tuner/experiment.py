"""Experiments: created by name, resumed by name, summarised at the end.

An experiment's ``_id`` is the ``exp_key`` of its trials. Running a tuning again under
the same name resumes it: finished trials count toward ``max_evals`` and their results
are reused, as long as the search space is the same (a changed space would make the
old points meaningless to the algorithm, so it is refused).
"""

from __future__ import annotations

import time
from typing import Any

from broker.errors import ExperimentError
from broker.store import TrialStore
from broker.trial_doc import TrialState


def open_experiment(
    store: TrialStore,
    name: str,
    *,
    spec_text: str,
    signature: str,
    spec: dict[str, Any],
    params: list[dict[str, Any]],
    queue: str,
    algo: str,
    max_evals: int,
) -> tuple[dict[str, Any], bool]:
    """Create experiment ``name`` or resume it. Returns ``(document, resumed)``."""
    fields = {
        "spec": spec_text,
        "spec_signature": signature,
        "space_fingerprint": spec["space_fingerprint"],
        "objective": spec["objective"],
        "params": params,
        "queue": queue,
        "algo": algo,
        "max_evals": max_evals,
    }
    doc, created = store.create_experiment(name, {**fields, "state": "running",
                                                  "started_at": time.time()})
    if created:
        return doc, False
    previous = doc.get("space_fingerprint")
    if previous and previous != spec["space_fingerprint"]:
        raise ExperimentError(
            f"experiment {name!r} exists with a different search space: resuming it would "
            "mix incompatible points; choose another name")
    resumed = store.count_by_state(doc["_id"])
    has_trials = any(resumed.values())
    store.update_experiment(doc["_id"], **fields, state="running",
                            started_at=doc.get("started_at") or time.time())
    return {**doc, **fields}, has_trials


def finish_experiment(store: TrialStore, exp_id: str, state: str) -> dict[str, Any]:
    """Record the final state, counts and best trial; returns the summary fields."""
    counts = store.count_by_state(exp_id)
    best = store.best_trial(exp_id)
    summary = {
        "state": state,
        "ended_at": time.time(),
        "counts": {s.value: n for s, n in counts.items()},
        "best": None if best is None else {
            "tid": best["tid"], "loss": best["result"]["loss"], "params": best.get("params"),
        },
    }
    store.update_experiment(exp_id, **summary)
    return summary


def count_summary(counts: dict[TrialState, int]) -> str:
    return ", ".join(f"{n} {state.value}" for state, n in counts.items() if n)
