"""Broker and database outages during an experiment: nothing lost, nothing duplicated.

Each test gets its own Redis, MongoDB wire server and two workers (so restarting them
does not disturb the rest of the suite), runs an experiment in a thread, breaks a
service in the middle, and then checks that every trial has exactly one result and
that each point's objective ran once.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import objectives
import pytest
from hyperopt import hp, rand

from broker.services import LocalServices
from broker.settings import Settings
from broker.store import TrialStore, connect
from broker.trial_doc import TrialState, flat_vals, state_of
from sdk import hyper_tune
from tests.helpers import WORKSPACE, WorkerPool, unique, wait_for


@dataclass
class Cluster:
    services: LocalServices
    settings: Settings
    store: TrialStore
    pool: WorkerPool


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Own services and two workers; ``@pytest.mark.settings(...)`` overrides settings."""
    marker = request.node.get_closest_marker("settings")
    services = LocalServices(tmp_path / "state")
    connection, _ = services.up()
    settings = Settings(
        broker_url=connection.broker_url, mongo_url=connection.mongo_url,
        secret=connection.secret, state_dir=tmp_path / "state", workspace=WORKSPACE,
        heartbeat_s=0.5, lease_s=3.0, progress=False, mongo_db="outages",
        machine_type=unique("outage"), mongo_outage_s=120.0,
    ).replace(**(marker.kwargs if marker else {}))
    store = connect(settings)
    pool = WorkerPool(settings, store, machine_type=settings.machine_type, prefix="chaos")
    pool.start(2)
    yield Cluster(services, settings, store, pool)
    pool.stop()
    store.close()
    services.down()


def run_in_thread(cluster: Cluster, runs: Path, n: int, sleep: float) -> tuple[threading.Thread,
                                                                               dict, str]:
    name = unique("chaos")
    outcome: dict = {}

    def tune() -> None:
        outcome["result"] = hyper_tune(
            objectives.logged, {"x": hp.uniform("x", -1, 1), "log": str(runs), "sleep": sleep},
            algo=rand.suggest, max_evals=n, name=name, settings=cluster.settings)

    thread = threading.Thread(target=tune)
    thread.start()
    return thread, outcome, name


def finished(cluster: Cluster, name: str) -> int:
    experiment = cluster.store.experiment_by_name(name)
    return cluster.store.count_by_state(experiment["_id"])[TrialState.OK] if experiment else 0


def assert_each_trial_once(cluster: Cluster, outcome: dict, runs: Path, n: int) -> None:
    result = outcome["result"]
    docs = cluster.store.find_trials(result["experiment_id"])
    assert sorted(d["tid"] for d in docs) == list(range(n))
    assert all(state_of(d) is TrialState.OK for d in docs)
    ran = Counter(float(line.split()[0]) for line in runs.read_text().splitlines())
    assert sorted(ran) == sorted(flat_vals(d)["x"] for d in docs)
    assert set(ran.values()) == {1}, "an objective ran twice"


@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "emptied"])
def test_redis_restart_mid_experiment(cluster, tmp_path, persistent):
    runs = tmp_path / "runs.log"
    thread, outcome, name = run_in_thread(cluster, runs, 16, 0.3)
    wait_for(lambda: finished(cluster, name) >= 4, message="four results")
    cluster.services.down(["redis"])
    if not persistent:  # the queue is lost: the tuner must notice and re-send
        redis_dir = cluster.settings.state_dir / "redis"
        for leftover in list(redis_dir.glob("appendonly*")) + list(redis_dir.glob("*.rdb")):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    time.sleep(2)
    cluster.services.up()
    thread.join(timeout=110)
    assert not thread.is_alive()
    assert_each_trial_once(cluster, outcome, runs, 16)


def test_a_30_s_mongodb_outage_around_result_writes(cluster, tmp_path):
    runs = tmp_path / "runs.log"
    thread, outcome, name = run_in_thread(cluster, runs, 10, 1.0)
    wait_for(lambda: finished(cluster, name) >= 2, message="two results")
    cluster.services.down(["mongo"])  # trials are running: their results must wait
    time.sleep(30)
    cluster.services.up()
    thread.join(timeout=80)
    assert not thread.is_alive()
    assert_each_trial_once(cluster, outcome, runs, 10)
    logs = "".join(cluster.pool.log(n) for n in cluster.pool.processes)
    assert "retrying" in logs  # the workers waited for MongoDB instead of dropping results


@pytest.mark.settings(result_retry_s=3.0)
def test_a_longer_mongodb_outage_gives_up_the_write_and_the_trial_is_rerun(cluster, tmp_path):
    runs = tmp_path / "runs.log"
    thread, outcome, name = run_in_thread(cluster, runs, 4, 3.0)
    experiment = wait_for(lambda: cluster.store.experiment_by_name(name), message="experiment")
    running = wait_for(lambda: [d["tid"] for d in cluster.store.find_trials(
        experiment["_id"], unfinished=True) if state_of(d) is TrialState.RUNNING],
        message="a running trial")
    cluster.services.down(["mongo"])
    # the running trials end (a heartbeat may hold a result ~5 s), then their workers
    # give up the write after 3 s of retries, well before MongoDB is back
    time.sleep(20)
    cluster.services.up()
    thread.join(timeout=80)
    assert not thread.is_alive()
    docs = cluster.store.find_trials(outcome["result"]["experiment_id"])
    assert sorted(d["tid"] for d in docs) == list(range(4))
    assert all(state_of(d) is TrialState.OK for d in docs)
    for tid in running:  # not lost: run again once MongoDB was back
        assert docs[tid]["attempt"] == 2
        assert docs[tid]["attempts"][0]["reason"] == "lease expired"
    logs = "".join(cluster.pool.log(n) for n in cluster.pool.processes)
    assert "raised unexpected: ServerSelectionTimeoutError" in logs  # gave up, loudly
