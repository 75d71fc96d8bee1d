"""A worker that dies mid-trial: the trial is re-run elsewhere, exactly once more."""

from __future__ import annotations

import signal
import threading
import time

import objectives
from hyperopt import hp, rand

from broker.trial_doc import TrialState, flat_vals, state_of
from sdk import hyper_tune
from tests.helpers import process_alive, unique, wait_for


def test_sigkill_of_a_worker_mid_trial_reruns_it_elsewhere(settings, store, own_pool,
                                                             tmp_path):
    pool = own_pool("kill")
    runs = tmp_path / "runs.log"
    name = unique("killed")
    outcome: dict = {}

    def tune() -> None:
        outcome["result"] = hyper_tune(
            objectives.logged, {"x": hp.uniform("x", -1, 1), "log": str(runs), "sleep": 1.5},
            algo=rand.suggest, max_evals=6, name=name, settings=pool.settings)

    tuner = threading.Thread(target=tune)
    tuner.start()
    experiment = wait_for(lambda: store.experiment_by_name(name), message="the experiment")

    def running_trial_that_started():
        started = {float(line.split()[0]) for line in runs.read_text().splitlines()} \
            if runs.exists() else set()
        return next((d for d in store.find_trials(experiment["_id"], unfinished=True)
                     if state_of(d) is TrialState.RUNNING and flat_vals(d)["x"] in started),
                    None)

    running = wait_for(running_trial_that_started, message="a trial running its objective")
    victim = running["worker"]
    pool.kill(victim)
    killed_at = time.time()

    tuner.join(timeout=180)
    assert not tuner.is_alive()
    result = outcome["result"]
    docs = store.find_trials(result["experiment_id"])
    assert len(docs) == 6 and all(state_of(d) is TrialState.OK for d in docs)
    rerun = next(d for d in docs if d["tid"] == running["tid"])
    assert rerun["attempt"] == 2
    assert rerun["worker"] != victim
    assert rerun["attempts"][0]["worker"] == victim
    assert rerun["attempts"][0]["reason"] == "lease expired"
    runs_of = [line.split() for line in runs.read_text().splitlines()]
    killed_x = flat_vals(rerun)["x"]
    assert len(runs_of) == 7
    assert [float(x) for x, _ in runs_of].count(killed_x) == 2
    # re-run within the lease, a sweep and a few seconds
    assert rerun["started_at"] - killed_at < settings.lease_s + 2 * settings.heartbeat_s + 5
    # the killed worker's trial process (first run of the killed point) did not outlive it
    victim_pid = next(int(pid) for x, pid in runs_of if float(x) == killed_x)
    assert not process_alive(victim_pid)


def test_a_trial_whose_process_dies_is_rerun_and_counted(settings, store, workers, tmp_path):
    result = hyper_tune(objectives.dies_once, {"x": hp.uniform("x", -1, 1),
                                               "marker": str(tmp_path / "died")},
                        algo=rand.suggest, max_evals=3, name=unique("dies"), settings=settings)
    docs = store.find_trials(result["experiment_id"])
    assert len(docs) == 3 and all(state_of(d) is TrialState.OK for d in docs)
    for doc in docs:
        assert doc["attempt"] == 2
        assert doc["attempts"][0]["reason"] == "trial process killed by SIGKILL"
        assert doc["attempts"][0]["counted"] is True


def test_a_poison_trial_fails_after_the_cap_and_the_experiment_goes_on(settings, store,
                                                                       workers):
    result = hyper_tune(objectives.poison_or_fine,
                        {"x": hp.uniform("x", -1, 1), "poison": hp.choice("poison", [0, 1])},
                        algo=rand.suggest, max_evals=4, name=unique("poison"),
                        settings=settings,
                        points_to_evaluate=[{"x": 0.5, "poison": 1}, {"x": 0.1, "poison": 0},
                                            {"x": 0.2, "poison": 0}, {"x": 0.3, "poison": 0}])
    docs = store.find_trials(result["experiment_id"])
    poison = docs[0]
    assert state_of(poison) is TrialState.FAIL
    assert poison["result"]["failure"]["message"].startswith(
        f"worker lost ×{settings.max_attempts}")
    assert poison["attempt"] == settings.max_attempts
    assert [state_of(d) for d in docs[1:]] == [TrialState.OK] * 3


def test_sigterm_hands_the_running_trial_back_at_once(settings, store, own_pool, tmp_path):
    # without a hand-back, a re-run would wait for the 60 s lease to expire
    pool = own_pool("term", settings_=settings.replace(lease_s=60.0))
    runs = tmp_path / "runs.log"
    name = unique("term")
    outcome: dict = {}
    tuner = threading.Thread(target=lambda: outcome.update(result=hyper_tune(
        objectives.logged, {"x": hp.uniform("x", -1, 1), "log": str(runs), "sleep": 4.0},
        algo=rand.suggest, max_evals=3, name=name, settings=pool.settings)))
    tuner.start()
    experiment = wait_for(lambda: store.experiment_by_name(name), message="the experiment")
    running = wait_for(lambda: next((d for d in store.find_trials(experiment["_id"],
                                                                  unfinished=True)
                                     if state_of(d) is TrialState.RUNNING), None),
                       message="a running trial")
    victim = running["worker"]
    stopped_at = time.time()
    pool.processes[victim].send_signal(signal.SIGTERM)
    pool.processes.pop(victim).wait(timeout=30)
    rerun = wait_for(lambda: (d := store.trial(experiment["_id"], running["tid"])) and
                     d.get("attempt") == 2 and d, timeout=30, message="the re-run")
    assert rerun["started_at"] - stopped_at < 15
    tuner.join(timeout=120)
    assert not tuner.is_alive()
    doc = store.trial(experiment["_id"], running["tid"])
    assert state_of(doc) is TrialState.OK and doc["worker"] != victim
    assert doc["attempts"][0]["reason"] == "handed back: worker shutting down"
    assert doc["attempts"][0]["counted"] is False
    assert outcome["result"]["trials"]["ok"] == 3
