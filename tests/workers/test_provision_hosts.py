"""Provisioning real SSH hosts (network namespaces with sshd, see ``tests/testbed``):
one worker per GPU, pinned and on its queue; idempotent; host keys verified; a host
that refuses SSH is reported while the others are provisioned."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import WORKSPACE
from tests.testbed.cluster import module_cluster, worker_argv, worker_environ
from workers.provisioning import HostKeyError, ProvisionError, provision
from workers.provisioning.remote import Workspace, prepare
from workers.provisioning.ssh import connect

pytestmark = pytest.mark.testbed


@pytest.fixture(scope="module")
def cluster(request):
    return module_cluster(request)


def alive_workers(cluster) -> dict[str, dict]:
    return {d["_id"]: d for d in cluster.store.alive_workers(
        "trials.default", now=time.time(), lease_s=cluster.settings.lease_s)}


def test_provisioning_starts_one_worker_per_gpu_pinned_and_on_its_queue(cluster):
    alive = alive_workers(cluster)  # (other tests may have restarted some since)
    for host in cluster.hosts:
        report = cluster.first[host.name]
        assert [g.index for g in report.gpus] == ["0", "1"]
        assert {"venv", "project", "workspace"} <= set(report.changed)
        assert [(w.name, w.gpu, w.queue, w.action) for w in report.workers] == [
            (f"gpu0@{host.name}", "0", "trials.default", "started"),
            (f"gpu1@{host.name}", "1", "trials.default", "started")]
        home = cluster.testbed.hosts[host.name].home / ".gpu-tuner"
        for worker in report.workers:
            doc = alive[worker.name]  # in the pool: heartbeats from its own host
            assert (doc["host"], doc["gpu"], doc["queue"]) == (
                host.name, worker.gpu, "trials.default")
            env, argv = worker_environ(doc["pid"]), worker_argv(doc["pid"])
            assert env["CUDA_VISIBLE_DEVICES"] == worker.gpu
            assert argv[0] == str(home / "venv" / "bin" / "python")
            assert argv[argv.index("--gpu") + 1] == worker.gpu
            assert argv[argv.index("--worker-machine-type") + 1] == "default"
            log = Path(worker.log).read_text()
            assert "concurrency: 1 (thread)" in log
            assert not [s for s in cluster.secrets if s in log]  # URLs shown redacted
        # the project runs from the host's own venv, not from this checkout
        installed = list((home / "venv" / "lib").glob("python3*/site-packages/workers"))
        assert installed and (installed[0] / "provisioning" / "agent.py").exists()
        assert oct((home / "worker.env").stat().st_mode & 0o777) == "0o600"


def test_provisioning_again_from_the_command_line_changes_nothing(cluster):
    before = {name: doc["pid"] for name, doc in alive_workers(cluster).items()}
    assert len(before) == 6
    done = cluster.tuner("cluster", "provision", "--inventory", str(cluster.inventory),
                         "--known-hosts", str(cluster.testbed.known_hosts),
                         "--workspace", str(WORKSPACE), "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [s for s in cluster.secrets if s in done.stdout + done.stderr]
    result = json.loads(done.stdout)
    assert all(r["ok"] and r["changed"] == [] for r in result.values()), result
    assert {w["name"]: (w["action"], w["pid"]) for r in result.values()
            for w in r["workers"]} == {name: ("running", pid) for name, pid in before.items()}
    status = {w["name"]: w["pid"] for r in cluster_status_json(cluster).values()
              for w in r["workers"]}
    assert status == before


def cluster_status_json(cluster) -> dict:
    done = cluster.tuner("cluster", "status", "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_an_unknown_host_key_is_refused_unless_trusting_new_hosts_is_asked(cluster, tmp_path):
    bed = cluster.testbed
    h1, h2 = cluster.hosts[0], cluster.hosts[1]
    known = tmp_path / "known_hosts"
    known.write_text(bed.hosts[h1.name].known_hosts_line)
    with pytest.raises(HostKeyError, match="not in known_hosts .*SHA256:"):
        with connect(h2, known_hosts=known):
            pass
    assert h2.address not in known.read_text()  # nothing silently recorded

    done = cluster.tuner("cluster", "provision", "--hosts", f"root@{h2.address}", "--key",
                         str(bed.client_key), "--known-hosts", str(known))
    assert done.returncode == 1
    assert "not in known_hosts" in done.stdout and "--trust-new-hosts" in done.stdout

    with connect(h2, known_hosts=known, trust_new_hosts=True) as remote:
        assert remote.run("hostname", step="test").stdout.strip() == h2.name
    assert bed.hosts[h2.name].known_hosts_line in known.read_text()
    with connect(h2, known_hosts=known) as remote:  # now known: no trust needed
        remote.run("true", step="test")

    # a key that differs from the recorded one is refused, even when trusting new hosts
    known.write_text(f"{h1.address} {bed.hosts[h2.name].host_key}\n")
    with pytest.raises(HostKeyError, match="does not match"):
        with connect(h1, known_hosts=known, trust_new_hosts=True):
            pass


def test_a_host_that_refuses_ssh_is_reported_and_the_others_are_provisioned(cluster):
    bed = cluster.testbed
    down = bed.hosts.get(f"down-{bed.tag}") or bed.add_host("down", sshd=False)
    hosts = [cluster.hosts[0], type(cluster.hosts[0])(
        name=down.name, address=down.address, user="root",
        key_filename=str(bed.client_key))]
    result = provision(hosts, cluster.settings, cluster.options())
    assert list(result) == [cluster.hosts[0].name, down.name]
    assert [w.action for w in result[cluster.hosts[0].name].workers] == ["running", "running"]
    failure = result.failed[down.name]
    assert isinstance(failure, ProvisionError) and failure.step == "connect"
    assert "Connection refused" in str(failure)


def test_a_git_workspace_with_requirements_is_cloned_and_installed(cluster, tmp_path):
    """The ``git+URL`` workspace on a CPU-only host (no nvidia-smi): cloned on the host
    at the requested ref, its requirements installed, both skipped when unchanged."""
    bed = cluster.testbed
    cpu = bed.hosts.get(f"git-{bed.tag}") or bed.add_host("git", gpus=0)
    (bed.hosts[cpu.name].dir / "bin" / "nvidia-smi").unlink()
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "tune.py").write_text("print('tuning')\n")
    (repo / "requirements.txt").write_text("numpy\n")  # already there: pip stays offline
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "one"], check=True)
    subprocess.run(git + ["tag", "v1"], check=True)
    (repo / "tune.py").write_text("print('tuning, v2')\n")
    subprocess.run(git + ["commit", "-qam", "two"], check=True)
    host = type(cluster.hosts[0])(name=cpu.name, address=cpu.address, user="root",
                                  key_filename=str(bed.client_key), system_site_packages=True)
    bed.trust(*cluster.names, cpu.name)
    from workers.provisioning.bundle import project_wheel

    def run(ref: str):
        with connect(host, known_hosts=bed.known_hosts) as remote:
            return prepare(remote, project=project_wheel(),
                           workspace=Workspace.parse_git(f"git+file://{repo}@{ref}"),
                           env_text="")

    first = run("v1")
    assert first.gpus == [] and {"project", "workspace", "requirements"} <= set(first.changed)
    workspace = bed.hosts[cpu.name].home / ".gpu-tuner" / "workspace"
    assert (workspace / "tune.py").read_text() == "print('tuning')\n"
    assert run("v1").changed == []
    assert run("main").changed == ["workspace"]
    assert (workspace / "tune.py").read_text() == "print('tuning, v2')\n"
