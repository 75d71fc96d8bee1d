"""``python -m tuner`` as a user runs it: real processes, real services."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO, WORKSPACE, process_alive, unique


def tuner(*args: str, env: dict[str, str], cwd=REPO, timeout: float = 240):
    return subprocess.run([sys.executable, "-m", "tuner", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def configured_env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNER_")}
    return {**env, **settings.to_env()}


@pytest.mark.usefixtures("workers")
def test_hyperparameters_run_then_inspect(settings):
    env = configured_env(settings)
    name = unique("cli")
    run = tuner("hyperparameters", "run", "--name", name, "--tuning-command",
                "python tune_script.py 6", "--worker-count", "0", "--workspace", str(WORKSPACE),
                env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Hyperparameter created with ID: " in run.stdout and "and started" in run.stdout
    assert "Best trial" in run.stdout and "kind = " in run.stdout
    assert "RESULT" in run.stdout  # the tuning command's own output is passed through

    rows = json.loads(tuner("experiments", "trials", name, "--format", "json", env=env).stdout)
    assert len(rows) == 6 and {r["state"] for r in rows} == {"ok"}
    assert all(r["host"] and r["worker"] and r["duration_s"] is not None for r in rows)
    table = list(csv.DictReader(io.StringIO(
        tuner("experiments", "trials", name, "--format", "csv", env=env).stdout)))
    assert [int(r["tid"]) for r in table] == list(range(6))
    assert {"param.x", "param.kind"} <= set(table[0])

    listed = json.loads(tuner("experiments", "list", "--format", "json", env=env).stdout)
    mine = next(e for e in listed if e["name"] == name)
    assert mine["ok"] == 6 and mine["state"] == "finished"
    shown = json.loads(tuner("experiments", "show", name, "--format", "json", env=env).stdout)
    assert shown["counts"]["ok"] == 6 and shown["best"]["loss"] == min(
        r["loss"] for r in rows)
    assert "spec" not in shown and "spec_signature" not in shown

    again = tuner("hyperparameters", "run", "--name", name, "--tuning-command",
                  "python tune_script.py 6", "--worker-count", "0", "--workspace",
                  str(WORKSPACE), env=env)
    assert again.returncode == 0 and "resumed with ID" in again.stdout


def test_a_custom_worker_command_on_its_own_machine_type(settings, store):
    env = configured_env(settings)
    name, machine_type = unique("custom"), unique("custom")
    run = tuner("hyperparameters", "run", "--name", name, "--tuning-command",
                "python tune_script.py 3", "--worker-count", "1", "--worker-machine-type",
                machine_type, "--worker-command", "python -m workers --loglevel warning",
                "--workspace", str(WORKSPACE), env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    experiment = store.experiment_by_name(name)
    assert experiment["queue"] == f"trials.{machine_type}"
    docs = store.find_trials(experiment["_id"])
    assert len(docs) == 3 and all(d["result"]["status"] == "ok" for d in docs)
    assert {d["worker"].split("-")[0] for d in docs} == {"local0"}


def test_a_worker_that_cannot_start_ends_the_run_with_its_log(settings, tmp_path):
    pid_file = tmp_path / "tuning.pid"
    # a shell that does not exec its last command: the tuning script is its child
    command = f"python tune_script.py 3 & echo $! > {pid_file}; wait"
    result = tuner("hyperparameters", "run", "--name", unique("broken"), "--tuning-command",
                   command, "--worker-count", "1", "--worker-machine-type",
                   unique("broken"), "--worker-command",
                   "python -c 'import sys; print(\"cannot start\"); sys.exit(5)'",
                   "--workspace", str(WORKSPACE), env=configured_env(settings), timeout=120)
    assert result.returncode == 2
    assert "local worker exited with status 5" in result.stderr
    assert "cannot start" in result.stdout
    assert not process_alive(int(pid_file.read_text())), "the tuning script was left running"


def test_the_tuning_commands_exit_status_is_returned(settings):
    result = tuner("hyperparameters", "run", "--name", unique("exit"), "--tuning-command",
                   "exit 3", "--worker-count", "0", env=configured_env(settings))
    assert result.returncode == 3


def test_errors_are_one_line(settings):
    result = tuner("experiments", "trials", "no-such-experiment", env=configured_env(settings))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: no experiment named 'no-such-experiment'"
    bad = {**configured_env(settings), "TUNER_MONGO_URL": "mongodb://127.0.0.1:9/"}
    result = tuner("experiments", "list", env=bad)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach MongoDB at mongodb://127.0.0.1:9/")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_help_everywhere():
    env = dict(os.environ)
    for args in ([], ["hyperparameters"], ["hyperparameters", "run"], ["experiments"],
                 ["experiments", "trials"], ["services"]):
        result = tuner(*args, "--help", env=env)
        assert result.returncode == 0 and "usage: python -m tuner" in result.stdout


def test_the_example_on_the_local_default(tmp_path):
    """The README's first command, shortened: nothing configured, everything local."""
    workspace = tmp_path / "digits"
    shutil.copytree(REPO / "examples" / "digits", workspace,
                    ignore=shutil.ignore_patterns(".tuner", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNER_")}
    run = tuner("hyperparameters", "run", "--name", "digits-mlp", "--tuning-command",
                "python tune.py", "--worker-count", "2", "--workspace", ".", "--max-evals", "4",
                env=env, cwd=workspace)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "best validation accuracy" in run.stdout
    assert "optimizer.name = " in run.stdout

    status = tuner("services", "status", env=env, cwd=workspace)
    assert status.stdout.count("stopped") == 2  # the run stopped what it started
    trials = tuner("experiments", "trials", "digits-mlp", "--format", "json", env=env,
                   cwd=workspace)
    rows = json.loads(trials.stdout)
    assert len(rows) == 4 and all(r["state"] == "ok" for r in rows)
    assert all(0 <= r["loss"] <= 1 for r in rows)
    assert (workspace / ".tuner" / "mongo" / "db").is_dir()


def test_the_dashboard_command_serves_the_experiments(settings):
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tuner", "dashboard", "--port", str(port)],
                              cwd=REPO, env=configured_env(settings), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        assert f"http://127.0.0.1:{port}/" in server.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/experiments", timeout=30) as r:
            assert r.status == 200 and isinstance(json.loads(r.read()), (list, dict))
    finally:
        server.terminate()
        server.wait(timeout=10)
