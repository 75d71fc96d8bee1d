"""The tuner's reads do not grow with the history: it reads the history once, then
re-reads only trials in flight."""

from __future__ import annotations

from collections import Counter

import objectives
import pytest
from hyperopt import base, hp, rand
from pymongo import monitoring

from sdk import hyper_tune
from tests.helpers import make_experiment, unique

pytestmark = pytest.mark.usefixtures("workers")

NEW_TRIALS = 20


class TrialReads(monitoring.CommandListener):
    """Counts trial documents returned to this process by finds and aggregations, by
    trial id."""

    def __init__(self) -> None:
        self.by_tid: Counter[int] = Counter()
        self.collections: dict[int, str] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name in ("find", "aggregate", "findAndModify"):
            self.collections[event.request_id] = event.command.get(name)
        elif name == "getMore":
            self.collections[event.request_id] = event.command.get("collection")

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if self.collections.pop(event.request_id, None) != "trials":
            return
        cursor = event.reply.get("cursor") or {}
        batch = cursor.get("firstBatch", cursor.get("nextBatch"))
        if batch is None:
            batch = [event.reply["value"]] if event.reply.get("value") else []
        self.by_tid.update(doc.get("tid", -1) for doc in batch)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.collections.pop(event.request_id, None)


def trial_reads(settings, store, history: int) -> tuple[int, float]:
    """Tune ``NEW_TRIALS`` more trials of an experiment with ``history`` finished ones:
    how often finished trials were read again after the first load, and how many
    documents of the new trials were read per suggestion."""
    space = {"x": hp.uniform("x", -5, 5)}
    experiment, _ = make_experiment(store, settings, objectives.quadratic, space, history,
                                    name=unique("history"))
    store.trials.update_many({"exp_key": experiment["_id"]},
                             {"$set": {"state": base.JOB_STATE_DONE,
                                       "result": {"status": "ok", "loss": 1.0}}})
    listener = TrialReads()
    monitoring.register(listener)  # applies to the clients the tuner creates from now on
    try:
        hyper_tune(objectives.quadratic, space, algo=rand.suggest,
                   max_evals=history + NEW_TRIALS, name=experiment["name"], settings=settings)
    finally:
        monitoring._LISTENERS.command_listeners.remove(listener)
    old = [listener.by_tid[tid] for tid in range(history)]
    assert min(old) >= 1, "the tuner never loaded part of the history"
    new = sum(n for tid, n in listener.by_tid.items() if tid not in range(history))
    return sum(old) - history, new / NEW_TRIALS


@pytest.mark.parametrize("history", [100, 3000])
def test_documents_read_per_suggestion_do_not_grow_with_the_history(settings, store, history):
    history_rereads, per_suggestion = trial_reads(settings, store, history)
    assert history_rereads == 0
    # the trials in flight, re-read while they run: bounded by the slots, not the history
    assert per_suggestion < 10
