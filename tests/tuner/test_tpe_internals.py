"""The pieces of ``tuner.tpe``: space extraction, the trial reader and its cache, the
Parzen mixture's density against SciPy's."""

from __future__ import annotations

import copy
import math

import numpy as np
from hyperopt import Trials, base, hp
from scipy.stats import norm, truncnorm

from broker.settings import Settings
from tests.tuner.test_tpe import finish, propose
from tuner.tpe import history
from tuner.tpe.kde import ParzenMixture
from tuner.tpe.space import Param, extract_expr
from tuner.trials import DistributedTrials


def test_conditions_and_groups_follow_the_choices():
    both = hp.uniform("both", 0, 1)
    space = extract_expr({
        "lr": hp.loguniform("lr", -6, 0),
        "opt": hp.choice("opt", [
            {"name": "sgd", "m": hp.choice("m", [0.0, hp.uniform("mv", 0.5, 0.99)])},
            {"name": "adam", "b1": hp.uniform("b1", 0.8, 0.99)},
            "plain",
        ]),
        "shared": hp.choice("s", [both, {"x": both}]),
    })
    params = {p.label: p for p in space.params}
    assert params["lr"].conditions == frozenset({()})
    assert params["both"].conditions == frozenset({()})  # under every option: unconditional
    assert params["m"].conditions == frozenset({(("opt", 0),)})
    assert params["mv"].conditions == frozenset({(("m", 1), ("opt", 0))})
    assert params["b1"].conditions == frozenset({(("opt", 1),)})
    assert params["opt"].branches == (0, 1) and params["m"].branches == (1,)
    order = [[space.params[j].label for j in g.params] for g in space.groups]
    assert order.index(["b1"]) > order.index(["both", "lr", "opt", "s"])
    assert order.index(["mv"]) > order.index(["m"])
    assert params["lr"].log and params["lr"].low == -6


def test_quantized_values_round_trip_as_hyperopt_stores_them():
    space = extract_expr({"q": hp.qloguniform("q", 0, 3, 2), "n": hp.randint("n", 3, 9)})
    q, n = space.params[space.index["q"]], space.params[space.index["n"]]
    assert q.to_values(np.array([q.to_internal(0.0)])) == [0.0]  # rounds down to 0
    assert q.to_values(np.array([math.log(5.2)])) == [6.0]
    assert n.to_values(np.array([n.to_internal(7)])) == [7]
    assert isinstance(n.to_values(np.array([0.0]))[0], int)


def test_the_reader_caches_finished_rows_and_sees_every_change():
    space_def = {"x": hp.uniform("x", 0, 1)}
    space = extract_expr(space_def)
    trials = Trials()
    docs = propose(_random, space_def, trials, 4, seed=0)
    finish(trials, docs[0], 1.0)
    finish(trials, docs[1], None)
    h = history.read(trials, space)
    assert list(h.finished) == [True, True, False, False]
    assert h.loss[0] == 1.0 and math.isnan(h.loss[1])
    finish(trials, docs[2], 0.5)  # a pending trial finished: its result is a new object
    docs[3]["state"] = base.JOB_STATE_CANCEL  # a cancelled one disappears
    trials.refresh()
    h = history.read(trials, space)
    assert list(h.tids) == [0, 1, 2] and list(h.loss[[0, 2]]) == [1.0, 0.5]
    replaced = copy.deepcopy(docs[0])  # as a store re-reads a document
    replaced["result"]["loss"] = 3.0
    trials._dynamic_trials[0] = replaced
    trials.refresh()
    assert history.read(trials, space).loss[0] == 3.0


def test_the_reader_rechecks_only_pending_rows_of_a_list_that_only_grew(monkeypatch):
    space_def = {"x": hp.uniform("x", 0, 1)}
    space = extract_expr(space_def)
    trials = DistributedTrials("reader", settings=Settings())
    for doc in propose(_random, space_def, Trials(), 4, seed=0):
        trials._remember(doc)  # queued, as stored by the tuner
    finished = copy.deepcopy(trials.doc(0))
    finished.update(state=base.JOB_STATE_DONE, result={"status": "ok", "loss": 2.0})
    trials._remember(finished)
    assert list(history.read(trials, space).finished) == [True, False, False, False]

    def whole_list_compared(*args):
        raise AssertionError("the whole list was compared")

    monkeypatch.setattr(history, "_reusable", whole_list_compared)
    done = copy.deepcopy(trials.doc(2))  # re-read from the store: new misc and result
    done.update(state=base.JOB_STATE_DONE, result={"status": "ok", "loss": 0.5})
    trials._remember(done)
    h = history.read(trials, space)
    assert list(h.tids) == [0, 2, 1, 3] and list(h.loss[:2]) == [2.0, 0.5]

    monkeypatch.undo()  # a trial leaving the list rebuilds it: compared in full again
    cancelled = copy.deepcopy(trials.doc(1))
    cancelled["state"] = base.JOB_STATE_CANCEL
    trials._remember(cancelled)
    trials._rebuild_if_needed()
    assert list(history.read(trials, space).tids) == [0, 2, 3]


def _random(new_ids, domain, trials, seed):
    from hyperopt import rand

    return rand.suggest(new_ids, domain, trials, seed)


def test_mixture_density_matches_scipy():
    rng = np.random.default_rng(0)
    params = [Param("a", "uniform", False, low=-5, high=10),
              Param("b", "loguniform", False, low=-3, high=2, log=True),
              Param("c", "normal", False, mu=1, sigma=2),
              Param("d", "categorical", True, probs=np.array([0.2, 0.3, 0.5]))]
    n = 7
    centers = np.column_stack([rng.uniform(-5, 10, n), rng.uniform(-3, 2, n),
                               rng.normal(1, 2, n), rng.integers(0, 3, n)])
    widths = np.column_stack([rng.uniform(0.1, 3, n), rng.uniform(0.1, 1, n),
                              rng.uniform(0.2, 2, n)])
    weights = rng.uniform(0.5, 1.5, n)
    a = 0.3
    mixture = ParzenMixture(params, [0, 1, 2], [3], centers, weights, widths,
                            prior_weight=0.7, cat_smoothing=a)
    X = np.column_stack([rng.uniform(-5, 10, 5), rng.uniform(-3, 2, 5), rng.normal(1, 2, 5),
                         rng.integers(0, 3, 5)])

    def expected(x):
        total = weights.sum() + 0.7
        density = 0.7 / total / 15 / 5 * norm.pdf(x[2], 1, 2) * params[3].probs[int(x[3])]
        for i in range(n):
            k = weights[i] / total
            for d, (lo, hi) in enumerate([(-5, 10), (-3, 2), (-np.inf, np.inf)]):
                mu, h = centers[i, d], widths[i, d]
                k *= truncnorm.pdf(x[d], (lo - mu) / h, (hi - mu) / h, loc=mu, scale=h)
            k *= ((x[3] == centers[i, 3]) + a * params[3].probs[int(x[3])]) / (1 + a)
            density += k
        return math.log(density)

    assert np.allclose(mixture.log_pdf(X), [expected(x) for x in X])
    draws = mixture.sample(rng, 2000)
    assert (draws[:, 0] >= -5).all() and (draws[:, 0] <= 10).all()
    assert (draws[:, 1] >= -3).all() and (draws[:, 1] <= 2).all()
    assert set(np.unique(draws[:, 3])) <= {0.0, 1.0, 2.0}
