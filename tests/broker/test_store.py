"""The store's fencing: one result per trial, whatever the order of events."""

from __future__ import annotations

import time

import objectives
from hyperopt import base, hp

from broker.store import WorkerIdentity, lost_runs
from broker.trial_doc import TrialState, state_of
from tests.helpers import make_experiment

A = WorkerIdentity("a@h1", "h1", 1)
B = WorkerIdentity("b@h2", "h2", 2)


def test_a_zombie_writes_nothing_after_its_trial_was_taken_over(settings, store):
    experiment, (tid,) = make_experiment(store, settings, objectives.quadratic,
                                         {"x": hp.uniform("x", -1, 1)}, 1)
    exp_id = experiment["_id"]
    now = time.time()
    zombie, _ = store.claim(exp_id, tid, A, lease_s=5, now=now)
    assert store.claim(exp_id, tid, B, lease_s=5, now=now + 1)[0] is None  # lease is live
    assert store.claim(exp_id, tid, B, lease_s=5, now=now + 60)[0] is None  # only requeue

    requeued, failed = store.requeue_expired(exp_id, now=now + 6, max_attempts=3)
    assert (requeued, failed) == ([tid], [])
    heir, _ = store.claim(exp_id, tid, B, lease_s=5, now=now + 7)
    assert heir.attempt == 2

    assert store.renew(zombie, lease_s=5, now=now + 8) == "lost"
    assert store.finish(zombie, {"status": "ok", "loss": 99.0}, now=now + 8) is False
    assert store.release(zombie, "late", max_attempts=3, now=now + 8) == "lost"
    assert store.finish(heir, {"status": "ok", "loss": 1.0}, now=now + 9) is True
    assert store.finish(heir, {"status": "ok", "loss": 2.0}, now=now + 9) is False

    doc = store.trial(exp_id, tid)
    assert state_of(doc) is TrialState.OK and doc["result"]["loss"] == 1.0
    assert doc["worker"] == B.name and doc["attempt"] == 2
    assert [a["reason"] for a in doc["attempts"]] == ["lease expired"]


def test_runs_lost_past_the_cap_fail_the_trial(settings, store):
    experiment, (tid,) = make_experiment(store, settings, objectives.quadratic,
                                         {"x": hp.uniform("x", -1, 1)}, 1)
    exp_id = experiment["_id"]
    now = time.time()
    for i in range(3):
        claim, _ = store.claim(exp_id, tid, A, lease_s=5, now=now + i)
        verdict = store.release(claim, "trial process killed by SIGKILL", max_attempts=3,
                                now=now + i)
        assert verdict == ("failed" if i == 2 else "queued")
    doc = store.trial(exp_id, tid)
    assert state_of(doc) is TrialState.FAIL
    assert doc["result"]["failure"]["message"].startswith("worker lost ×3")
    assert lost_runs(doc) == 3 and doc["state"] == base.JOB_STATE_DONE


def test_a_handed_back_run_does_not_count(settings, store):
    experiment, (tid,) = make_experiment(store, settings, objectives.quadratic,
                                         {"x": hp.uniform("x", -1, 1)}, 1)
    exp_id = experiment["_id"]
    for _ in range(5):
        claim, _ = store.claim(exp_id, tid, A, lease_s=5, now=time.time())
        assert store.release(claim, "handed back", max_attempts=3, now=time.time(),
                             counted=False) == "queued"
    doc = store.trial(exp_id, tid)
    assert state_of(doc) is TrialState.QUEUED and lost_runs(doc) == 0 and doc["attempt"] == 5
