"""End to end through real Redis, the MongoDB wire server and real Celery workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import objectives
import pytest
from hyperopt import anneal, fmin, hp, rand, space_eval, tpe
from hyperopt.pyll import scope

from broker.trial_doc import TrialState, flat_vals, state_of
from sdk import hyper_tune
from tests.helpers import WORKSPACE, unique, wait_for
from tuner.trials import DistributedTrials

pytestmark = pytest.mark.usefixtures("workers")


def test_tpe_experiment_runs_exactly_max_evals_and_reports_the_true_best(settings, store):
    space = {"x": hp.uniform("x", -5, 5), "sleep": 0.01}
    result = hyper_tune(objectives.quadratic, space, algo=tpe.suggest, max_evals=40,
                        name=unique("tpe40"), settings=settings,
                        rstate=np.random.default_rng(1))

    docs = store.find_trials(result["experiment_id"])
    assert len(docs) == 40
    assert sorted(d["tid"] for d in docs) == list(range(40))
    assert all(state_of(d) is TrialState.OK for d in docs)
    assert result["trials"]["ok"] == 40
    best_in_db = min(d["result"]["loss"] for d in docs)
    assert result["best_loss"] == best_in_db
    best_doc = next(d for d in docs if d["result"]["loss"] == best_in_db)
    assert result["argmin"] == flat_vals(best_doc)
    assert result["best"] == space_eval(space, flat_vals(best_doc))
    assert {d["worker"] for d in docs} == set(store.alive_workers(
        settings.queue, now=time.time(), lease_s=settings.lease_s)[i]["_id"] for i in range(2))


EVERY_KIND = {
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
    "pchoice": hp.pchoice("pchoice", [(0.2, "rare"), (0.8, "common")]),
    "choice": hp.choice("choice", [
        "a string", None, [1, "two", None], (3, 4.5), {"nested": True},
        {"optimizer": "sgd", "lr": hp.loguniform("sgd_lr", -6, 0),
         "momentum": hp.choice("momentum", [0.0, hp.uniform("momentum_value", 0.5, 0.99)])},
        hp.choice("inner", [{"layers": 1}, {"layers": 2, "width": hp.quniform("w", 8, 64, 8)}]),
    ]),
}


def test_every_hp_kind_reaches_the_objective_exactly_as_space_eval(settings, store):
    result = hyper_tune(objectives.record_params, EVERY_KIND, algo=rand.suggest, max_evals=40,
                        name=unique("kinds"), settings=settings,
                        rstate=np.random.default_rng(7))
    docs = store.find_trials(result["experiment_id"])
    assert len(docs) == 40
    seen_branches = set()
    for doc in docs:
        expected = space_eval(EVERY_KIND, flat_vals(doc))
        assert doc["result"]["got"] == repr(expected)
        seen_branches.add(flat_vals(doc)["choice"])
    assert len(seen_branches) >= 5  # strings, None, lists, tuples, nested spaces all crossed


def test_an_objective_that_raises_fails_those_trials_and_the_rest_go_on(settings, store):
    result = hyper_tune(objectives.raise_on_negative, {"x": hp.uniform("x", -1, 1)},
                        algo=rand.suggest, max_evals=20, name=unique("raises"),
                        settings=settings, rstate=np.random.default_rng(3))
    docs = store.find_trials(result["experiment_id"])
    assert len(docs) == 20
    failed = [d for d in docs if state_of(d) is TrialState.FAIL]
    ok = [d for d in docs if state_of(d) is TrialState.OK]
    assert failed and ok and len(failed) + len(ok) == 20
    for doc in failed:
        assert flat_vals(doc)["x"] < 0
        failure = doc["result"]["failure"]
        assert failure["kind"] == "exception"
        assert failure["message"].startswith("ValueError: x is negative")
        assert "Traceback" in failure["traceback"] and "raise_on_negative" in failure["traceback"]
        assert "ValueError" in doc["log_tail"]
    assert all(flat_vals(d)["x"] >= 0 for d in ok)
    assert result["trials"]["fail"] == len(failed)


def test_plain_hyperopt_fmin_with_distributed_trials(settings, store):
    trials = DistributedTrials(unique("fmin"), settings=settings)
    argmin = fmin(objectives.quadratic, {"x": hp.uniform("x", -5, 5)}, algo=tpe.suggest,
                  max_evals=12, trials=trials, rstate=np.random.default_rng(0),
                  show_progressbar=False)
    assert len(trials.trials) == 12
    assert trials.best_trial["result"]["loss"] == min(trials.losses())
    assert argmin == trials.argmin
    assert store.count_by_state(trials.experiment["_id"])[TrialState.OK] == 12


def test_annealing_runs_distributed_too(settings, store):
    result = hyper_tune(objectives.quadratic, {"x": hp.uniform("x", -5, 5)}, algo=anneal.suggest,
                        max_evals=8, name=unique("algo"), settings=settings,
                        rstate=np.random.default_rng(2))
    assert result["trials"]["ok"] == 8
    assert result["best_loss"] == min(d["result"]["loss"] for d in store.find_trials(
        result["experiment_id"]))


def test_points_to_evaluate_run_first(settings, store):
    points = [{"x": 1.0}, {"x": -2.0}]
    result = hyper_tune(objectives.quadratic, {"x": hp.uniform("x", -5, 5)},
                        algo=rand.suggest, max_evals=5, name=unique("points"),
                        settings=settings, points_to_evaluate=points)
    docs = store.find_trials(result["experiment_id"])
    assert [flat_vals(d)["x"] for d in docs[:2]] == [1.0, -2.0]
    assert result["best_loss"] == 0.0 and len(docs) == 5


def test_loss_threshold_and_early_stop_end_the_experiment(settings, store):
    result = hyper_tune(objectives.quadratic, {"x": hp.uniform("x", -5, 5)},
                        algo=rand.suggest, max_evals=200, name=unique("threshold"),
                        settings=settings, loss_threshold=2.0,
                        rstate=np.random.default_rng(5))
    assert result["best_loss"] < 2.0
    assert sum(result["trials"].values()) < 200

    def stop_after_six(trials, *args):
        return len([t for t in trials.trials if t["result"].get("status") == "ok"]) >= 6, args

    result = hyper_tune(objectives.quadratic, {"x": hp.uniform("x", -5, 5)},
                        algo=rand.suggest, max_evals=200, name=unique("early"),
                        settings=settings, early_stop_fn=stop_after_six)
    assert 6 <= result["trials"]["ok"] <= 9
    assert result["trials"]["queued"] == 0 and result["trials"]["running"] == 0


def test_timeout_stops_the_experiment_and_cancels_what_runs(settings, store):
    started = time.monotonic()
    result = hyper_tune(objectives.quadratic, {"x": hp.uniform("x", -5, 5), "sleep": 30.0},
                        algo=rand.suggest, max_evals=10, name=unique("timeout"),
                        settings=settings, timeout=2)
    assert time.monotonic() - started < 20
    counts = result["trials"]
    assert counts["ok"] == 0 and counts["running"] == 0 and counts["queued"] == 0
    assert counts["cancelled"] >= 2


def _tuning_script(settings, name: str, max_evals: int, sleep: float) -> subprocess.Popen:
    env = {**os.environ, **settings.to_env(), "TUNER_EXPERIMENT": name,
           "TEST_SLEEP": str(sleep), "TUNER_PROGRESS": "0"}
    env.pop("TUNER_PARALLELISM", None)
    return subprocess.Popen([sys.executable, "tune_script.py", str(max_evals)], cwd=WORKSPACE,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_script_objective_with_python_objects_in_the_space(settings, store):
    name = unique("script")
    process = _tuning_script(settings, name, 10, 0.0)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out.decode()
    experiment = store.experiment_by_name(name)
    assert experiment["objective"]["kind"] == "script"
    docs = store.find_trials(experiment["_id"])
    assert len(docs) == 10 and all(state_of(d) is TrialState.OK for d in docs)
    kinds = {"OrderedDict", "Fraction"}
    for doc in docs:
        assert doc["result"]["kind"] == ["OrderedDict", "Fraction"][flat_vals(doc)["kind"]]
        assert doc["result"]["kind"] in kinds


def test_a_killed_tuner_resumes_by_name_with_exactly_max_evals(settings, store):
    name = unique("resume")
    first = _tuning_script(settings, name, 20, 0.3)
    wait_for(lambda: (e := store.experiment_by_name(name)) and
             store.count_by_state(e["_id"])[TrialState.OK] >= 5, timeout=120,
             message="five finished trials")
    first.kill()
    first.wait()
    second = _tuning_script(settings, name, 20, 0.0)
    out, _ = second.communicate(timeout=180)
    assert second.returncode == 0, out.decode()
    experiment = store.experiment_by_name(name)
    docs = store.find_trials(experiment["_id"])
    counted = [d for d in docs if state_of(d) is not TrialState.CANCELLED]
    assert len(counted) == 20
    assert all(state_of(d) is TrialState.OK for d in counted)
    assert len({d["tid"] for d in docs}) == len(docs)
