"""A worker that dies mid-trial: the trial is re-run elsewhere, exactly once more."""

from __future__ import annotations

import os
import threading
import time

import objectives
from hyperopt import base, hp, rand

from broker.trial_doc import TrialState, flat_vals, state_of
from sdk import hyper_tune
from tests.helpers import WorkerPool, unique, wait_for


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = open(f"/proc/{pid}/stat").read()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_sigkill_of_a_worker_mid_trial_reruns_it_elsewhere(settings, store, worker_pools,
                                                             tmp_path):
    pool = WorkerPool(settings, store, machine_type=unique("kill"), prefix="kill")
    worker_pools.append(pool)
    pool.start(2)
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
    killed_at = time.monotonic()

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
    assert time.monotonic() - killed_at < 120
    # the killed worker's trial process (first run of the killed point) did not outlive it
    victim_pid = next(int(pid) for x, pid in runs_of if float(x) == killed_x)
    assert not _pid_alive(victim_pid)
