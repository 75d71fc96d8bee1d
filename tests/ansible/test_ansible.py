"""``ansible/``: lint-clean, syntactically valid, and its worker role, applied to a test
host (``tests/testbed``, with a stand-in ``systemctl``), brings up one worker per GPU
that joins the pool and runs trials."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import objectives
import pytest
from hyperopt import hp, rand

from sdk import hyper_tune
from tests.helpers import REPO, WORKSPACE, unique, wait_for
from tests.testbed.cluster import module_cluster, worker_environ

ANSIBLE = REPO / "ansible"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists() and shutil.which(name) is None:
        pytest.skip(f"{name} is not installed (pip install ansible-core ansible-lint)")
    return str(path if path.exists() else shutil.which(name))


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(Path(os.environ.get("TMPDIR", "/tmp")) / "ansible-tmp")}


def test_ansible_lint_is_clean_on_the_production_profile():
    done = subprocess.run([_tool("ansible-lint"), "--offline", "--nocolor"], cwd=ANSIBLE,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Profile 'production' was required, and it passed" in done.stdout + done.stderr


def test_the_playbook_passes_the_syntax_check():
    done = subprocess.run([_tool("ansible-playbook"), "--syntax-check", "-i",
                           "inventory.example.ini", "site.yml"], cwd=ANSIBLE, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def cluster(request):
    return module_cluster(request)


@pytest.mark.testbed
def test_the_worker_role_brings_up_a_worker_per_gpu_that_joins_the_pool(cluster, tmp_path,
                                                                       request):
    playbook = _tool("ansible-playbook")
    bed = cluster.testbed
    host = bed.hosts.get(f"ans-{bed.tag}") or bed.add_host("ans", systemctl=True)
    # the workers the role starts end with the test: the other cluster tests follow
    request.addfinalizer(lambda: bed.kill_processes(host.name))
    bed.trust(*bed.hosts)
    out = tmp_path / "dist"
    bundled = cluster.tuner("cluster", "bundle", "--workspace", str(WORKSPACE), "--out",
                            str(out))
    assert bundled.returncode == 0, bundled.stderr
    machine_type = f"ansible-{bed.tag}"
    settings = cluster.settings.replace(machine_type=machine_type)
    base_python = getattr(sys, "_base_executable", sys.executable)
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[workers]\n"
        f"{host.name} ansible_host={host.address} ansible_user=root "
        f"ansible_ssh_private_key_file={bed.client_key} ansible_become=false "
        f"ansible_python_interpreter={base_python} "
        f"ansible_ssh_common_args='-o UserKnownHostsFile={bed.known_hosts} "
        "-o StrictHostKeyChecking=yes'\n")
    env = settings.to_env()
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({
        "tuner_user": "root", "tuner_create_user": False,
        "tuner_home": str(host.home / "tuner"), "tuner_machine_type": machine_type,
        "tuner_venv_system_site_packages": True,
        "tuner_project_wheel": str(next(out.glob("*.whl"))),
        "tuner_workspace_archive": str(out / "workspace.tar.gz"),
        "tuner_broker_url": env["TUNER_BROKER_URL"], "tuner_mongo_url": env["TUNER_MONGO_URL"],
        "tuner_mongo_db": env["TUNER_MONGO_DB"], "tuner_secret": env["TUNER_SECRET"],
        "tuner_lease_s": settings.lease_s, "tuner_heartbeat_s": settings.heartbeat_s}))
    extra.chmod(0o600)

    def apply() -> subprocess.CompletedProcess:
        return subprocess.run([playbook, "-i", str(inventory), "site.yml", "-e", f"@{extra}"],
                              cwd=ANSIBLE, env=_env(), capture_output=True, text=True,
                              timeout=600)

    done = apply()
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    names = {f"gpu0@{host.name}", f"gpu1@{host.name}"}

    def joined() -> dict:
        docs = {d["_id"]: d for d in cluster.store.alive_workers(
            settings.queue, now=time.time(), lease_s=settings.lease_s)}
        return docs if names <= set(docs) else {}

    docs = wait_for(joined, timeout=90, message="the Ansible-started workers")
    for gpu in ("0", "1"):
        doc = docs[f"gpu{gpu}@{host.name}"]
        assert (doc["host"], doc["gpu"]) == (host.name, gpu)
        assert worker_environ(doc["pid"])["CUDA_VISIBLE_DEVICES"] == gpu
    unit = (host.dir / "systemd" / "tuner-worker@.service").read_text()
    assert "Restart=on-failure" in unit and "--gpu %i" in unit
    assert oct((host.home / "tuner" / "worker.env").stat().st_mode & 0o777) == "0o600"

    result = hyper_tune(objectives.cluster_trial, {"x": hp.uniform("x", -1, 1)},
                        algo=rand.suggest, max_evals=4, name=unique("ansible"),
                        settings=settings, rstate=np.random.default_rng(1))
    trials = cluster.store.find_trials(result["experiment_id"])
    assert result["trials"]["ok"] == 4 and {t["host"] for t in trials} == {host.name}

    again = apply()  # idempotent: nothing changes, the same workers keep running
    assert again.returncode == 0, again.stdout[-4000:]
    assert "changed=0" in again.stdout, again.stdout[-4000:]
    assert {d["_id"]: d["pid"] for d in joined().values()} == {
        n: docs[n]["pid"] for n in names}
