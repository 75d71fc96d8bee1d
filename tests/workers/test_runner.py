"""The trial process: reuse, output capture, deaths and kills (no Celery involved)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from hyperopt import hp

from broker import space
from tests.helpers import REPO, WORKSPACE, process_alive, wait_for
from workers.runner import Runner, RunnerPool
from workers.trial_process import Launcher


def load_request(function: str, search_space) -> dict:
    encoded = space.encode(space.validate(search_space))
    return {"objective": {"kind": "module", "module": "objectives", "qualname": function,
                          "root": ".", "sha256": None},
            "space": encoded, "space_fingerprint": space.fingerprint(encoded)}


@pytest.fixture
def runner():
    runner = Runner(Launcher(WORKSPACE))
    yield runner
    runner.close()


def test_trials_of_one_experiment_share_one_process_and_output_is_captured(runner, tmp_path):
    runs = tmp_path / "runs.log"
    request = load_request("logged", {"x": hp.uniform("x", -1, 1), "log": str(runs)})
    for i, x in enumerate((0.5, -0.25)):
        outcome = runner.run("exp:1", request, {"x": x}, tmp_path / f"{i}.log",
                             tick=lambda: "ok", interval_s=0.5)
        assert outcome.kind == "done"
        assert outcome.result == {"loss": abs(x), "status": "ok"}
        assert outcome.params == {"log": str(runs), "x": x}
        assert outcome.started_at <= outcome.ended_at
    pids = {line.split()[1] for line in runs.read_text().splitlines()}
    assert len(pids) == 1

    chatty = load_request("chatty", {"x": hp.uniform("x", 0, 1)})
    outcome = runner.run("exp:2", chatty, {"x": 0.5}, tmp_path / "chatty.log",
                         tick=lambda: "ok", interval_s=0.5)
    assert outcome.kind == "done"
    log = (tmp_path / "chatty.log").read_text()
    assert "from python print" in log and "from fd 1" in log and "from fd 2" in log
    assert not process_alive(int(pids.pop()))  # the other experiment's process was replaced


def test_a_trial_that_kills_its_own_process_is_reported_as_died(runner, tmp_path):
    outcome = runner.run("exp", load_request("suicide", {"x": hp.uniform("x", 0, 1)}),
                         {"x": 0.5}, tmp_path / "t.log", tick=lambda: "ok", interval_s=0.5)
    assert outcome.kind == "died"
    assert outcome.error == "trial process killed by SIGKILL"


def test_stopping_kills_the_whole_process_group(runner, tmp_path):
    pids = tmp_path / "pids"
    verdicts = iter(["ok"] * 100)
    request = load_request("spawn_and_sleep", {"pids": str(pids)})

    def tick() -> str:
        return "cancel" if pids.exists() else next(verdicts)

    started = time.monotonic()
    outcome = runner.run("exp", request, {}, tmp_path / "t.log", tick=tick, interval_s=0.2)
    assert outcome.kind == "stopped" and outcome.reason == "cancel"
    assert time.monotonic() - started < 30
    trial_pid, grandchild_pid = map(int, pids.read_text().split())
    wait_for(lambda: not process_alive(trial_pid) and not process_alive(grandchild_pid), timeout=5,
             message="the trial process and its child to be gone")


def test_an_objective_that_cannot_be_loaded_is_unavailable(runner, tmp_path):
    request = load_request("quadratic", {"x": hp.uniform("x", 0, 1)})
    request["objective"]["module"] = "no_such_module"
    outcome = runner.run("exp", request, {"x": 0.5}, tmp_path / "t.log", tick=lambda: "ok",
                         interval_s=0.5)
    assert outcome.kind == "unavailable"
    assert "no_such_module" in outcome.error


def test_the_trial_process_dies_with_its_worker(tmp_path):
    pids = tmp_path / "pids"
    script = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from workers.runner import Runner
from workers.trial_process import Launcher
from tests.workers.test_runner import load_request
runner = Runner(Launcher(Path({str(WORKSPACE)!r})))
runner.run("exp", load_request("spawn_and_sleep", {{"pids": {str(pids)!r}}}), {{}},
           Path({str(tmp_path / "t.log")!r}), tick=lambda: "ok", interval_s=0.5)
"""
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    wait_for(pids.exists, timeout=30, message="the trial to start")
    trial_pid, grandchild_pid = map(int, pids.read_text().split())
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    wait_for(lambda: not process_alive(trial_pid) and not process_alive(grandchild_pid), timeout=10,
             message="the orphaned trial process and its child to be killed")


