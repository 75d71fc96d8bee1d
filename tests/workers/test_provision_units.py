"""Provisioning pieces that need no SSH: host lists and inventories, slot allocation,
what is shipped, the worker settings file, the on-host agent (run here), per-host
results."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from broker.errors import ConfigError
from broker.gpus import Gpu
from broker.settings import Secret, Settings
from tests.helpers import REPO, wait_for
from workers.provisioning import (
    FleetError,
    Host,
    InventoryError,
    ProvisionError,
    check_reachable,
    load_inventory,
    parse_hosts,
    with_defaults,
)
from workers.provisioning import agent as agent_module
from workers.provisioning.bundle import project_wheel, workspace_archive
from workers.provisioning.fleet import run_parallel
from workers.provisioning.layout import Layout
from workers.provisioning.provisioner import _env_text, allocate
from workers.provisioning.remote import Prepared, Workspace


def test_hosts_option_takes_users_ports_and_defaults():
    hosts = parse_hosts("gpu1, ml@gpu2:2222,[fe80::1]:23", user="me", key_filename="~/k")
    assert [(h.name, h.address, h.port, h.user) for h in hosts] == [
        ("gpu1", "gpu1", 22, "me"), ("gpu2", "gpu2", 2222, "ml"),
        ("fe80::1", "fe80::1", 23, "me")]
    assert {h.key_filename for h in hosts} == {"~/k"}
    with pytest.raises(InventoryError, match="listed twice"):
        parse_hosts("a,a")
    with pytest.raises(InventoryError, match="no hosts"):
        parse_hosts(" , ")


def test_ini_inventory_with_ranges_children_and_group_vars(tmp_path):
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("tuner_python: /opt/py/bin/python3\n")
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "gpu02.yml").write_text("tuner_cpu_workers: 3\n")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("""
[broker]
db1 ansible_host=10.0.0.2

[a100]
gpu[01:02] ansible_user=ml tuner_machine_type=a100

[cpu]
cpu1 ansible_host=10.0.0.9 ansible_port=2200 tuner_venv_system_site_packages=yes

[workers:children]
a100
cpu

[workers:vars]
ansible_ssh_private_key_file=~/.ssh/id_ed25519
tuner_home="/data/tuner"
""")
    hosts = {h.name: h for h in load_inventory(inventory)}
    assert list(hosts) == ["gpu01", "gpu02", "cpu1"]  # not the broker
    assert hosts["gpu01"].user == "ml" and hosts["gpu01"].machine_type == "a100"
    assert hosts["gpu01"].remote_dir == "/data/tuner"
    assert hosts["gpu01"].python == "/opt/py/bin/python3"
    assert hosts["gpu02"].cpu_workers == 3 and hosts["gpu01"].cpu_workers is None
    assert (hosts["cpu1"].address, hosts["cpu1"].port) == ("10.0.0.9", 2200)
    assert hosts["cpu1"].system_site_packages is True
    assert hosts["cpu1"].key_filename == "~/.ssh/id_ed25519"


def test_yaml_inventory_and_the_example_inventory_of_the_ansible_folder(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("""
all:
  vars: {ansible_user: ml}
  children:
    workers:
      vars: {tuner_machine_type: a100}
      hosts:
        gpu1: {ansible_host: 10.0.0.11}
        gpu2: {ansible_host: 10.0.0.12, ansible_user: root}
