"""Overhead of the distributed path: this system against Hyperopt's MongoTrials.

One invocation runs the same experiments through both, against the same local
MongoDB wire server (nx-27017), with 2 workers each, and prints side by side:

* throughput: trials/second with a no-op objective (200 trials);
* utilisation: fraction of worker time inside the objective, 0.2 s objective
  (40 trials; ideal 100 %), and the p50/p95 gap between a trial ending and the next
  one starting on the same worker.

MongoTrials needs a PyMongo 4 compatibility shim to run at all (see
``_mongotrials.py``). Its "defaults" are Hyperopt's own worker settings; "tuned" is
the fastest configuration we found (poll 0.1 s, no subprocess per job).

The last line: ``utilisation=<%> p50_gap_ms=<ms> throughput_ratio_vs_mongotrials=<x>``
(our TPE's utilisation (``tuner.tpe``, the default); throughput ratio against the *tuned*
MongoTrials). Rows marked "hyperopt tpe" run Hyperopt's own TPE through this system.

    python bench/overhead.py            # everything (about 8 minutes)
    python bench/overhead.py --quick    # skips MongoTrials with default settings
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
WORKSPACE = BENCH / "workspace"
sys.path[:0] = [str(BENCH), str(WORKSPACE)]

import bench_objective  # noqa: E402
import numpy as np  # noqa: E402
from _measure import gaps_ms, percentile, utilisation  # noqa: E402
from _mongotrials import run_mongotrials  # noqa: E402
from _services import bench_services  # noqa: E402
from hyperopt import hp, rand, tpe  # noqa: E402

from broker.settings import Settings  # noqa: E402
from broker.store import connect  # noqa: E402
from sdk import hyper_tune  # noqa: E402
from tuner import tpe as ours_tpe  # noqa: E402
from tuner.local import LocalWorkers  # noqa: E402

SPACE = {"x": hp.uniform("x", -5, 5), "y": hp.loguniform("y", -3, 0)}
N_WORKERS = 2


IDLE_BETWEEN_RUNS_S = 2.0
"""Workers idle between experiments, as they do in real use."""


def run_ours(settings: Settings, *, n_trials: int, sleep_s: float, algo: Any,
             name: str) -> dict[str, Any]:
    time.sleep(IDLE_BETWEEN_RUNS_S)
    started = time.perf_counter()
    result = hyper_tune(bench_objective.objective, {**SPACE, "sleep": sleep_s}, algo=algo,
                        max_evals=n_trials, name=name, settings=settings,
                        rstate=np.random.default_rng(0))
    wall = time.perf_counter() - started
    store = connect(settings)
    docs = store.find_trials(result["experiment_id"])
    store.close()
    intervals = [(d["result"]["worker"], d["result"]["t_start"], d["result"]["t_end"])
                 for d in docs if d["result"].get("status") == "ok"]
    return {"trials_per_s": n_trials / wall, "wall_s": wall, "n_results": len(intervals),
            "intervals": intervals}


def describe(run: dict[str, Any]) -> dict[str, float]:
    gaps = gaps_ms(run["intervals"])
    return {
        "trials_per_s": run["trials_per_s"],
        "utilisation": utilisation(run["intervals"], N_WORKERS),
        "p50_gap_ms": percentile(gaps, 50),
        "p95_gap_ms": percentile(gaps, 95),
        "n_results": run["n_results"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="skip MongoTrials with Hyperopt's default worker settings")
    parser.add_argument("--noop-trials", type=int, default=200)
    parser.add_argument("--sleep-trials", type=int, default=40)
    args = parser.parse_args()

    rows: dict[str, dict[str, float]] = {}
    with bench_services("bench") as (settings, _):
        state = settings.state_dir
        with LocalWorkers(settings, count=N_WORKERS):
            wait_for_workers(settings)
            for label, algo in (("rand", rand.suggest), ("tpe", ours_tpe.suggest),
                                ("hyperopt tpe", tpe.suggest)):
                rows[f"ours, {label}, no-op"] = describe(run_ours(
                    settings, n_trials=args.noop_trials, sleep_s=0.0, algo=algo,
                    name=f"noop-{label.replace(' ', '-')}"))
                rows[f"ours, {label}, 0.2 s"] = describe(run_ours(
                    settings, n_trials=args.sleep_trials, sleep_s=0.2, algo=algo,
                    name=f"sleep-{label.replace(' ', '-')}"))
            strict = settings.replace(queue_ahead=0)
            rows["ours, tpe, 0.2 s, queue_ahead=0"] = describe(run_ours(
                strict, n_trials=args.sleep_trials, sleep_s=0.2, algo=ours_tpe.suggest,
                name="sleep-tpe-strict"))
        configs = [("tuned", True)] + ([] if args.quick else [("defaults", False)])
        with plain_nx(state / "nx") as mongo:
            for label, tuned in configs:
                rows[f"MongoTrials {label}, rand, no-op"] = describe(run_mongotrials(
                    mongo, n_trials=args.noop_trials, sleep_s=0.0, tuned=tuned,
                    algo="rand", workdir=state / f"mt-{label}-noop", seed=0))
                rows[f"MongoTrials {label}, tpe, 0.2 s"] = describe(run_mongotrials(
                    mongo, n_trials=args.sleep_trials, sleep_s=0.2, tuned=tuned,
                    algo="tpe", workdir=state / f"mt-{label}-sleep", seed=0))
    report(rows)


@contextmanager
def plain_nx(data_dir: Path) -> Iterator[str]:
    """nx-27017 without our password gate, for MongoTrials: Hyperopt authenticates with
    PyMongo 3 calls that PyMongo 4 removed, so it gets the same server, unauthenticated."""
    data_dir.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-c", "from nx_27017.nx_27017 import main; main()", "--data-dir",
         str(data_dir), "--host", "127.0.0.1", "--port", str(port), "--log-file",
         str(data_dir / "log"), "--pid-file", str(data_dir / "pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.monotonic() > deadline:
                raise SystemExit("nx-27017 did not start")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


def wait_for_workers(settings: Settings, timeout_s: float = 60.0) -> None:
    store = connect(settings)
    deadline = time.monotonic() + timeout_s
    while len(store.alive_workers(settings.queue, now=time.time(),
                                  lease_s=settings.lease_s)) < N_WORKERS:
        if time.monotonic() > deadline:
            raise SystemExit("workers did not start")
        time.sleep(0.2)
    store.close()


def report(rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{'run':<36} {'trials/s':>9} {'util %':>7} {'gap p50 ms':>11} "
          f"{'gap p95 ms':>11} {'results':>8}")
    for name, row in rows.items():
        print(f"{name:<36} {row['trials_per_s']:>9.2f} {100 * row['utilisation']:>7.1f} "
              f"{row['p50_gap_ms']:>11.1f} {row['p95_gap_ms']:>11.1f} {row['n_results']:>8.0f}")
    ours_noop = rows["ours, rand, no-op"]["trials_per_s"]
    print()
    for label in ("tuned", "defaults"):
        key = f"MongoTrials {label}, rand, no-op"
        if key in rows:
            print(f"throughput ratio vs MongoTrials {label} (rand, no-op): "
                  f"{ours_noop / rows[key]['trials_per_s']:.1f}x")
    ours = rows["ours, tpe, 0.2 s"]
    ratio = ours_noop / rows["MongoTrials tuned, rand, no-op"]["trials_per_s"]
    print(f"utilisation={100 * ours['utilisation']:.1f} p50_gap_ms={ours['p50_gap_ms']:.1f} "
          f"throughput_ratio_vs_mongotrials={ratio:.1f}")


if __name__ == "__main__":
    main()
