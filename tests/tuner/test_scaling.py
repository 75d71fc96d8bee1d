"""The tuner's reads do not grow with the history: it re-reads only trials in flight."""

from __future__ import annotations

import objectives
import pytest
from hyperopt import base, hp, rand
from pymongo import monitoring

from sdk import hyper_tune
from tests.helpers import make_experiment, unique

pytestmark = pytest.mark.usefixtures("workers")

NEW_TRIALS = 20


class TrialReads(monitoring.CommandListener):
    """Counts trial documents returned to this process by finds and aggregations."""

    def __init__(self) -> None:
        self.documents = 0
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
        self.documents += len(batch) if batch is not None else int(bool(event.reply.get("value")))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.collections.pop(event.request_id, None)


def reads_per_suggestion(settings, store, history: int) -> float:
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
    return (listener.documents - history) / NEW_TRIALS  # minus the one read of the history


def test_documents_read_per_suggestion_do_not_grow_with_the_history(settings, store):
    small = reads_per_suggestion(settings, store, 100)
    large = reads_per_suggestion(settings, store, 3000)
    assert small < 10  # a handful: the trials in flight, the best one, counts
    assert large <= small + 1, (small, large)
