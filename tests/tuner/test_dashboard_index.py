"""The dashboard's trial index: small reads on refresh, exact deltas, rebuilt when the
database changed under it."""

from __future__ import annotations

import time

import pytest

from broker.store import TrialStore
from broker.trial_doc import EXP_KEY
from tests.helpers import unique
from tests.tuner.test_dashboard_scale import seed_experiment
from tuner.dashboard.trial_index import TrialIndex


@pytest.fixture(scope="module")
def own_store(store):
    """A database of its own for the synthetic trials, dropped afterwards."""
    own = TrialStore(store.client, unique("tuner_index").replace("-", "_"))
    own.ensure_indexes()
    yield own
    store.client.drop_database(own.db.name)


def test_the_index_follows_trials_as_they_finish_and_rebuilds_when_trials_vanish(own_store):
    store = own_store
    experiment = seed_experiment(store, 60, running=5, seed=4)
    exp_id = experiment["_id"]
    index = TrialIndex(exp_id)
    index.refresh(store)
    assert index.counts()["running"] == 5 and index.seq == 55
    epoch = index.epoch
    first = index.points(["x"])
    assert first["reset"] and first["total"] == 55 - 2  # tids 19 and 39 failed

    store.trials.update_one({EXP_KEY: exp_id, "tid": 57}, {"$set": {
        "state": 2, "result": {"status": "ok", "loss": -5.0}, "ended_at": time.time()}})
    index.refresh(store, max_age_s=0)
    assert index.epoch == epoch and index.seq == 56 and index.best().tid == 57
    delta = index.points(["x"], after=first["seq"], epoch=epoch)
    assert not delta["reset"] and [row[0] for row in delta["rows"]] == [57]
    assert 57 in [p[0] for p in index.finished_points()]

    store.trials.delete_many({EXP_KEY: exp_id, "tid": {"$lt": 10}})
    index.refresh(store, max_age_s=0)
    assert index.epoch != epoch and sum(index.counts().values()) == 50
    stale = index.points(["x"], after=delta["seq"], epoch=epoch)
    assert stale["reset"]


def test_sampling_keeps_the_best_trials_and_a_spread_of_the_rest(own_store):
    store = own_store
    experiment = seed_experiment(store, 400, seed=5)
    index = TrialIndex(experiment["_id"])
    index.refresh(store)
    sample = index.points(["x", "lr"], limit=100, best=20)
    assert sample["reset"] and len(sample["rows"]) == 100
    losses = sorted(t[2] for t in index.finished_points())
    sampled = {row[1] for row in sample["rows"]}
    assert {float(f"{loss:.7g}") for loss in losses[:20]} <= sampled
    tids = [row[0] for row in sample["rows"]]
    assert tids == sorted(tids) and max(tids) > 300 and min(tids) < 100