""")
    hosts = load_inventory(inventory)
    assert [(h.name, h.address, h.user, h.machine_type) for h in hosts] == [
        ("gpu1", "10.0.0.11", "ml", "a100"), ("gpu2", "10.0.0.12", "root", "a100")]
    example = load_inventory(REPO / "ansible" / "inventory.example.ini")
    assert example and all(h.address.startswith("10.") for h in example)
    with pytest.raises(InventoryError, match="Jinja"):
        bad = tmp_path / "bad.yml"
        bad.write_text("all:\n  hosts:\n    g: {ansible_host: '{{ x }}'}\n")
        load_inventory(bad)


def test_command_line_defaults_fill_only_what_the_inventory_left_unset():
    hosts = [Host("a", "a"), Host("b", "b", python="/usr/bin/python3.12")]
    out = with_defaults(hosts, python="/opt/python3", remote_dir=None,
                        system_site_packages=True)
    assert [h.python for h in out] == ["/opt/python3", "/usr/bin/python3.12"]
    assert all(h.system_site_packages for h in out)


def _prepared(name: str, gpus: int, cpu_workers: int | None = None) -> Prepared:
    return Prepared(Host(name, name, cpu_workers=cpu_workers), Layout("/x"), "3.11",
                    [Gpu(str(i), "A100", "80 GB") for i in range(gpus)], {})


def test_slots_one_per_gpu_spread_over_hosts_for_a_worker_count():
    prepared = {"g1": _prepared("g1", 2), "g2": _prepared("g2", 2), "c": _prepared("c", 0)}
    assert allocate(prepared, None, 1) == {
        "g1": [("gpu0", "0"), ("gpu1", "1")], "g2": [("gpu0", "0"), ("gpu1", "1")],
        "c": [("cpu0", None)]}
    assert allocate(prepared, 3, 1) == {"g1": [("gpu0", "0")], "g2": [("gpu0", "0")],
                                        "c": [("cpu0", None)]}
    # the CPU-only host without a fixed count takes what the GPUs cannot
    plan = allocate(prepared, 7, 1)
    assert len(plan["g1"]) == len(plan["g2"]) == 2 and len(plan["c"]) == 3
    fixed = {"g1": _prepared("g1", 1), "c": _prepared("c", 0, cpu_workers=1)}
    assert sum(len(v) for v in allocate(fixed, 5, 1).values()) == 2  # warns, no more


def test_the_project_wheel_holds_the_packages_and_the_installed_metadata():
    wheel = project_wheel()
    names = zipfile.ZipFile(io.BytesIO(wheel.data)).namelist()
    assert wheel.filename.startswith("gpu_tuner-") and wheel.filename.endswith("-none-any.whl")
    for module in ("broker/settings.py", "workers/provisioning/agent.py", "tuner/cli.py",
                   "sdk/__init__.py", "tuner/dashboard/static/app.js"):
        assert module in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    metadata = zipfile.ZipFile(io.BytesIO(wheel.data)).read(
        next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
    assert "Requires-Dist: celery" in metadata


def test_the_workspace_archive_leaves_out_state_secrets_vcs_and_venvs(tmp_path):
    (tmp_path / "tune.py").write_text("print('hi')\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"x" * 10)
    for folder in (".tuner", ".git", "__pycache__", "env"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "secrets.json").write_text("{}")
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /usr\n")  # a venv by another name
    (tmp_path / ".tunerignore").write_text("# comment\ndata\n*.log\n")
    (tmp_path / "run.log").write_text("log")
    archive = workspace_archive(tmp_path)
    names = tarfile.open(fileobj=io.BytesIO(archive.data)).getnames()
    assert sorted(names) == [".tunerignore", "tune.py"]
    assert workspace_archive(tmp_path).fingerprint == archive.fingerprint
    (tmp_path / "tune.py").write_text("print('changed')\n")
    assert workspace_archive(tmp_path).fingerprint != archive.fingerprint


def test_git_workspaces_parse_their_ref():
    assert Workspace.parse_git("git+https://h/r.git@v1.2") == Workspace(
        git_url="https://h/r.git", git_ref="v1.2")
    assert Workspace.parse_git("git+ssh://git@h/r.git").git_ref == "HEAD"
    assert Workspace.parse_git("git+git@h:r.git").git_url == "git@h:r.git"


def test_workers_get_the_service_settings_but_not_this_machines_paths():
    settings = Settings(broker_url="redis://:p@10.0.0.2:6379/0",
                        mongo_url='mongodb://u:p"w@10.0.0.3:27017/?authSource=admin',
                        secret=Secret("s3cret"), workspace=Path("/home/me/proj"),
                        experiment="mine", lease_s=20)
    text = _env_text(settings, Host("g", "g"))
    assert 'TUNER_SECRET="s3cret"' in text and 'TUNER_LEASE_S="20"' in text
    assert 'mongodb://u:p\\"w@' in text
    assert "TUNER_WORKSPACE" not in text and "TUNER_EXPERIMENT" not in text
    assert "TUNER_HOME" not in text
    env = agent_module._read_env_file  # the agent reads back what was written
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"env-{os.getpid()}"
    path.write_text(text)
    try:
        assert env(str(path))["TUNER_MONGO_URL"] == settings.mongo_url
    finally:
        path.unlink()


def test_a_cluster_refuses_loopback_services_and_the_local_default():
    with pytest.raises(ConfigError, match="every host can reach"):
        check_reachable(Settings())
    with pytest.raises(ConfigError, match="loopback"):
        check_reachable(Settings(broker_url="redis://:p@127.0.0.1:6379/0",
                                 mongo_url="mongodb://u:p@10.0.0.3:27017"))
    check_reachable(Settings(broker_url="redis://:p@10.0.0.2:6379/0",
                             mongo_url="mongodb://u:p@db1:27017,db2:27017/?replicaSet=r"))


def test_every_host_gets_a_result_or_its_exception():
    def work(name: str) -> str:
        if name == "bad":
            raise ProvisionError(name, "install", "pip failed")
        if name == "bug":
            raise KeyError("oops")
        time.sleep(0.1)
        return f"done {name}"

    result = run_parallel(["a", "bad", "bug", "b"], lambda n: n, work)
    assert list(result) == ["a", "bad", "bug", "b"]
    assert result.succeeded == {"a": "done a", "b": "done b"}
    assert set(result.failed) == {"bad", "bug"}
    assert result.failed["bug"].step == "unexpected" and "KeyError" in str(result["bug"])
    with pytest.raises(FleetError) as caught:
        result.raise_on_failure("provisioning")
    assert caught.value.result is result and "2 of 4 hosts" in str(caught.value)


# -- the agent, run on this machine ------------------------------------------------------------


def _agent(root: Path, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "workers.provisioning.agent", str(root),
                           *args], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _spec(*workers: tuple[str, str | None, str]) -> str:
    import base64

    return base64.b64encode(json.dumps({"workers": [
        {"name": name, "slot": f"gpu{gpu}" if gpu is not None else "cpu0", "gpu": gpu,
         "machine_type": "t", "queue": "trials.t", "fingerprint": fp,
         "command": 'echo "gpu=$TUNER_GPU cuda=$CUDA_VISIBLE_DEVICES name=$TUNER_WORKER_NAME '
                    'secret=$TUNER_SECRET"; exec sleep 600'}
        for name, gpu, fp in workers]}).encode()).decode()


def test_the_agent_starts_once_restarts_on_change_and_stops_only_its_own(tmp_path):
    root = tmp_path / "home"
    (root / "workspace").mkdir(parents=True)
    (root / "worker.env").write_text('TUNER_SECRET="from env file"\n')
    outsider = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        first = _agent(root, "start", _spec(("gpu0@h", "0", "a"), ("gpu1@h", "1", "a")))
        assert [w["action"] for w in first["workers"]] == ["started", "started"]
        log = Layout(str(root)).worker_log("gpu1")
        wait_for(lambda: "name=gpu1@h" in Path(log).read_text(), timeout=10)
        assert "gpu=1 cuda=1 name=gpu1@h secret=from env file" in Path(log).read_text()

        again = _agent(root, "start", _spec(("gpu0@h", "0", "a"), ("gpu1@h", "1", "b")))
        assert [w["action"] for w in again["workers"]] == ["running", "restarted"]
        assert again["workers"][0]["pid"] == first["workers"][0]["pid"]
        assert again["workers"][1]["pid"] != first["workers"][1]["pid"]

        os.kill(again["workers"][0]["pid"], 9)  # a worker that died is started again
        wait_for(lambda: not [w for w in _agent(root, "status")["workers"]
                              if w["name"] == "gpu0@h" and w["alive"]], timeout=10)
        third = _agent(root, "start", _spec(("gpu0@h", "0", "a"), ("gpu1@h", "1", "b")))
        assert [w["action"] for w in third["workers"]] == ["started", "running"]

        stopped = _agent(root, "stop")
        assert sorted(stopped["stopped"]) == ["gpu0@h", "gpu1@h"]
        assert _agent(root, "status")["workers"] == []
        assert outsider.poll() is None  # not started by the agent: untouched
    finally:
        outsider.kill()
        outsider.wait()
        _agent(root, "stop")


def test_the_agent_unpacks_a_workspace_in_place_and_refuses_escaping_paths(tmp_path):
    good = io.BytesIO()
    with tarfile.open(fileobj=good, mode="w:gz") as tar:
        info = tarfile.TarInfo("tune.py")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"ok"))
    archive = tmp_path / "ws.tar.gz"
    archive.write_bytes(good.getvalue())
    dest = tmp_path / "workspace"
    dest.mkdir()
    (dest / "stale.py").write_text("old")
    assert _agent(tmp_path, "unpack", str(archive), str(dest)) == {"ok": True}
    assert sorted(p.name for p in dest.iterdir()) == ["tune.py"]

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    archive.write_bytes(evil.getvalue())
    done = subprocess.run([sys.executable, "-m", "workers.provisioning.agent", str(tmp_path),
                           "unpack", str(archive), str(dest)], capture_output=True, cwd=REPO)
    assert done.returncode != 0 and not (tmp_path / "escaped.py").exists()
    assert (dest / "tune.py").read_text() == "ok"  # the old workspace stays
