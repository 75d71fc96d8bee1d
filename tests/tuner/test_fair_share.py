"""Sharing a worker pool between experiments: the allocation, then real experiments."""

from __future__ import annotations

import threading
import time

import objectives
from hyperopt import hp, rand

from sdk import hyper_tune
from tests.helpers import unique, wait_for
from tuner.fair_share import Claim, allocate


def test_allocation_follows_weights_demand_and_who_is_least_served():
    a, b = Claim("a", 1, 100, 0.0), Claim("b", 3, 100, 0.0)
    assert allocate([a, b], 4) == {"a": 1, "b": 3}
    assert allocate([a, b], 64) == {"a": 16, "b": 48}
    # b can only use 1: a takes the rest
    assert allocate([a, Claim("b", 3, 1, 0.0)], 4) == {"a": 3, "b": 1}
    # three equal experiments on two workers: the least served get the seats
    three = [Claim("x", 1, 9, 10.0), Claim("y", 1, 9, 2.0), Claim("z", 1, 9, 5.0)]
    assert allocate(three, 2) == {"x": 0, "y": 1, "z": 1}
    assert allocate([Claim("idle", 1, 0, 0.0), a], 4) == {"idle": 0, "a": 4}
    assert allocate([], 4) == {}


def test_weights_split_a_shared_pool_and_a_newcomer_gets_a_worker(settings, store,
                                                                   own_pool, tmp_path):
    pool = own_pool("share", count=4)
    trial_s = 1.0
    names = {"light": unique("light"), "heavy": unique("heavy"), "late": unique("late")}
    results: dict[str, dict] = {}

    def tune(key: str, weight: float, max_evals: int) -> threading.Thread:
        def run() -> None:
            results[key] = hyper_tune(
                objectives.quadratic, {"x": hp.uniform("x", -5, 5), "sleep": trial_s},
                algo=rand.suggest, max_evals=max_evals, name=names[key], weight=weight,
                settings=pool.settings)
        thread = threading.Thread(target=run)
        thread.start()
        return thread

    # a long enough middle (~18 worker-seconds for light) that one trial more or less
    # on a loaded machine moves the ratio by ~5 %, not by the whole tolerance
    threads = [tune("light", 1, 30), tune("heavy", 3, 90)]
    heavy = wait_for(lambda: store.experiment_by_name(names["heavy"]), message="heavy")
    wait_for(lambda: store.count_by_state(heavy["_id"]) and sum(
        n for s, n in store.count_by_state(heavy["_id"]).items() if s.is_finished) >= 60,
        timeout=180, message="two thirds of the heavy experiment")
    joined = time.time()
    threads.append(tune("late", 1, 2))
    late = wait_for(lambda: store.experiment_by_name(names["late"]), message="late")
    first = wait_for(lambda: next((d for d in store.find_trials(late["_id"])
                                   if d.get("started_at")), None), timeout=60,
                     message="the late experiment's first trial to start")
    for thread in threads:
        thread.join(timeout=180)
    assert not any(t.is_alive() for t in threads)
    assert first["started_at"] - joined < trial_s + 3  # within one trial duration (+ sweep)

    # worker time while only light and heavy ran, after both settled in (two trials)
    spans = {key: [(d["started_at"], d["ended_at"]) for d in store.find_trials(
        results[key]["experiment_id"])] for key in ("light", "heavy")}
    lo = max(min(s for s, _ in spans[k]) for k in spans) + 2 * trial_s
    hi = joined - trial_s / 2
    assert hi - lo > 8 * trial_s

    def busy(key: str) -> float:
        return sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in spans[key])

    ratio = busy("heavy") / busy("light")
    assert 3 * 0.9 <= ratio <= 3 * 1.1, (ratio, {k: refill_gaps(store, results[k])
                                                 for k in ("light", "heavy")})


def refill_gaps(store, result: dict) -> dict[str, float]:
    """How long the experiment's tuner took to send a trial after one of its trials
    ended (mean, max): a split off 1:3 with one slow tuner shows here."""
    docs = store.find_trials(result["experiment_id"])
    queued = sorted(d["queued_at"] for d in docs)
    gaps = [next(q for q in queued if q >= d["ended_at"]) - d["ended_at"]
            for d in docs if any(q >= d["ended_at"] for q in queued)]
    return {"mean": sum(gaps) / max(1, len(gaps)), "max": max(gaps, default=0.0)}
