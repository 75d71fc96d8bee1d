"""Our TPE as the algorithm of real distributed experiments (Redis, MongoDB wire server,
Celery workers): pending trials are the queued and running ones of the store."""

from __future__ import annotations

import numpy as np
import objectives
import pytest
from hyperopt import hp

import tuner.tpe
from broker.trial_doc import TrialState, flat_vals, state_of
from sdk import hyper_tune
from tests.helpers import unique
from tests.tuner.test_tpe import check_doc

pytestmark = pytest.mark.usefixtures("workers")

SPACE = {
    "branch": hp.choice("branch", [
        {"kind": "a", "x": hp.uniform("x", 0, 1)},
        {"kind": "b", "y": hp.loguniform("y", -2, 2), "n": hp.quniform("n", 1, 6, 1)},
    ]),
    "sleep": 0.02,
}


def test_our_tpe_runs_an_experiment_through_the_workers(settings, store):
    result = hyper_tune(objectives.conditional, SPACE, algo=tuner.tpe.suggest, max_evals=30,
                        name=unique("ourtpe"), settings=settings,
                        rstate=np.random.default_rng(5))
    experiment = store.experiment_by_name(result["experiment"])
    assert experiment["algo"] == "tuner.tpe.suggest"
    docs = store.find_trials(result["experiment_id"])
    assert len(docs) == 30 and all(state_of(d) is TrialState.OK for d in docs)
    points = [check_doc(SPACE, d) for d in docs]
    assert len({tuple(sorted(p.items())) for p in points}) == 30  # no point twice
    assert result["best_loss"] == min(d["result"]["loss"] for d in docs)
    assert result["best_loss"] < 1.0  # the better branch was found
    assert result["best"]["branch"]["kind"] == "b"


def test_a_configured_policy_and_points_to_evaluate(settings, store):
    algo = tuner.tpe.configure(pending="liar-mean")
    points = [{"branch": 1, "y": 2.0, "n": 3.0}, {"branch": 0, "x": 0.5}]
    result = hyper_tune(objectives.conditional, SPACE, algo=algo, max_evals=12,
                        name=unique("ourtpe-liar"), settings=settings,
                        points_to_evaluate=points, rstate=np.random.default_rng(6))
    docs = store.find_trials(result["experiment_id"])
    assert [flat_vals(d) for d in docs[:2]] == points
    assert len(docs) == 12 and all(state_of(d) is TrialState.OK for d in docs)
    for doc in docs[2:]:
        check_doc(SPACE, doc)
    assert result["best_loss"] == 0.0
    assert "liar-mean" in store.experiment_by_name(result["experiment"])["algo"]
