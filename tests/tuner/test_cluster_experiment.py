"""Experiments on the provisioned test cluster (three SSH hosts, two GPUs each, see
``tests/testbed``): trials spread over every host's workers and name where they ran;
a host cut off mid-experiment loses nothing."""

from __future__ import annotations

import threading
import time

import numpy as np
import objectives
import pytest
from hyperopt import hp, rand

from broker.trial_doc import TrialState, state_of
from sdk import hyper_tune
from tests.helpers import unique, wait_for
from tests.testbed.cluster import module_cluster

SPACE = {"x": hp.uniform("x", -5, 5)}

pytestmark = pytest.mark.testbed


@pytest.fixture(scope="module")
def cluster(request):
    return module_cluster(request)


def test_an_experiment_runs_across_every_hosts_workers(cluster):
    result = hyper_tune(objectives.cluster_trial, {**SPACE, "sleep": 0.3}, algo=rand.suggest,
                        max_evals=40, name=unique("spread"), settings=cluster.settings,
                        rstate=np.random.default_rng(3))
    docs = cluster.store.find_trials(result["experiment_id"])
    assert len(docs) == 40 and all(state_of(d) is TrialState.OK for d in docs)
    assert result["trials"]["ok"] == 40
    for doc in docs:  # each trial names its host and GPU, and ran pinned to that GPU
        assert doc["host"] in cluster.names and doc["gpu"] in ("0", "1")
        assert doc["worker"] == f"gpu{doc['gpu']}@{doc['host']}"
        assert f"on {doc['host']} CUDA_VISIBLE_DEVICES='{doc['gpu']}'" in doc["log_tail"]
    assert {d["host"] for d in docs} == set(cluster.names)
    assert len({d["worker"] for d in docs}) == 6


def test_a_host_cut_off_mid_experiment_has_its_trials_rerun_elsewhere(cluster):
    bed, store = cluster.testbed, cluster.store
    victim = cluster.names[2]
    name = unique("cutoff")
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = hyper_tune(
                objectives.cluster_trial, {**SPACE, "sleep": 1.0}, algo=rand.suggest,
                max_evals=40, name=name, settings=cluster.settings,
                rstate=np.random.default_rng(5))
        except BaseException as exc:  # surfaced by the assertion below
            outcome["error"] = exc

    tuner = threading.Thread(target=run, daemon=True)
    tuner.start()
    try:
        experiment = wait_for(lambda: store.experiment_by_name(name), timeout=30)

        def victim_busy() -> bool:
            running = store.find_trials(experiment["_id"], unfinished=True)
            finished = store.count_by_state(experiment["_id"])[TrialState.OK]
            return finished >= 6 and any(d.get("host") == victim and state_of(d) is
                                         TrialState.RUNNING for d in running)

        wait_for(victim_busy, timeout=90, message=f"trials running on {victim}")
        in_flight = {d["tid"] for d in store.find_trials(experiment["_id"], unfinished=True)
                     if d.get("host") == victim and state_of(d) is TrialState.RUNNING}
        bed.cut(victim)  # its link goes down; its workers keep running, unreachable
        cut_at = time.time()
        tuner.join(timeout=180)
        assert not tuner.is_alive(), "the experiment did not finish"
    finally:
        bed.reconnect(victim)
    assert "error" not in outcome, outcome.get("error")
    docs = store.find_trials(experiment["_id"])
    assert len(docs) == 40 and sorted(d["tid"] for d in docs) == list(range(40))
    assert all(state_of(d) is TrialState.OK for d in docs)
    assert outcome["result"]["trials"]["ok"] == 40
    for doc in (d for d in docs if d["tid"] in in_flight):
        assert doc["host"] != victim  # re-run on another host...
        lost = [a for a in doc.get("attempts", []) if a["worker"].endswith(f"@{victim}")]
        assert lost, doc  # ...after the run on the cut-off host was counted as lost
    assert not [d for d in docs if d["host"] == victim and d.get("ended_at", 0) > cut_at + 1]

    # the host comes back after a reboot: provisioning brings its workers back
    bed.kill_processes(victim)
    result = cluster.reprovision(victim)
    assert [w.action for w in result[victim].workers] == ["started", "started"]
