"""Soak: 2,000 short trials on 4 workers while a chaos loop kills workers and Redis.

Every few seconds a random worker's whole process group is SIGKILLed (and a fresh
worker started in its place); Redis is restarted twice. At the end every trial id
0..N-1 must have exactly one successful result:

    lost        trials without a successful result
    duplicated  trial ids with more than one trial document or result
    reruns      objective runs beyond one per trial (killed mid-run, then run again)

The last line: ``lost=<n> duplicated=<n> trials=<n> kills=<n> trials_per_s=<x>``.

    python bench/soak.py [--trials 2000] [--workers 4] [--kill-every 3]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORKSPACE = BENCH / "workspace"
sys.path[:0] = [str(WORKSPACE)]

import bench_objective  # noqa: E402
from _services import bench_services  # noqa: E402
from hyperopt import hp, rand  # noqa: E402

from broker.services import LocalServices  # noqa: E402
from broker.settings import Settings  # noqa: E402
from broker.store import connect  # noqa: E402
from broker.trial_doc import TrialState, state_of  # noqa: E402
from sdk import hyper_tune  # noqa: E402
from tuner.local import child_env  # noqa: E402


class Workers:
    """``n`` worker processes, each its own process group; kill one, start another."""

    def __init__(self, settings: Settings, n: int, logs: Path) -> None:
        self.settings, self.logs = settings, logs
        self.processes: list[subprocess.Popen] = []
        self.started = 0
        for _ in range(n):
            self.start()

    def start(self) -> None:
        name = f"soak{self.started}@bench"
        self.started += 1
        log = open(self.logs / f"{name}.log", "ab")
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "workers", "--name", name, "--workspace", str(WORKSPACE),
             "--loglevel", "warning"],
            env=child_env(self.settings), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))

    def kill_one(self) -> None:
        victim = self.processes.pop(random.randrange(len(self.processes)))
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        self.start()

    def stop(self) -> None:
        for process in self.processes:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def chaos(workers: Workers, services: LocalServices, progress: callable, total: int,
          kill_every: float, done: threading.Event, counts: Counter) -> None:
    restarts_at = [total // 3, 2 * total // 3]
    while not done.wait(kill_every):
        workers.kill_one()
        counts["kills"] += 1
        if restarts_at and progress() >= restarts_at[0]:
            restarts_at.pop(0)
            services.down(["redis"])
            time.sleep(1.0)
            services.up()
            counts["redis_restarts"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--sleep", type=float, default=0.02, help="objective duration (s)")
    args = parser.parse_args()

    with bench_services("soak", heartbeat_s=0.5, lease_s=3.0,
                        parallelism=args.workers) as (settings, services):
        state = settings.state_dir
        store = connect(settings)
        (state / "logs").mkdir()
        workers = Workers(settings, args.workers, state / "logs")
        counts: Counter = Counter()
        done = threading.Event()
        name = "soak"

        def progress() -> int:
            experiment = store.experiment_by_name(name)
            return store.count_by_state(experiment["_id"])[TrialState.OK] if experiment else 0

        monkey = threading.Thread(target=chaos, args=(workers, services, progress, args.trials,
                                                      args.kill_every, done, counts))
        started = time.perf_counter()
        monkey.start()
        try:
            result = hyper_tune(bench_objective.objective,
                                {"x": hp.uniform("x", -5, 5), "y": hp.loguniform("y", -3, 0),
                                 "sleep": args.sleep},
                                algo=rand.suggest, max_evals=args.trials, name=name,
                                settings=settings)
        finally:
            done.set()
            monkey.join()
            workers.stop()
        wall = time.perf_counter() - started
        docs = store.find_trials(result["experiment_id"])
        per_tid = Counter(d["tid"] for d in docs)
        ok = {d["tid"] for d in docs if state_of(d) is TrialState.OK}
        lost = sum(1 for tid in range(args.trials) if tid not in ok)
        duplicated = sum(n - 1 for n in per_tid.values() if n > 1) + len(
            [tid for tid in per_tid if tid >= args.trials])
        reruns = sum(d.get("attempt", 1) - 1 for d in docs)
        store.close()
    print(f"trials={len(docs)} ok={len(ok)} attempts_lost_to_kills={reruns} "
          f"redis_restarts={counts['redis_restarts']} wall_s={wall:.1f}")
    print(f"lost={lost} duplicated={duplicated} trials={len(ok)} kills={counts['kills']} "
          f"trials_per_s={args.trials / wall:.1f}")


if __name__ == "__main__":
    main()
