"""Our TPE (``tuner.tpe``) on every Hyperopt space: valid points, determinism, batches,
``points_to_evaluate``; and the helpers the other ``test_tpe_*`` modules share.

``spaces()`` is a Hypothesis strategy for search spaces using every ``hp.*`` kind,
nested ``hp.choice``/``hp.pchoice`` included. ``check_doc`` decides, without using
``tuner.tpe``, whether a suggested trial holds a point Hyperopt's own sampler could have
produced: it walks the ``pyll`` graph with the point's values to find the active labels,
and checks each value against its distribution's support.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hyperopt import Trials, base, fmin, hp, space_eval
from hyperopt.fmin import generate_trials_to_calculate
from hyperopt.pyll import Apply, Literal, as_apply, rec_eval, scope
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tuner.tpe
from broker.errors import SpaceError
from tuner.tpe import configure

_finite = {"allow_nan": False, "allow_infinity": False}



@st.composite
def spaces(draw: Any, max_depth: int = 3) -> dict[str, Any]:
    """A search space: a dict of 1-4 entries, each a parameter or a nested choice."""
    counter = itertools.count()
    n = draw(st.integers(1, 4))
    return {f"k{i}": draw(_node(counter, max_depth)) for i in range(n)}


def _node(counter: itertools.count, depth: int) -> st.SearchStrategy:
    leaves = st.one_of(_param(counter), st.sampled_from(["const", None, 3, (1, 2)]))
    if depth <= 0:
        return leaves
    return st.one_of(leaves, leaves, _choice(counter, depth))


@st.composite
def _choice(draw: Any, counter: itertools.count, depth: int) -> Any:
    n = draw(st.integers(1, 3))
    options = [draw(st.one_of(
        _node(counter, depth - 1),
        st.fixed_dictionaries({"a": _node(counter, depth - 1), "b": _node(counter, depth - 1)}),
    )) for _ in range(n)]
    label = f"c{next(counter)}"
    if draw(st.booleans()):
        weights = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n).filter(any))
        total = sum(weights)
        return hp.pchoice(label, [(w / total, o) for w, o in zip(weights, options, strict=True)])
    return hp.choice(label, options)


@st.composite
def _param(draw: Any, counter: itertools.count) -> Any:
    label = f"p{next(counter)}"
    kind = draw(st.sampled_from([
        "uniform", "quniform", "loguniform", "qloguniform", "normal", "qnormal",
        "lognormal", "qlognormal", "randint", "randint2", "uniformint",
    ]))
    low = draw(st.floats(-5, 5, **_finite))
    width = draw(st.floats(0.01, 10, **_finite))
    q = draw(st.sampled_from([0.5, 1.0, 2.0, 5.0]))
    if kind == "uniform":
        return hp.uniform(label, low, low + width)
    if kind == "quniform":
        return hp.quniform(label, low, low + width, q)
    if kind == "loguniform":
        return hp.loguniform(label, low, low + width)
    if kind == "qloguniform":
        return hp.qloguniform(label, low, low + width, q)
    if kind == "normal":
        return hp.normal(label, low, width)
    if kind == "qnormal":
        return hp.qnormal(label, low, width, q)
    if kind == "lognormal":
        return hp.lognormal(label, low, width / 5)
    if kind == "qlognormal":
        return hp.qlognormal(label, low, width / 5, q)
    if kind == "randint":
        return hp.randint(label, draw(st.integers(1, 6)))
    if kind == "randint2":
        start = draw(st.integers(-5, 5))
        return hp.randint(label, start, start + draw(st.integers(1, 6)))
    start = int(math.floor(low))
    return hp.uniformint(label, start, start + draw(st.integers(1, 8)))


# -- validity ----------------------------------------------------------------------------------


def active_labels(space: Any, point: dict[str, Any]) -> set[str]:
    """The labels Hyperopt evaluates for ``point`` (choices as option indices)."""
    seen: set[str] = set()

    def walk(node: Any) -> None:
        if not isinstance(node, Apply):
            return
        if node.name == "switch":
            selector = node.pos_args[0]
            walk(selector)
            index = point[selector.arg["label"].obj]
            walk(node.pos_args[1 + int(index)])
            return
        if node.name == "hyperopt_param":
            seen.add(node.arg["label"].obj)
            walk(node.arg["obj"])
            return
        for child in node.inputs():
            walk(child)

    walk(as_apply(space))
    return seen


def distributions(space: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    out = {}
    for label, dist in base.Domain(lambda p: 0, space).params.items():
        names = {"uniform": ("low", "high"), "quniform": ("low", "high", "q"),
                 "loguniform": ("low", "high"), "qloguniform": ("low", "high", "q"),
                 "normal": ("mu", "sigma"), "qnormal": ("mu", "sigma", "q"),
                 "lognormal": ("mu", "sigma"), "qlognormal": ("mu", "sigma", "q"),
                 "randint": ("low", "high"), "categorical": ("p",)}[dist.name]
        pairs = list(zip(names, dist.pos_args, strict=False)) + list(dist.named_args)
        args = {k: (a.obj if isinstance(a, Literal) else rec_eval(a)) for k, a in pairs}
        if dist.name == "randint" and "high" not in args:
            args = {"low": 0, "high": args["low"]}
        out[label] = (dist.name, args)
    return out


def _multiple(value: float, q: float) -> bool:
    return math.isclose(value / q, round(value / q), abs_tol=1e-6)


def check_value(kind: str, args: dict[str, Any], v: Any) -> None:
    assert v is not None and not isinstance(v, bool), (kind, v)
    if kind in ("randint", "categorical"):
        assert isinstance(v, int), (kind, v)
        if kind == "randint":
            assert args["low"] <= v < args["high"], (kind, args, v)
        else:
            p = np.asarray(args["p"], dtype=float)
            assert 0 <= v < len(p) and p[v] > 0, (kind, args, v)
        return
    assert isinstance(v, float) and math.isfinite(v), (kind, v)
    q = args.get("q")
    if q is not None:
        assert _multiple(v, q), (kind, args, v)
    if kind == "uniform":
        assert args["low"] <= v <= args["high"], (kind, args, v)
    elif kind == "loguniform":
        assert math.exp(args["low"]) * (1 - 1e-9) <= v <= math.exp(args["high"]) * (1 + 1e-9)
    elif kind == "quniform":
        assert round(args["low"] / q) * q - 1e-9 <= v <= round(args["high"] / q) * q + 1e-9
    elif kind == "qloguniform":
        lo, hi = math.exp(args["low"]), math.exp(args["high"])
        assert round(lo / q) * q - 1e-9 <= v <= round(hi / q) * q + 1e-9, (args, v)
    elif kind == "lognormal":
        assert v > 0
    elif kind == "qlognormal":
        assert v >= 0


def check_doc(space: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """Assert that ``doc`` holds a point Hyperopt's own sampler could have produced;
    returns the point (label -> value)."""
    misc = doc["misc"]
    dists = distributions(space)
    assert set(misc["vals"]) == set(dists) == set(misc["idxs"])
    point = {k: v[0] for k, v in misc["vals"].items() if v}
    assert all(len(v) <= 1 for v in misc["vals"].values())
    assert {k for k, v in misc["idxs"].items() if v} == set(point)
    assert all(v == [doc["tid"]] for v in misc["idxs"].values() if v)
    assert set(point) == active_labels(space, point)
    for label, value in point.items():
        check_value(*dists[label], value)
    space_eval(space, point)  # Hyperopt can build the objective's argument from it
    return point


# -- driving the algorithm ---------------------------------------------------------------------


def finish(trials: Trials, doc: dict[str, Any], loss: float | None) -> None:
    """Record a result for a pending trial (``None``: the trial failed)."""
    doc["state"] = base.JOB_STATE_DONE
    doc["result"] = ({"status": base.STATUS_OK, "loss": loss} if loss is not None
                     else {"status": base.STATUS_FAIL})
    trials.refresh()


def propose(algo: Any, space: Any, trials: Trials, n: int, seed: int,
            domain: base.Domain | None = None) -> list[dict[str, Any]]:
    """Ask ``algo`` for ``n`` new trials in one call and insert them (pending)."""
    domain = domain or base.Domain(lambda p: 0.0, space)
    ids = trials.new_trial_ids(n)
    docs = algo(ids, domain, trials, seed)
    trials.insert_trial_docs(docs)
    trials.refresh()
    return [d for d in trials._dynamic_trials if d["tid"] in set(ids)]


def run(algo: Any, space: Any, n: int, seed: int, loss: Any = None) -> Trials:
    """``n`` sequential evaluations of a synthetic loss (deterministic in the point)."""
    trials = Trials()
    domain = base.Domain(lambda p: 0.0, space)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        for doc in propose(algo, space, trials, 1, int(rng.integers(2**31)), domain):
            point = {k: v[0] for k, v in doc["misc"]["vals"].items() if v}
            finish(trials, doc, loss(point) if loss else _hash_loss(point))
    return trials


def _hash_loss(point: dict[str, Any]) -> float:
    return float(sum(math.sin(3.1 * i + float(v)) for i, (_, v) in enumerate(sorted(
        point.items()))))


FAST = configure(n_startup=3)


# -- validity --------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(space=spaces(), seed=st.integers(0, 2**31 - 1))
def test_only_valid_points_for_every_kind_and_nesting(space, seed):
    trials = Trials()
    domain = base.Domain(lambda p: 0.0, space)
    rng = np.random.default_rng(seed)
    for step in range(14):
        docs = propose(FAST, space, trials, 1 if step < 10 else 3, seed + step, domain)
        for doc in docs:
            point = check_doc(space, doc)
            if rng.uniform() < 0.8:  # leave some pending, fail some
                finish(trials, doc, _hash_loss(point) if rng.uniform() < 0.9 else None)


def test_every_kind_example_space_from_the_distributed_tests():
    space = {
        "randint": hp.randint("randint", 7),
        "randint2": hp.randint("randint2", 3, 9),
        "uniform": hp.uniform("uniform", -2, 3),
        "loguniform": hp.loguniform("loguniform", -4, 1),
        "normal": hp.normal("normal", 1, 2),
        "lognormal": hp.lognormal("lognormal", 0, 1),
        "quniform": scope.int(hp.quniform("quniform", 16, 256, 16)),
        "qloguniform": hp.qloguniform("qloguniform", 0, 5, 2),
        "qnormal": hp.qnormal("qnormal", 0, 10, 3),
        "qlognormal": hp.qlognormal("qlognormal", 1, 1, 0.5),
        "pchoice": hp.pchoice("pchoice", [(0.2, "rare"), (0.8, "common"), (0.0, "never")]),
        "choice": hp.choice("choice", [
            "a string", None, {"optimizer": "sgd", "lr": hp.loguniform("sgd_lr", -6, 0),
                               "momentum": hp.choice("momentum", [
                                   0.0, hp.uniform("momentum_value", 0.5, 0.99)])},
            hp.choice("inner", [{"layers": 1},
                                {"layers": 2, "width": hp.quniform("w", 8, 64, 8)}]),
        ]),
    }
    trials = run(tuner.tpe.suggest, space, 60, seed=3)
    branches = set()
    for doc in trials.trials:
        point = check_doc(space, doc)
        assert point["pchoice"] != 2
        branches.add(point["choice"])
    assert branches == {0, 1, 2, 3}


def test_it_optimises_a_conditional_space():
    space = {"kind": hp.choice("kind", [
        {"k": "a", "x": hp.uniform("x", -5, 5)},
        {"k": "b", "y": hp.loguniform("y", -5, 2), "n": hp.quniform("n", 1, 9, 1)},
    ])}

    def loss(point):
        if point["kind"] == 0:
            return (point["x"] - 1) ** 2 + 1.0
        return (math.log(point["y"]) + 1) ** 2 + 0.1 * abs(point["n"] - 4)

    trials = run(tuner.tpe.suggest, space, 80, seed=0, loss=loss)
    assert trials.best_trial["misc"]["vals"]["kind"] == [1]  # the better branch...
    assert min(trials.losses()) < 0.5  # ...tuned inside it (branch "a" cannot go below 1)


# -- determinism, batches, API -------------------------------------------------------------


def test_deterministic_for_a_seed():
    space = {"a": hp.uniform("a", 0, 1), "c": hp.choice("c", [0, hp.normal("n", 0, 1)])}
    first = [d["misc"]["vals"] for d in run(FAST, space, 25, seed=11).trials]
    again = [d["misc"]["vals"] for d in run(FAST, space, 25, seed=11).trials]
    other = [d["misc"]["vals"] for d in run(FAST, space, 25, seed=12).trials]
    assert first == again
    assert first != other


def test_a_batch_is_one_call_of_distinct_pending_aware_points():
    assert tuner.tpe.suggest.supports_batch is True
    space = {"x": hp.uniform("x", 0, 1), "y": hp.uniform("y", 0, 1)}
    trials = run(tuner.tpe.suggest, space, 20, seed=4)
    batch = propose(tuner.tpe.suggest, space, trials, 8, seed=9)
    assert [d["tid"] for d in batch] == list(range(20, 28))
    points = {(d["misc"]["vals"]["x"][0], d["misc"]["vals"]["y"][0]) for d in batch}
    assert len(points) == 8
    for doc in batch:
        check_doc(space, doc)
        assert doc["state"] == base.JOB_STATE_NEW


def test_a_batch_in_a_finite_space_stops_when_the_space_is_exhausted():
    space = {"a": hp.choice("a", ["x", "y", "z"]), "b": hp.randint("b", 2)}
    trials = Trials()
    docs = propose(tuner.tpe.suggest, space, trials, 10, seed=1)
    assert len(docs) == 6  # every combination once, then nothing new to propose
    assert len({(d["misc"]["vals"]["a"][0], d["misc"]["vals"]["b"][0]) for d in docs}) == 6
    assert propose(tuner.tpe.suggest, space, trials, 1, seed=2) == []


def test_points_to_evaluate_run_first_and_are_not_proposed_again():
    space = {"a": hp.choice("a", ["x", "y"]), "b": hp.randint("b", 3)}
    points = [{"a": 0, "b": 1}, {"a": 1, "b": 2}]
    trials = generate_trials_to_calculate(points)  # what fmin(points_to_evaluate=...) does
    calls = []

    def objective(params):
        calls.append(params)
        return {"x": 0.0, "y": 1.0}[params["a"]] + params["b"]

    fmin(objective, space, algo=tuner.tpe.suggest, max_evals=6, trials=trials,
         rstate=np.random.default_rng(0), show_progressbar=False)
    assert calls[:2] == [space_eval(space, p) for p in points]
    seen = [(d["misc"]["vals"]["a"][0], d["misc"]["vals"]["b"][0]) for d in trials.trials]
    assert len(seen) == 6 == len(set(seen))


def test_points_to_evaluate_still_pending_are_respected():
    space = {"a": hp.choice("a", ["x", "y"]), "b": hp.randint("b", 2)}
    trials = generate_trials_to_calculate([{"a": 0, "b": 0}, {"a": 1, "b": 1}])
    trials.refresh()
    docs = propose(tuner.tpe.suggest, space, trials, 2, seed=5)
    got = {(d["misc"]["vals"]["a"][0], d["misc"]["vals"]["b"][0]) for d in docs}
    assert got == {(0, 1), (1, 0)}


def test_configure_gives_a_named_plain_callable_and_rejects_nonsense():
    algo = configure(pending="liar-mean", dedupe=False)
    assert callable(algo) and algo.supports_batch
    assert algo.__module__ == "tuner.tpe" and "liar-mean" in algo.__name__
    assert tuner.tpe.suggest.__name__ == "suggest"
    with pytest.raises(ValueError, match="pending"):
        configure(pending="optimistic")
    with pytest.raises(ValueError, match="unknown"):
        configure(gama=0.2)
    with pytest.raises(ValueError):
        configure(gamma=0)


def test_a_distribution_that_depends_on_another_parameter_is_refused():
    space = {"x": hp.uniform("x", 0, hp.uniform("top", 1, 2))}
    with pytest.raises(SpaceError, match="x"):
        propose(tuner.tpe.suggest, space, Trials(), 1, seed=0)
