"""Scale: one tuner feeding 64 worker slots, with and without a 10,000-trial history,
and two experiments sharing the slots with weights 1 and 3.

The 64 slots are real Celery workers (4 processes × 16 threads, each thread with its
own trial process); the objective sleeps 1 s. Reported per run: worker utilisation
(time inside the objective over slots × span), p50/p95 gap between a trial ending and
the next starting in the same slot, the tuner's CPU share (its process CPU time over
wall time), the tuner's memory; then the measured split of worker time.

Its last line: ``utilisation=<%> utilisation_at_10k=<%> p95_gap_ms=<ms> share_ratio=<x>``.

    python bench/scale.py [--trials 2000] [--algo tpe|hyperopt-tpe|rand]

On a 2-core machine the 64 trial processes, 4 worker processes, the MongoDB wire
server, Redis and the tuner all share two cores: the figures measure this machine's
CPU at least as much as the system; compare runs side by side, not with other machines.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
WORKSPACE = BENCH / "workspace"
sys.path[:0] = [str(BENCH), str(WORKSPACE)]

import bench_objective  # noqa: E402
import numpy as np  # noqa: E402
from _measure import gaps_ms, idle_breakdown, percentile, utilisation  # noqa: E402
from _services import bench_services  # noqa: E402
from hyperopt import base, hp, rand, tpe  # noqa: E402

from broker import space as space_codec  # noqa: E402
from broker import spec as spec_module  # noqa: E402
from broker.settings import Settings  # noqa: E402
from broker.store import TrialStore, connect  # noqa: E402
from broker.trial_doc import TrialState, new_trial_fields  # noqa: E402
from sdk import hyper_tune  # noqa: E402
from tuner.experiment import open_experiment  # noqa: E402
from tuner.local import LocalWorkers  # noqa: E402

SPACE = {"x": hp.uniform("x", -5, 5), "y": hp.loguniform("y", -3, 0)}
PROCESSES, THREADS = 4, 16
SLOTS = PROCESSES * THREADS


def algorithm(name: str) -> Any:
    if name == "tpe":
        try:
            from tuner import tpe as ours

            return ours.suggest
        except ImportError:
            return tpe.suggest
    return {"hyperopt-tpe": tpe.suggest, "rand": rand.suggest}[name]


def measured_run(settings: Settings, store: TrialStore, *, name: str, max_evals: int,
                 algo: Any, sleep_s: float, skip_tids: int = 0) -> dict[str, float]:
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = hyper_tune(bench_objective.objective, {**SPACE, "sleep": sleep_s}, algo=algo,
                        max_evals=max_evals, name=name, settings=settings,
                        rstate=np.random.default_rng(0))
    wall = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    docs = [d for d in store.find_trials(result["experiment_id"]) if d["tid"] >= skip_tids]
    intervals = [(d["result"]["worker"], d["result"]["t_start"], d["result"]["t_end"])
                 for d in docs if d["result"].get("status") == "ok"]
    gaps = gaps_ms(intervals)
    return {"trials": len(intervals), "wall_s": wall, "tuner_cpu_share": cpu / wall,
            "utilisation": utilisation(intervals, SLOTS), "p50_gap_ms": percentile(gaps, 50),
            "p95_gap_ms": percentile(gaps, 95),
            **{f"idle_{k}": v for k, v in idle_breakdown(intervals, SLOTS).items()},
            "tuner_max_rss_mb": cpu1.ru_maxrss / 1024}


def prefill(settings: Settings, store: TrialStore, name: str, n: int) -> None:
    """An experiment that already has ``n`` finished trials (as after a long run)."""
    expr = space_codec.validate({**SPACE, "sleep": 1.0})
    spec = spec_module.build(bench_objective.objective, expr, settings.workspace, 0)
    text, signature = spec_module.seal(spec, settings.require_secret())
    experiment, _ = open_experiment(store, name, spec_text=text, signature=signature,
                                    spec=spec, params=space_codec.describe(expr),
                                    queue=settings.queue, algo="prefill", max_evals=n)
    trials = base.Trials(exp_key=experiment["_id"])
    domain = base.Domain(bench_objective.objective, expr)
    tids = store.reserve_tids(experiment["_id"], n)
    docs = rand.suggest(tids, domain, trials, 0)
    now = time.time()
    for doc in docs:
        vals = {k: v[0] for k, v in doc["misc"]["vals"].items() if v}
        doc.update(new_trial_fields(now, signature))
        doc.update(state=base.JOB_STATE_DONE, started_at=now - 2, ended_at=now - 1,
                   result={"status": "ok", "loss": (vals["x"] - 1) ** 2 + np.log(vals["y"]) ** 2})
        doc["misc"]["cmd"] = None
    for start in range(0, n, 1000):
        store.insert_trials([base.SONify(d) for d in docs[start:start + 1000]])


def suggestion_overhead(settings: Settings, store: TrialStore, algo: Any,
                        histories: tuple[int, ...], n: int = 200
                        ) -> dict[int, tuple[float, float, float]]:
    """Per suggestion, in ms, for experiments with each of ``histories`` finished trials:
    the algorithm's own time; the tuner's bookkeeping around it (reserve an id, store and
    index the trial, re-read what is in flight); and the part of that bookkeeping spent
    on the tuner's own CPU (the rest is waiting for MongoDB). As with 64 workers, a
    trial finishes (its result written to MongoDB, untimed) once 64 are in flight.

    The experiments take turns, ``BLOCK`` suggestions each, so that all of them see the
    same machine: on a shared 2-core machine, runs made one after the other differ by
    ±20 %. (Blocks rather than single suggestions, so that the garbage one experiment's
    algorithm leaves is collected on its own account.)"""
    from tuner.session import open_session
    from tuner.trials import DistributedTrials

    expr = space_codec.validate({**SPACE, "sleep": 1.0})
    domain = base.Domain(bench_objective.objective, expr)
    sums = {h: [0.0, 0.0, 0.0, 0.0] for h in histories}  # algo, total, algo CPU, total CPU
    with open_session(settings) as session:
        experiments = {}
        for history in histories:
            name = f"overhead-{history}"
            prefill(settings, store, name, history)
            trials = DistributedTrials(name, settings=settings)
            trials.session = session
            trials.experiment = store.experiment_by_name(name)
            trials._exp_key = trials.experiment["_id"]
            trials.load_all()
            experiments[history] = trials
        for i in range(n * len(histories)):  # n per experiment, BLOCK at a time
            history = histories[i // BLOCK % len(histories)]
            trials = experiments[history]
            started, cpu_started = time.perf_counter(), time.process_time()
            ids = trials.new_trial_ids(1)
            t0, cpu0 = time.perf_counter(), time.process_time()
            docs = algo(ids, domain, trials, i)
            t1, cpu1 = time.perf_counter(), time.process_time()
            trials.insert_trial_docs(docs)
            trials.sync()
            trials.counts()
            row = sums[history]
            row[0] += t1 - t0
            row[1] += time.perf_counter() - started
            row[2] += cpu1 - cpu0
            row[3] += time.process_time() - cpu_started
            if trials.in_flight > SLOTS:
                finish_oldest(store, trials)
        for trials in experiments.values():
            trials.session = None
    return {h: (1000 * a / n, 1000 * (t - a) / n, 1000 * (tc - ac) / n)
            for h, (a, t, ac, tc) in sums.items()}


BLOCK = 25
"""Suggestions per turn in :func:`suggestion_overhead`."""


def finish_oldest(store: TrialStore, trials: Any) -> None:
    """Write a result for the oldest trial in flight, as its worker would."""
    tid = min(trials.unfinished(TrialState.QUEUED))
    now = time.time()
    store.trials.update_one({"exp_key": trials.experiment["_id"], "tid": tid}, {"$set": {
        "state": base.JOB_STATE_DONE, "result": {"status": "ok", "loss": float(tid % 7)},
        "started_at": now - 1, "ended_at": now, "refresh_time": now}})


def tune_shared(settings: Settings, name: str, weight: int, max_evals: int,
                algo_name: str) -> None:
    hyper_tune(bench_objective.objective, {**SPACE, "sleep": 1.0}, algo=algorithm(algo_name),
               max_evals=max_evals, name=name, weight=weight, settings=settings)


def shared_split(settings: Settings, store: TrialStore, trials: int, algo_name: str) -> float:
    """Two experiments, each tuned by its own process as two users' tuning commands
    would be, with weights 1 and 3; the split of worker time over the middle half."""
    names = {1: "share-light", 3: "share-heavy"}
    spawn = multiprocessing.get_context("spawn")
    tuners = [spawn.Process(target=tune_shared, args=(
        settings, names[weight], weight, trials * weight // 4, algo_name))
        for weight in (1, 3)]
    for tuner in tuners:
        tuner.start()
    for tuner in tuners:
        tuner.join()
        if tuner.exitcode != 0:
            raise SystemExit(f"a tuner of the shared run failed (exit {tuner.exitcode})")
    spans = {w: [(d["started_at"], d["ended_at"]) for d in store.find_trials(
        store.experiment_by_name(n)["_id"])] for w, n in names.items()}
    start = max(min(s for s, _ in spans[w]) for w in spans)
    end = min(max(e for _, e in spans[w]) for w in spans)
    lo, hi = start + (end - start) / 4, end - (end - start) / 4

    def busy(w: int) -> float:
        return sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in spans[w])

    return busy(3) / busy(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--algo", default="tpe", choices=["tpe", "hyperopt-tpe", "rand"])
    args = parser.parse_args()
    algo = algorithm(args.algo)
    print(f"algorithm: {getattr(algo, '__module__', '')}.{getattr(algo, '__name__', algo)}")

    with bench_services("scale") as (settings, _):  # the default heartbeat and lease
        store = connect(settings)
        try:
            overhead = suggestion_overhead(settings, store, algo, (100, 1000, args.history))
            for history, (algo_ms, overhead_ms, cpu_ms) in overhead.items():
                print(f"{history:>6} finished trials: algorithm {algo_ms:.1f} ms, tuner "
                      f"overhead {overhead_ms:.1f} ms per suggestion, of which "
                      f"{cpu_ms:.1f} ms the tuner's CPU and the rest waiting for MongoDB")
            (_, base_ms, base_cpu), (_, top_ms, top_cpu) = overhead[100], overhead[args.history]
            print(f"tuner overhead at {args.history} vs 100 finished trials: "
                  f"{top_ms / base_ms:.2f}x (its CPU: {top_cpu / base_cpu:.2f}x)")
            command = f"python -m workers --concurrency {THREADS} --loglevel warning"
            with LocalWorkers(settings, count=PROCESSES, command=command):
                while sum(w.get("slots", 1) for w in store.alive_workers(
                        settings.queue, now=time.time(), lease_s=settings.lease_s)) < SLOTS:
                    time.sleep(0.5)
                # every worker starts its fork server and trial processes once
                hyper_tune(bench_objective.objective, {**SPACE, "sleep": 0.5}, algo=rand.suggest,
                           max_evals=2 * SLOTS, name="warm-up", settings=settings)
                time.sleep(45)
                fresh = measured_run(settings, store, name="scale", max_evals=args.trials,
                                     algo=algo, sleep_s=1.0)
                print("fresh:", fmt(fresh))
                # the history is already there, as after a long run: written before the pause
                prefill(settings, store, "scale-history", args.history)
                time.sleep(45)
                history = measured_run(settings, store, name="scale-history",
                                       max_evals=args.history + args.trials, algo=algo,
                                       sleep_s=1.0, skip_tids=args.history)
                print(f"after {args.history} trials:", fmt(history))
                time.sleep(45)
                ratio = shared_split(settings, store, args.trials, args.algo)
                print(f"weights 1:3 over {SLOTS} slots: measured split 1:{ratio:.2f}")
        finally:
            store.close()
    print(f"utilisation={100 * fresh['utilisation']:.1f} "
          f"utilisation_at_10k={100 * history['utilisation']:.1f} "
          f"p95_gap_ms={fresh['p95_gap_ms']:.0f} share_ratio={ratio:.2f}")


def fmt(run: dict[str, float]) -> str:
    return (f"{run['trials']:.0f} trials in {run['wall_s']:.1f} s, utilisation "
            f"{100 * run['utilisation']:.1f} %, gap p50 {run['p50_gap_ms']:.0f} ms / p95 "
            f"{run['p95_gap_ms']:.0f} ms, tuner CPU {100 * run['tuner_cpu_share']:.0f} %, "
            f"tuner max RSS {run['tuner_max_rss_mb']:.0f} MB; idle slot time: "
            f"{100 * run['idle_start']:.1f} % before a slot's first trial, "
            f"{100 * run['idle_gaps']:.1f} % between trials, "
            f"{100 * run['idle_end']:.1f} % after its last")


if __name__ == "__main__":
    main()
