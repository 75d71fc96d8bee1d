from __future__ import annotations

import json

import numpy as np
import pytest
from hyperopt import hp, pyll, space_eval
from hyperopt.pyll import scope

from broker import space
from broker.errors import SpaceError
from tests.tuner.test_distributed import EVERY_KIND


def _random_points(expr, n, seed=0):
    from hyperopt import base, rand

    trials = base.Trials()
    domain = base.Domain(lambda p: 0, expr)
    docs = rand.suggest(list(range(n)), domain, trials, seed)
    return [{k: v[0] for k, v in d["misc"]["vals"].items() if v} for d in docs]


def test_encode_decode_rebuilds_a_space_that_evaluates_identically():
    encoded = space.encode(space.validate(EVERY_KIND))
    assert encoded["portable"]
    rebuilt = space.decode(json.loads(json.dumps(encoded)))
    for point in _random_points(space.validate(EVERY_KIND), 200):
        assert repr(space_eval(rebuilt, point)) == repr(space_eval(EVERY_KIND, point))
    assert space.fingerprint(space.encode(rebuilt)) == space.fingerprint(encoded)


def test_fingerprint_tells_spaces_apart():
    a = space.fingerprint(space.encode(space.validate({"x": hp.uniform("x", 0, 1)})))
    b = space.fingerprint(space.encode(space.validate({"x": hp.uniform("x", 0, 2)})))
    c = space.fingerprint(space.encode(space.validate({"x": hp.uniform("x", 0, 1)})))
    assert a != b and a == c


@pytest.mark.parametrize("bad, label, words", [
    ({"a": hp.choice("depth", [])}, "depth", "no options"),
    ({"a": hp.quniform("units", 0, 10, 0)}, "units", "q must be positive"),
    ({"a": hp.qnormal("noise", 0, 1, -1)}, "noise", "q must be positive"),
    ({"a": hp.normal("mu", 0, 0)}, "mu", "sigma must be positive"),
    ({"a": hp.uniform("lr", 0, float("inf"))}, "lr", "finite number"),
    ({"a": hp.loguniform("wd", -np.inf, 0)}, "wd", "finite number"),
    ([hp.uniform("twice", 0, 1), hp.normal("twice", 0, 1)], "twice", "two different"),
    ({"a": scope.hyperopt_param("custom", scope.exp(1.0))}, "custom", "unknown distribution"),
    ({"a": scope.hyperopt_param("swapped", scope.uniform(2.0, 1.0))}, "swapped", "below high"),
    ({"a": scope.hyperopt_param("p", scope.categorical([0.5, 0.9]))}, "p", "sum to 1"),
])
def test_malformed_spaces_name_the_label(bad, label, words):
    with pytest.raises(SpaceError) as error:
        space.validate(bad)
    assert error.value.label == label
    assert words in str(error.value) and repr(label) in str(error.value)


def test_absurd_depth_and_size_are_refused():
    deep = hp.uniform("z", 0, 1)
    for _ in range(300):
        deep = {"x": deep}
    with pytest.raises(SpaceError, match="nested deeper"):
        space.validate(deep)
    wide = {f"p{i}": hp.uniform(f"p{i}", 0, 1) for i in range(8000)}
    with pytest.raises(SpaceError, match="nodes"):
        space.validate(wide)


def test_not_a_space():
    with pytest.raises(SpaceError, match="not a Hyperopt search space"):
        space.validate(object.__new__(pyll.Apply))


def test_python_objects_make_a_space_non_portable():
    encoded = space.encode(space.validate({"act": hp.choice("act", [len, dict])}))
    assert not encoded["portable"]
    assert {"lit": {"$object": "builtins.len"}} in encoded["nodes"]
    with pytest.raises(SpaceError, match="cannot travel as data"):
        space.decode(encoded)


def test_decode_refuses_operations_that_reach_code():
    encoded = space.encode(space.validate({"x": hp.uniform("x", 0, 1)}))
    encoded["nodes"].append({"op": "call", "args": [0], "kwargs": [], "o_len": None,
                             "pure": False})
    encoded["root"] = len(encoded["nodes"]) - 1
    with pytest.raises(SpaceError, match="not allowed"):
        space.decode(encoded)


def test_describe_lists_each_hyperparameter():
    described = space.describe(space.validate(
        {"lr": hp.loguniform("lr", -5, 0), "opt": hp.choice("opt", ["a", "b"])}))
    assert described == [
        {"label": "lr", "dist": "loguniform", "args": {"low": -5, "high": 0}},
        {"label": "opt", "dist": "randint", "args": {"high": 2}},
    ]
