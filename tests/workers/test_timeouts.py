"""Trial time limits: the hard one kills the whole process tree, the soft one warns."""

from __future__ import annotations

import time

import objectives
import pytest
from hyperopt import hp, rand

from broker.errors import ConfigError
from broker.trial_doc import TrialState, flat_vals, state_of
from sdk import hyper_tune
from tests.helpers import process_alive, unique, wait_for

pytestmark = pytest.mark.usefixtures("workers")


def test_the_hard_limit_kills_the_trial_and_its_children(settings, store, tmp_path):
    pids = tmp_path / "pids"
    started = time.monotonic()
    result = hyper_tune(objectives.hang, {"spawn": hp.choice("spawn", [False, True]),
                                          "pids": str(pids)},
                        algo=rand.suggest, max_evals=2, name=unique("hang"), settings=settings,
                        trial_timeout=2.0,
                        points_to_evaluate=[{"spawn": 0}, {"spawn": 1}])
    assert time.monotonic() - started < 60
    docs = store.find_trials(result["experiment_id"])
    assert [state_of(d) for d in docs] == [TrialState.TIMEOUT, TrialState.TIMEOUT]
    for doc in docs:
        assert doc["result"]["failure"]["message"].startswith("killed at the hard time limit")
        assert 2.0 <= doc["duration_s"] < 2.0 + 3 * settings.heartbeat_s + 2
        assert doc["attempt"] == 1  # not re-queued
    all_pids = [int(p) for p in pids.read_text().split()]
    assert len(all_pids) == 3  # two trial processes and one child of the second
    wait_for(lambda: not any(process_alive(p) for p in all_pids), timeout=10,
             message="every process of the killed trials to be gone")
    assert result["trials"]["timeout"] == 2 and result["best"] is None


def test_the_soft_limit_lets_the_objective_checkpoint(settings, store, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    result = hyper_tune(objectives.checkpointing, {"checkpoint": str(checkpoint)},
                        algo=rand.suggest, max_evals=1, name=unique("soft"), settings=settings,
                        trial_timeout=30.0, trial_soft_timeout=1.0)
    (doc,) = store.find_trials(result["experiment_id"])
    assert state_of(doc) is TrialState.TIMEOUT
    assert doc["result"]["failure"]["message"].startswith("stopped at the soft time limit")
    assert "SoftTimeLimitExceeded" in doc["result"]["failure"]["message"]
    assert checkpoint.read_text() == "saved"
    assert doc["duration_s"] < 10


def test_a_visibility_timeout_shorter_than_the_trial_limit_is_refused(settings, store):
    short = settings.replace(visibility_timeout_s=10.0)
    with pytest.raises(ConfigError, match="visibility timeout"):
        hyper_tune(objectives.quadratic, {"x": hp.uniform("x", 0, 1)}, max_evals=1,
                   name="never-started", settings=short, trial_timeout=20.0)
    assert store.experiment_by_name("never-started") is None


def test_a_redelivered_message_finds_the_trial_leased_and_does_nothing(settings, store,
                                                                       own_pool, tmp_path):
    # deliberately misconfigured: Redis hands the message of a 6 s trial to another
    # worker after 1 s
    misconfigured = settings.replace(visibility_timeout_s=1.0, force_visibility_timeout=True)
    pool = own_pool("vis", settings_=misconfigured)
    runs = tmp_path / "runs.log"
    result = hyper_tune(objectives.logged, {"x": hp.uniform("x", -1, 1), "log": str(runs),
                                            "sleep": 6.0},
                        algo=rand.suggest, max_evals=1, name=unique("vis"),
                        settings=pool.settings, parallelism=1)
    (doc,) = store.find_trials(result["experiment_id"])
    assert state_of(doc) is TrialState.OK and doc["attempt"] == 1
    assert len(runs.read_text().splitlines()) == 1  # the objective ran once
    logs = "".join(pool.log(n) for n in pool.processes)
    assert f"{result['experiment_id']}/0 is running: nothing to do" in logs


def test_trials_queued_behind_a_long_one_are_not_held_or_duplicated(settings, store,
                                                                     own_pool, tmp_path):
    pool = own_pool("long")
    runs = tmp_path / "runs.log"
    points = [{"x": 0.9, "sleep": 0}] + [{"x": i / 10, "sleep": 1} for i in range(6)]
    space = {"x": hp.uniform("x", -1, 1), "log": str(runs),
             "sleep": hp.choice("sleep", [0.2, 5.0])}
    result = hyper_tune(objectives.logged, space, algo=rand.suggest, max_evals=7,
                        name=unique("long"), settings=pool.settings, points_to_evaluate=[
                            {"x": p["x"], "sleep": 1 - p["sleep"]} for p in points])
    docs = store.find_trials(result["experiment_id"])
    long_trial = docs[0]
    assert flat_vals(long_trial)["sleep"] == 1  # the 5 s one
    short = docs[1:]
    assert all(state_of(d) is TrialState.OK and d["attempt"] == 1 for d in docs)
    assert sorted(float(line.split()[0]) for line in runs.read_text().splitlines()) == sorted(
        flat_vals(d)["x"] for d in docs)
    # the other worker ran the short trials while the long one ran
    assert sum(d["ended_at"] < long_trial["ended_at"] for d in short) >= 5