def test_runner_pool_lends_the_runner_that_holds_the_experiment():
    class Held:
        loaded_key = None

        def close(self):
            pass

    pool = RunnerPool(Held)
    with pool.borrow("a") as first:
        first.loaded_key = "a"
        with pool.borrow("b") as second:  # a concurrent task gets a runner of its own
            assert second is not first
            second.loaded_key = "b"
    with pool.borrow("b") as again:
        assert again is second
    with pool.borrow("a") as again:
        assert again is first
    pool.close()


def test_runner_pool_keeps_idle_runners_of_other_experiments_up_to_its_bound():
    class Held:
        loaded_key = None

        def close(self):
            pass

    def alternate(pool: RunnerPool) -> list[Held]:
        """One slot running a, b, a, b: the runners it was lent."""
        lent = []
        for key in "abab":
            with pool.borrow(key) as runner:
                runner.loaded_key = key
                lent.append(runner)
        pool.close()
        return lent

    a1, b1, a2, b2 = alternate(RunnerPool(Held, keep_idle=1))
    assert (a1, b1) == (a2, b2) and a1 is not b1  # both experiments stay loaded
    a1, b1, a2, b2 = alternate(RunnerPool(Held))
    assert a1 is b1 is a2 is b2  # one runner, reloaded on every switch


def test_trial_processes_are_forked_by_a_server_in_their_own_session(runner, tmp_path):
    request = load_request("report_process", {"x": hp.uniform("x", 0, 1)})
    outcome = runner.run("exp", request, {"x": 0.5}, tmp_path / "t.log", tick=lambda: "ok",
                         interval_s=0.5)
    assert outcome.kind == "done", outcome
    pid, parent, session = (outcome.result[k] for k in ("pid", "ppid", "sid"))
    assert session == pid  # a session (and process group) of its own: killable as a whole
    assert parent not in (os.getpid(), 1)  # forked by the fork server, not by the worker


def test_a_launcher_hands_over_spares_forked_while_idle_and_skips_dead_ones(tmp_path):
    launcher = Launcher(WORKSPACE)
    try:
        launcher.keep_spares(2)
        wait_for(lambda: len(launcher.spares) == 2, timeout=30, message="two spares")
        first, second = launcher.spares
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not process_alive(first), timeout=10, message="the spare to die")

        launcher.set_idle(False)  # a trial runs: no fork competes with it for CPU
        runner = Runner(launcher)
        request = load_request("report_process", {"x": hp.uniform("x", 0, 1)})
        outcome = runner.run("exp", request, {"x": 0.5}, tmp_path / "t.log",
                             tick=lambda: "ok", interval_s=0.5)
        assert outcome.kind == "done", outcome
        assert outcome.result["pid"] == second  # the dead spare was skipped
        time.sleep(0.5)
        assert launcher.spares == []
        launcher.set_idle(True)
        wait_for(lambda: len(launcher.spares) == 2, timeout=30, message="the spares refilled")
        spares = launcher.spares
        assert second not in spares
        runner.close()
    finally:
        launcher.close()
    assert launcher.spares == []
    wait_for(lambda: not any(process_alive(pid) for pid in spares), timeout=10,
             message="the spares to be killed at close")


def test_runner_pool_tells_its_launcher_when_no_trial_runs():
    class Held:
        loaded_key = None

        def close(self):
            pass

    class Recorder:
        def __init__(self):
            self.idle, self.closed = [], False

        def set_idle(self, idle):
            self.idle.append(idle)

        def close(self):
            self.closed = True

    launcher = Recorder()
    pool = RunnerPool(Held, launcher=launcher)
    with pool.borrow("a"), pool.borrow("b"):
        pass
    assert launcher.idle == [False, False, False, True]  # idle once both trials ended
    pool.close()
    assert launcher.closed
