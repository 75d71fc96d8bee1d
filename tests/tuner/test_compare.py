"""Comparing experiments: best-so-far curves, the library call and ``experiments compare``."""

from __future__ import annotations

import json

import pytest

from broker.errors import TunerError
from broker.trial_doc import TrialState, state_of
from tests.tuner.test_dashboard_http import run_small_experiment
from tests.tuner.test_export import parser
from tuner.compare import best_so_far, compare


def test_best_so_far_keeps_only_the_improvements_by_trial_and_by_time():
    # (tid, ended_at, loss): trial 2 finished last although it was suggested early
    curve = best_so_far([(0, 10.0, 5.0), (1, 11.0, 3.0), (2, 15.0, 1.0), (3, 12.0, 4.0),
                         (4, 13.0, 2.0)])
    assert [(r.tid, r.loss) for r in curve.by_trial] == [(0, 5.0), (1, 3.0), (2, 1.0)]
    assert [(r.tid, r.loss) for r in curve.by_time] == [(0, 5.0), (1, 3.0), (4, 2.0),
                                                        (2, 1.0)]
    assert (curve.last_tid, curve.last_time) == (4, 15.0)
    assert curve.best.tid == 2
    assert best_so_far([]).best is None


@pytest.fixture(scope="module")
def two(settings):
    return [run_small_experiment(settings, n=n, seed=seed) for n, seed in ((10, 1), (6, 2))]


@pytest.mark.usefixtures("workers")
def test_compare_reports_each_experiments_best_trial(store, two):
    results = compare(store, [two[0]["experiment"], two[1]["experiment_id"]])
    assert [r.name for r in results] == [two[0]["experiment"], two[1]["experiment"]]
    for result, run in zip(results, two, strict=True):
        docs = store.find_trials(run["experiment_id"])
        row = result.row()
        assert row["best_loss"] == run["best_loss"]
        best = next(d for d in docs if d.get("result", {}).get("loss") == run["best_loss"])
        assert row["best_tid"] == best["tid"]
        assert row["param.opt.name"] == best["params"]["opt"]["name"]
        assert row["ok"] == sum(state_of(d) is TrialState.OK for d in docs)
        assert row["ok"] + row["fail"] == len(docs)
        assert row["best_after_s"] >= 0
    with pytest.raises(TunerError, match="no experiment"):
        compare(store, [two[0]["experiment"], "no-such-experiment"])
    with pytest.raises(TunerError, match="at least two"):
        compare(store, [two[0]["experiment"]])


@pytest.mark.usefixtures("workers")
def test_compare_command_prints_a_table_or_json(two, settings, monkeypatch, capsys):
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    names = [two[0]["experiment"], two[1]["experiment"]]
    args = parser().parse_args(["experiments", "compare", *names, "--format", "json"])
    assert args.handler(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in data] == names
    assert [e["best_loss"] for e in data] == [two[0]["best_loss"], two[1]["best_loss"]]
    assert data[0]["curve"]["by_trial"][-1][1] == two[0]["best_loss"]

    args = parser().parse_args(["experiments", "compare", *names])
    assert args.handler(args) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in names)
    assert "best_loss" in table and "opt.name" in table
