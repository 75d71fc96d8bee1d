"""Pending policies of ``tuner.tpe``: what a queued or running trial counts as, and
duplicate suppression (no point equal to, or within the tolerance of, a known one)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hyperopt import Trials, hp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tuner.test_tpe import check_doc, finish, propose
from tuner.tpe import Pending, configure
from tuner.tpe.model import GroupModel, ModelOptions
from tuner.tpe.pending import Deduper, lie
from tuner.tpe.space import extract_expr

POLICIES = [p.value for p in Pending]


# -- liar values ------------------------------------------------------------------------------


def test_lie_is_what_each_policy_says():
    losses = np.array([3.0, 1.0, 2.0, math.nan])  # NaN: a failed trial, not a loss
    assert lie(Pending.LIAR_BEST, losses) == 1.0
    assert lie(Pending.LIAR_MEAN, losses) == 2.0
    assert lie(Pending.LIAR_WORST, losses) == 3.0
    assert lie(Pending.HYPEROPT, losses) == math.inf
    assert lie(Pending.LIAR_MEAN, np.array([])) == math.inf  # nothing finished yet


@pytest.mark.parametrize("policy, expected", [
    ("liar-best", 1.0), ("liar-mean", 2.0), ("liar-worst", 3.0), ("hyperopt", math.inf)])
def test_pending_rows_take_part_in_the_split_with_the_policy_lie(policy, expected):
    space = extract_expr({"x": hp.uniform("x", 0, 1)})
    group = space.groups[0]
    X = np.array([[0.1], [0.2], [0.3], [0.4], [0.5], [0.6]])
    loss = np.array([3.0, 1.0, 2.0, math.nan, math.nan, math.nan])  # 1 failed, 2 pending
    finished = np.array([True, True, True, True, False, False])
    model = GroupModel(group, space.params, X, loss, finished, np.arange(6), Pending(policy),
                       ModelOptions(gamma=0.5))
    assert list(model.split_losses[:4]) == [3.0, 1.0, 2.0, math.inf]  # failed: +inf
    assert list(model.split_losses[4:]) == [expected, expected]
    assert model.is_good[1]  # the best finished trial is "good"...
    assert not model.is_good[3]  # ...a failed one never is
    assert bool(model.is_good[4]) == (policy == "liar-best")


def test_ignore_leaves_pending_rows_out_of_the_model():
    space = extract_expr({"x": hp.uniform("x", 0, 1)})
    X = np.array([[0.1], [0.2], [0.9]])
    model = GroupModel(space.groups[0], space.params, X, np.array([1.0, 2.0, math.nan]),
                       np.array([True, True, False]), np.arange(3), Pending.IGNORE,
                       ModelOptions())
    assert len(model.split_losses) == 2
    assert model.good.n_components + model.bad.n_components == 2


# -- duplicate suppression --------------------------------------------------------------------


@st.composite
def finite_spaces(draw):
    """Small spaces whose points can repeat: choices, randint, quantized, nested."""
    n = draw(st.integers(1, 3))
    space = {}
    for i in range(n):
        kind = draw(st.sampled_from(["choice", "randint", "quniform", "nested", "qlog"]))
        if kind == "choice":
            space[f"k{i}"] = hp.choice(f"c{i}", ["a", "b", "c"][:draw(st.integers(1, 3))])
        elif kind == "randint":
            space[f"k{i}"] = hp.randint(f"r{i}", draw(st.integers(1, 4)))
        elif kind == "quniform":
            space[f"k{i}"] = hp.quniform(f"q{i}", 0, draw(st.integers(1, 4)), 1)
        elif kind == "qlog":
            space[f"k{i}"] = hp.qloguniform(f"l{i}", 0, 2, 1)
        else:
            space[f"k{i}"] = hp.choice(f"n{i}", [0, {"z": hp.randint(f"z{i}", 3)}])
    return space


def _key(doc):
    return tuple(sorted((k, v[0]) for k, v in doc["misc"]["vals"].items() if v))


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(space=finite_spaces(), policy=st.sampled_from(POLICIES), seed=st.integers(0, 10_000),
       batch=st.integers(1, 4))
def test_dedupe_never_proposes_a_running_or_finished_point(space, policy, seed, batch):
    algo = configure(pending=policy, dedupe=True, n_startup=3)
    trials = Trials()
    rng = np.random.default_rng(seed)
    known: set[tuple] = set()
    for step in range(12):
        docs = propose(algo, space, trials, batch, seed + step)
        keys = [_key(d) for d in docs]
        assert len(set(keys)) == len(keys)  # distinct within a batch...
        assert not set(keys) & known  # ...and from everything finished or pending
        known |= set(keys)
        for doc in docs:
            check_doc(space, doc)
        if len(docs) < batch:  # exhausted: nothing new is left to propose
            assert propose(algo, space, trials, 1, seed) == []
            return
        for doc in [d for d in trials.trials if d["state"] == 0]:
            if rng.uniform() < 0.6:  # the rest keep running
                finish(trials, doc, float(rng.uniform()) if rng.uniform() < 0.9 else None)


@pytest.mark.parametrize("policy", POLICIES)
def test_dedupe_keeps_its_distance_on_linear_and_log_scales(policy):
    space = {"x": hp.uniform("x", 0, 10), "y": hp.loguniform("y", 0, 3)}
    distance = 0.05
    algo = configure(pending=policy, dedupe_distance=distance, n_startup=3)
    trials = Trials()
    rng = np.random.default_rng(0)
    for step in range(30):
        docs = propose(algo, space, trials, 2, step)
        for doc in docs:
            x, y = doc["misc"]["vals"]["x"][0], doc["misc"]["vals"]["y"][0]
            for other in trials.trials:
                if other["tid"] == doc["tid"]:
                    continue
                ox, oy = other["misc"]["vals"]["x"][0], other["misc"]["vals"]["y"][0]
                near = abs(x - ox) / 10 <= distance and abs(math.log(y / oy)) <= distance
                assert not near, (doc["tid"], other["tid"])
        for doc in [d for d in trials.trials if d["state"] == 0][:1]:
            finish(trials, doc, float(rng.uniform()))


def test_deduper_metric():
    space = extract_expr({"x": hp.uniform("x", 0, 100), "y": hp.loguniform("y", 0, 5),
                          "c": hp.choice("c", [0, {"q": hp.quniform("q", 0, 10, 2)}])})
    # columns are sorted by label: c, q, x, y
    known = np.array([[0.0, np.nan, 50.0, math.log(10.0)]])
    d = Deduper(space, known, 0.01)
    assert d.is_duplicate(np.array([0.0, np.nan, 50.5, math.log(10.05)]))
    assert not d.is_duplicate(np.array([0.0, np.nan, 52.0, math.log(10.0)]))  # 2 % of range
    assert not d.is_duplicate(np.array([0.0, np.nan, 50.0, math.log(10.2)]))  # 2 % relative
    assert not d.is_duplicate(np.array([1.0, 4.0, 50.0, math.log(10.0)]))  # another branch
    d.add(np.array([[1.0, 4.0, 50.0, math.log(10.0)]]))
    assert d.is_duplicate(np.array([1.0, 4.0, 50.2, math.log(10.0)]))
    assert not d.is_duplicate(np.array([1.0, 6.0, 50.0, math.log(10.0)]))  # quantized: equal only


def test_deduper_agrees_with_comparing_every_known_point():
    """The sorted lookup finds exactly what a scan of every known point finds, across
    patterns of active parameters, points added one by one, and merges."""
    space = extract_expr({"x": hp.uniform("x", 0, 1), "y": hp.loguniform("y", 0, 5),
                          "c": hp.choice("c", [0, {"q": hp.quniform("q", 0, 10, 2)}])})
    rng = np.random.default_rng(3)

    def points(n: int) -> np.ndarray:
        c = rng.integers(0, 2, n).astype(float)
        q = np.where(c == 1, rng.integers(0, 6, n) * 2.0, np.nan)
        return np.column_stack([c, q, rng.uniform(0, 1, n).round(2), rng.uniform(0, 5, n)])

    known = points(700)
    d = Deduper(space, known[:400], 0.01)
    for row in known[400:]:
        d.add(row[None, :])
    scale = np.array([1.0, 1.0, 1.0, 1.0])
    tol = np.array([1e-9, 1e-9, 0.01, 0.01])
    for x in np.vstack([points(300), known[::50] + [0, 0, 0.004, 0.004]]):
        same = (np.isnan(known) == np.isnan(x)).all(axis=1)
        diff = np.abs(np.nan_to_num(known[same] / scale) - np.nan_to_num(x / scale))
        assert d.is_duplicate(x) == bool((diff <= tol).all(axis=1).any()), x
