"""``python -m tuner cluster status|logs|stop``, ``experiments logs`` and
``hyperparameters run --hosts`` on the test cluster (``tests/testbed``)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import objectives
import pytest
from hyperopt import hp, rand

from sdk import hyper_tune
from tests.helpers import WORKSPACE, unique, wait_for
from tests.testbed.cluster import module_cluster, write_inventory

pytestmark = pytest.mark.testbed


@pytest.fixture(scope="module")
def cluster(request):
    return module_cluster(request)


def status(cluster) -> dict:
    done = cluster.tuner("cluster", "status", "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def nothing_left(bed, name: str) -> None:
    """Nothing runs on the host but its sshd (the sessions of the SSH commands that
    just ran may take a moment to exit)."""
    left: dict = {}

    def idle() -> bool:
        left.clear()
        left.update(bed.processes(name))
        return not left

    try:
        wait_for(idle, timeout=15, interval=0.2, message=f"{name} to have nothing running")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {left}") from None


def test_status_shows_every_host_its_gpus_and_its_workers(cluster):
    hosts = status(cluster)
    assert list(hosts) == cluster.names
    for name, host in hosts.items():
        assert host["reachable"] is True
        assert [(g["index"], g["name"]) for g in host["gpus"]] == [
            ("0", "NVIDIA Test GPU"), ("1", "NVIDIA Test GPU")]
        assert [(w["name"], w["gpu"], w["state"]) for w in host["workers"]] == [
            (f"gpu0@{name}", "0", "idle"), (f"gpu1@{name}", "1", "idle")]
        assert all(w["heartbeat_age_s"] < cluster.settings.lease_s for w in host["workers"])
    table = cluster.tuner("cluster", "status", COLUMNS="200")
    assert table.returncode == 0 and "gpu1@" + cluster.names[2] in table.stdout
    assert not [s for s in cluster.secrets if s in table.stdout + table.stderr]


def test_a_busy_worker_shows_its_trial(cluster):
    name = unique("busy")
    runner = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import objectives; "
         "from hyperopt import hp, rand; from sdk import hyper_tune; "
         "hyper_tune(objectives.cluster_trial, {'x': hp.uniform('x', 0, 1), 'sleep': 6}, "
         "algo=rand.suggest, max_evals=1)", str(WORKSPACE)],
        cwd=WORKSPACE, env=cluster.env(TUNER_EXPERIMENT=name), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        def busy():
            workers = [w for h in status(cluster).values() for w in h["workers"]]
            return [w for w in workers if w["state"] == "busy"]
        (worker,) = wait_for(busy, timeout=60, interval=0.5, message="a busy worker")
        assert worker["trial"]["experiment"] == name and worker["trial"]["tid"] == 0
    finally:
        _, err = runner.communicate(timeout=90)
    assert runner.returncode == 0, err


def test_logs_of_a_worker_and_the_full_log_of_a_trial(cluster):
    host = cluster.names[0]
    done = cluster.tuner("cluster", "logs", host, "--gpu", "1", "--lines", "400")
    assert done.returncode == 0, done.stderr
    assert f"gpu1@{host} ready" in done.stdout and f"gpu0@{host}" not in done.stdout

    follow = subprocess.Popen([sys.executable, "-m", "tuner", "cluster", "logs", host,
                               "--follow", "--lines", "5000"], cwd=cluster.testbed.root,
                              env=cluster.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(follow.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        wait_for(lambda: all(f"gpu{i}@{host} ready" in "".join(seen) for i in (0, 1)),
                 timeout=60, message="both workers' logs")
        time.sleep(1)
        assert follow.poll() is None  # still following
    finally:
        follow.terminate()
        follow.wait(timeout=10)

    name = unique("logs")
    hyper_tune(objectives.cluster_trial, {"x": hp.uniform("x", -1, 1), "sleep": 0.1},
               algo=rand.suggest, max_evals=3, name=name, settings=cluster.settings,
               rstate=np.random.default_rng(0))
    doc = cluster.store.trial(cluster.store.experiment_by_name(name)["_id"], 1)
    done = cluster.tuner("experiments", "logs", name, "1")
    assert done.returncode == 0, done.stderr
    assert f"cluster trial x={doc['params']['x']!r} on {doc['host']}" in done.stdout
    assert "cluster trial done" in done.stdout
    assert cluster.tuner("experiments", "logs", name, "1", "--attempt", "7").returncode == 2

    other = cluster.store.trial(doc["exp_key"], 2)
    (cluster.testbed.hosts[other["host"]].home / ".gpu-tuner" / "state" / "logs" /
     doc["exp_key"] / "2.1.log").unlink()
    gone = cluster.tuner("experiments", "logs", name, "2")
    assert gone.returncode == 1 and "gone" in gone.stderr
    assert "cluster trial done" in gone.stdout  # the tail kept in the trial document


def test_stop_stops_only_that_hosts_workers(cluster):
    victim = cluster.names[1]
    done = cluster.tuner("cluster", "stop", "--hosts", victim, "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == {victim: {
        "ok": True, "stopped": [f"gpu0@{victim}", f"gpu1@{victim}"], "not_running": []}}
    try:
        hosts = status(cluster)
        assert hosts[victim]["workers"] == []
        assert all(len(h["workers"]) == 2 and {w["state"] for w in h["workers"]} == {"idle"}
                   for n, h in hosts.items() if n != victim)
        nothing_left(cluster.testbed, victim)
    finally:
        cluster.reprovision(victim)


def test_hyperparameters_run_provisions_workers_for_the_experiment_and_stops_them(cluster):
    """A CPU-only host (no nvidia-smi): ``--worker-count 2`` CPU workers started with a
    custom ``--worker-command`` on their own queue, the tuning command run here against
    the cluster's services, the workers stopped at the end (``--stop-workers``)."""
    bed = cluster.testbed
    cpu = bed.hosts.get(f"cpu-{bed.tag}") or bed.add_host("cpu", gpus=0)
    (cpu.dir / "bin" / "nvidia-smi").unlink(missing_ok=True)
    bed.trust(*bed.hosts)
    inventory = write_inventory(bed.root / "cpu.yml", bed, [cpu.name])
    name = unique("run-hosts")
    done = cluster.tuner(
        "hyperparameters", "run", "--name", name, "--tuning-command",
        "python tune_script.py 6", "--workspace", str(WORKSPACE), "--worker-count", "2",
        "--worker-machine-type", "cpuonly", "--inventory", str(inventory),
        "--known-hosts", str(bed.known_hosts), "--system-site-packages", "--stop-workers",
        "--worker-command", 'echo "custom command for $TUNER_WORKER_NAME"; exec python -m '
        'workers --name "$TUNER_WORKER_NAME" --loglevel info', COLUMNS="200", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Hyperparameter created with ID" in done.stdout and "Best trial" in done.stdout
    assert f"cpu0@{cpu.name} started" in done.stdout
    assert f"stopped cpu0@{cpu.name}, cpu1@{cpu.name}" in done.stdout
    assert not [s for s in cluster.secrets if s in done.stdout + done.stderr]
    experiment = cluster.store.experiment_by_name(name)
    docs = cluster.store.find_trials(experiment["_id"])
    assert len(docs) == 6 and {d["host"] for d in docs} == {cpu.name}
    assert {d["gpu"] for d in docs} == {None}
    log = (cpu.home / ".gpu-tuner" / "logs" / "worker-cpu1.log").read_text()
    assert f"custom command for cpu1@{cpu.name}" in log and "trials.cpuonly" in log
    nothing_left(bed, cpu.name)  # stopped
