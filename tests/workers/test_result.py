from __future__ import annotations

import numpy as np
import pytest

from workers.result import normalize


@pytest.mark.parametrize("value, loss", [(0.5, 0.5), (3, 3.0), (np.float32(0.25), 0.25),
                                         (np.int64(7), 7.0), (-1e300, -1e300)])
def test_numbers_are_losses(value, loss):
    assert normalize(value) == {"loss": loss, "status": "ok"}


def test_dicts_keep_their_extras_as_json():
    result = normalize({"loss": np.float64(0.1), "status": "ok", "acc": np.float32(0.9),
                        "curve": np.arange(3), "pair": (1, 2), "note": None})
    assert result == {"loss": 0.1, "status": "ok", "acc": pytest.approx(0.9), "curve": [0, 1, 2],
                      "pair": [1, 2], "note": None}


def test_a_declared_failure_stays_a_failure():
    assert normalize({"status": "fail", "why": "diverged"}) == {"status": "fail",
                                                                "why": "diverged"}


@pytest.mark.parametrize("value, message", [
    (float("nan"), "loss is NaN"),
    (float("-inf"), "loss is -inf"),
    (None, "objective returned NoneType None"),
    ("0.3", "objective returned str '0.3'"),
    (True, "objective returned bool True"),
    ([0.1], "objective returned list"),
    ({"loss": 1.0}, "unknown status None"),
    ({"loss": 1.0, "status": "running"}, "not a final status"),
    ({"status": "ok"}, "status 'ok' but no 'loss'"),
    ({"status": "ok", "loss": "1"}, "result['loss'] is str '1', not a number"),
    ({"status": "ok", "loss": float("nan")}, "loss is NaN"),
    ({"status": "ok", "loss": 1, "x": float("inf")}, "result['x'] is inf"),
    ({"status": "ok", "loss": 1, "m": {1: 2}}, "has key 1"),
    ({"status": "ok", "loss": 1, "$where": 1}, "has key '$where'"),
    ({"status": "ok", "loss": 1, "obj": object()}, "result['obj'] is object"),
])
def test_malformed_returns_fail_with_a_specific_reason(value, message):
    result = normalize(value)
    assert result["status"] == "fail" and "loss" not in result
    assert result["failure"]["kind"] == "invalid_result"
    assert message in result["failure"]["message"]


def test_oversized_results_fail():
    result = normalize({"status": "ok", "loss": 1.0, "blob": "x" * 2000}, max_bytes=1000)
    assert "limit is 1000" in result["failure"]["message"]
