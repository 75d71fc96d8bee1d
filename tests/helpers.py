"""Helpers shared by the tests: worker processes, experiments, waiting."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hyperopt import base, rand
from hyperopt.pyll import as_apply

from broker import space as space_codec
from broker import spec as spec_module
from broker.settings import Settings
from broker.store import TrialStore
from broker.trial_doc import new_trial_fields
from tuner.experiment import open_experiment

WORKSPACE = Path(__file__).parent / "workspace"
REPO = Path(__file__).parent.parent


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def wait_for(predicate: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.1,
             message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


class WorkerPool:
    """Real ``python -m workers`` processes, each its own process group."""

    def __init__(self, settings: Settings, store: TrialStore, *, machine_type: str,
                 prefix: str) -> None:
        self.settings = settings.replace(machine_type=machine_type)
        self.store = store
        self.prefix = prefix
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, count: int, *, wait: bool = True) -> list[str]:
        env = {**os.environ, **self.settings.to_env(), "PYTHONUNBUFFERED": "1"}
        log_dir = self.settings.state_dir / "logs" / "test-workers"
        log_dir.mkdir(parents=True, exist_ok=True)
        names = []
        for _ in range(count):
            name = f"{self.prefix}{len(self.processes)}-{secrets.token_hex(2)}@test"
            log_path = log_dir / f"{name}.log"
            with open(log_path, "ab") as log:
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "workers", "--name", name, "--workspace",
                     str(WORKSPACE), "--loglevel", "info"],
                    env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
            self.logs[name] = log_path
            names.append(name)
        if wait:
            wait_for(lambda: set(names) <= self.alive(), timeout=90,
                     message=f"workers {names} to report alive")
        return names

    def alive(self) -> set[str]:
        docs = self.store.alive_workers(self.settings.queue, now=time.time(),
                                        lease_s=self.settings.lease_s)
        return {d["_id"] for d in docs}

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def kill(self, name: str) -> None:
        """SIGKILL the worker's whole process group (the host is lost)."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()


def make_experiment(store: TrialStore, settings: Settings, fn: Callable[..., Any],
                    space: Any, n_trials: int, *, name: str | None = None,
                    seed: int = 0) -> tuple[dict[str, Any], list[int]]:
    """An experiment with a signed spec and ``n_trials`` queued (not sent) trials."""
    expr = space_codec.validate(space)
    spec = spec_module.build(fn, expr, settings.workspace, 0)
    text, signature = spec_module.seal(spec, settings.require_secret())
    experiment, _ = open_experiment(
        store, name or unique("exp"), spec_text=text, signature=signature, spec=spec,
        params=space_codec.describe(expr), queue=settings.queue, algo="rand",
        max_evals=n_trials)
    trials = base.Trials(exp_key=experiment["_id"])
    domain = base.Domain(fn, as_apply(space))
    tids = store.reserve_tids(experiment["_id"], n_trials)
    docs = rand.suggest(tids, domain, trials, seed)
    now = time.time()
    for doc in docs:
        doc.update(new_trial_fields(now, signature))
        doc["misc"]["cmd"] = None
    store.insert_trials([base.SONify(d) for d in docs])
    return experiment, tids
