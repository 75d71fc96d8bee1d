"""Search quality and cost of our TPE against random, Hyperopt's TPE and Optuna's TPE.

One invocation prints, side by side:

* median and IQR of simple regret after 50 and 100 evaluations, over ``--seeds``
  seeds (40 by default), on Branin (2-D), Hartmann6 (6-D) and a conditional trap,
  with the number of seeds that found the trap's better branch;
* for random search; Hyperopt's TPE sequential and with 4 and 8 trials in flight; our
  TPE sequential and with 4 and 8 in flight under each pending policy; Optuna's TPE
  sequential and with ``constant_liar=True`` and 4 and 8 in flight;
* the cost of one suggestion of each TPE with 100, 1,000 and 5,000 finished trials.

**In flight** is simulated as a cluster runs it: ``k`` trials are started one after
the other (each suggestion sees the earlier ones as running), then whenever one
finishes (a random one of those running: results arrive in random order) its result
is recorded and one new suggestion is made while the ``k - 1`` others still run.
Regret after ``m`` evaluations is the best loss among the first ``m`` results to
arrive, minus the optimum.

**The conditional trap** is an ``hp.choice`` between an easy branch, a wide basin
whose minimum is 0.5 (``0.5 + 0.5 * |(u, v) - (0.3, 0.6)|^2`` on the unit square), and
a better branch that is flat at 1.0 except for a narrow basin
``min(1, (|(a, b) - c| / 0.078)^2)`` around a centre ``c`` drawn per seed: about 1 % of
that branch scores below 0.5, so random search finds it in roughly 38 % of seeds with
100 evaluations. A seed "found the better branch" when its best loss is below 0.5.

The last line::

    regret_ratio_vs_best_anchor=<x> regret_ratio_vs_hyperopt_async=<y> branch_found=<k>
    branch_found_best_anchor=<m> speedup_vs_hyperopt_tpe_5000=<z>

x: the worse of Branin and Hartmann6 of (our default TPE with 8 in flight) / (the best
anchor with 8 in flight: Optuna with a constant liar, Hyperopt, random), medians at 100
evaluations (a line above it gives the same against every anchor configuration,
sequential ones included); y: the same against Hyperopt's TPE with 8 in flight; k: trap
seeds where ours with 8 in flight found the better branch; m: the most any anchor
configuration found (random included); z: Hyperopt ``tpe.suggest`` time / ours, 5,000
finished trials.

    python bench/quality.py              # 40 seeds, everything (~10 min on 2 busy cores)
    python bench/quality.py --seeds 80   # what the reported figures used (~19 min)
    python bench/quality.py --quick      # 10 seeds, 8 in flight only, quick timings (~1 min)
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hyperopt import Trials, base, hp, rand, space_eval
from hyperopt import tpe as hyperopt_tpe

import tuner.tpe as our_tpe

N_EVALS = 100
CHECKPOINTS = (50, 100)
TIMING_SIZES = (100, 1000, 5000)
POLICIES = ("hyperopt", "liar-best", "liar-mean", "liar-worst")
"""Our pending policies shown without duplicate suppression; the default row ("ours") is
duplicate suppression: pending trials stay out of the model, no point is repeated."""

# -- problems ----------------------------------------------------------------------------------

_HARTMANN_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                        [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_HARTMANN_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886],
                               [2329, 4135, 8307, 3736, 1004, 9991],
                               [2348, 1451, 3522, 2883, 3047, 6650],
                               [4047, 8828, 8732, 5743, 1091, 381]])
_HARTMANN_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
TRAP_RADIUS = 0.078


@dataclass(frozen=True)
class Problem:
    """A test function: a Hyperopt space, the same space for Optuna, and the loss."""

    name: str
    space: Any
    optimum: float
    loss: Callable[[dict[str, Any], int], float]  # (point as space_eval gives it, seed)
    optuna_point: Callable[[Any], dict[str, Any]]  # an Optuna trial -> the same point


def _branin(p: dict[str, Any], seed: int) -> float:
    x1, x2 = p["x1"], p["x2"]
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 ** 2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def _hartmann6(p: dict[str, Any], seed: int) -> float:
    x = np.array([p[f"x{i}"] for i in range(6)])
    inner = (_HARTMANN_A * (x - _HARTMANN_P) ** 2).sum(axis=1)
    return float(-(_HARTMANN_ALPHA * np.exp(-inner)).sum())


def trap_centre(seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 7]).uniform(0.15, 0.85, size=2)


def _trap(p: dict[str, Any], seed: int) -> float:
    branch = p["branch"]
    if branch["name"] == "easy":
        return 0.5 + 0.5 * ((branch["u"] - 0.3) ** 2 + (branch["v"] - 0.6) ** 2)
    d = float(np.hypot(branch["a"] - trap_centre(seed)[0], branch["b"] - trap_centre(seed)[1]))
    return min(1.0, (d / TRAP_RADIUS) ** 2)


def _trap_optuna(trial: Any) -> dict[str, Any]:
    name = trial.suggest_categorical("branch", ["easy", "hard"])
    if name == "easy":
        return {"branch": {"name": "easy", "u": trial.suggest_float("u", 0, 1),
                           "v": trial.suggest_float("v", 0, 1)}}
    return {"branch": {"name": "hard", "a": trial.suggest_float("a", 0, 1),
                       "b": trial.suggest_float("b", 0, 1)}}


PROBLEMS = {
    "branin": Problem(
        "branin", {"x1": hp.uniform("x1", -5, 10), "x2": hp.uniform("x2", 0, 15)},
        0.397887357729738, _branin,
        lambda t: {"x1": t.suggest_float("x1", -5, 10), "x2": t.suggest_float("x2", 0, 15)}),
    "hartmann6": Problem(
        "hartmann6", {f"x{i}": hp.uniform(f"x{i}", 0, 1) for i in range(6)},
        -3.32236801141551, _hartmann6,
        lambda t: {f"x{i}": t.suggest_float(f"x{i}", 0, 1) for i in range(6)}),
    "trap": Problem(
        "trap", {"branch": hp.choice("branch", [
            {"name": "easy", "u": hp.uniform("u", 0, 1), "v": hp.uniform("v", 0, 1)},
            {"name": "hard", "a": hp.uniform("a", 0, 1), "b": hp.uniform("b", 0, 1)}])},
        0.0, _trap, _trap_optuna),
}


# -- methods ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """One row of the table: an algorithm and how many trials it keeps in flight."""

    label: str
    kind: str  # "hyperopt-api" (random, Hyperopt TPE, ours) or "optuna"
    k: int
    anchor: bool
    algo: Any = None  # a suggest function for "hyperopt-api"
    liar: bool = False  # Optuna's constant_liar


def methods(levels: tuple[int, ...], only: str | None = None) -> list[Method]:
    out = [Method("random", "hyperopt-api", 1, True, rand.suggest)]
    for k in (1, *levels):
        out.append(Method(f"hyperopt-tpe k={k}", "hyperopt-api", k, True, hyperopt_tpe.suggest))
    out.append(Method("ours k=1", "hyperopt-api", 1, False, our_tpe.suggest))
    for k in levels:
        out.append(Method(f"ours k={k}", "hyperopt-api", k, False, our_tpe.suggest))
        for policy in POLICIES:
            algo = our_tpe.configure(pending=policy, dedupe=False)
            out.append(Method(f"ours[{policy}] k={k}", "hyperopt-api", k, False, algo))
    out.append(Method("optuna-tpe k=1", "optuna", 1, True))
    for k in levels:
        out.append(Method(f"optuna-tpe liar k={k}", "optuna", k, True, liar=True))
    if only:
        out = [m for m in out if only in m.label]
    return out


def _run_hyperopt_api(method: Method, problem: Problem, seed: int) -> list[float]:
    """Losses in the order they arrived, simulating ``method.k`` trials in flight."""
    rng = np.random.default_rng([seed, 1])
    domain = base.Domain(lambda p: 0.0, problem.space)
    trials = Trials()
    running: list[dict[str, Any]] = []
    arrived: list[float] = []
    suggested = 0

    def submit() -> None:
        nonlocal suggested
        ids = trials.new_trial_ids(1)
        docs = method.algo(ids, domain, trials, int(rng.integers(2 ** 31 - 1)))
        trials.insert_trial_docs(docs)
        trials.refresh()
        running.extend(d for d in trials._dynamic_trials if d["tid"] in ids)
        suggested += 1

    while len(arrived) < N_EVALS:
        while suggested < N_EVALS and len(running) < method.k:
            submit()
        doc = running.pop(int(rng.integers(len(running))))
        point = {k: v[0] for k, v in doc["misc"]["vals"].items() if v}
        loss = problem.loss(space_eval(problem.space, point), seed)
        doc["state"] = base.JOB_STATE_DONE
        doc["result"] = {"status": base.STATUS_OK, "loss": loss}
        trials.refresh()
        arrived.append(loss)
    return arrived


def _run_optuna(method: Method, problem: Problem, seed: int) -> list[float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    rng = np.random.default_rng([seed, 1])
    kwargs = {"constant_liar": True} if method.liar else {}
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, **kwargs))
    running: list[tuple[Any, dict[str, Any]]] = []
    arrived: list[float] = []
    suggested = 0
    while len(arrived) < N_EVALS:
        while suggested < N_EVALS and len(running) < method.k:
            trial = study.ask()
            running.append((trial, problem.optuna_point(trial)))
            suggested += 1
        trial, point = running.pop(int(rng.integers(len(running))))
        loss = problem.loss(point, seed)
        study.tell(trial, loss)
        arrived.append(loss)
    return arrived


def run_one(task: tuple[Method, str, int]) -> tuple[str, str, int, list[float]]:
    method, problem_name, seed = task
    problem = PROBLEMS[problem_name]
    runner = _run_optuna if method.kind == "optuna" else _run_hyperopt_api
    arrived = runner(method, problem, seed)
    best = np.minimum.accumulate(np.asarray(arrived)) - problem.optimum
    return method.label, problem_name, seed, [float(best[c - 1]) for c in CHECKPOINTS]


# -- timing ---------------------------------------------------------------------------------------


def _finished_trials(n: int, seed: int) -> tuple[Trials, base.Domain]:
    problem = PROBLEMS["hartmann6"]
    domain = base.Domain(lambda p: 0.0, problem.space)
    trials = Trials()
    docs = rand.suggest(list(range(n)), domain, trials, seed)
    rng = np.random.default_rng(seed)
    for doc in docs:
        doc["state"] = base.JOB_STATE_DONE
        doc["result"] = {"status": base.STATUS_OK, "loss": float(rng.uniform(-3, 0))}
    trials.insert_trial_docs(docs)
    trials.refresh()
    return trials, domain


def time_hyperopt_api(n: int, repeats: int) -> dict[str, float]:
    """Median seconds per suggested point with ``n`` finished trials, for Hyperopt's TPE,
    ours, and ours asked for 8 points in one call; the three are timed in turn, round
    after round, so that a busy machine slows them alike. Ours is warm (its first,
    cache-filling call is not counted), as it is in a running experiment."""
    trials, domain = _finished_trials(n, seed=n)
    our_tpe.suggest([n], domain, trials, 0)
    calls = {"hyperopt tpe.suggest": (hyperopt_tpe.suggest, 1),
             "ours (default)": (our_tpe.suggest, 1),
             "ours, batch of 8 (per point)": (our_tpe.suggest, 8)}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(repeats):
        for name, (algo, batch) in calls.items():
            ids = list(range(n + 1, n + 1 + batch))
            started = time.perf_counter()
            algo(ids, domain, trials, r + 1)
            times[name].append((time.perf_counter() - started) / batch)
    return {name: float(np.median(t)) for name, t in times.items()}


def time_optuna(n: int, repeats: int, liar: bool) -> float:
    import optuna
    from optuna.distributions import FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rng = np.random.default_rng(n)
    dists = {f"x{i}": FloatDistribution(0, 1) for i in range(6)}
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, constant_liar=liar))
    study.add_trials([optuna.trial.create_trial(
        params={k: float(rng.uniform()) for k in dists}, distributions=dists,
        value=float(rng.uniform(-3, 0))) for _ in range(n)])
    problem = PROBLEMS["hartmann6"]
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        trial = study.ask()
        problem.optuna_point(trial)
        times.append(time.perf_counter() - started)
        study.tell(trial, float(rng.uniform(-3, 0)))
    return float(np.median(times[1:]))


def timings(quick: bool) -> dict[str, dict[int, float]]:
    repeats = {100: 20, 1000: 15, 5000: 9} if not quick else {100: 5, 1000: 3, 5000: 3}
    out: dict[str, dict[int, float]] = {
        "hyperopt tpe.suggest": {}, "ours (default)": {}, "ours, batch of 8 (per point)": {},
        "optuna TPE": {}, "optuna TPE constant_liar": {}}
    for n in TIMING_SIZES:
        for name, seconds in time_hyperopt_api(n, repeats[n]).items():
            out[name][n] = seconds
        out["optuna TPE"][n] = time_optuna(n, repeats[n], liar=False)
        out["optuna TPE constant_liar"][n] = time_optuna(n, repeats[n], liar=True)
    return out


# -- report --------------------------------------------------------------------------------------


def summarise(results: list[tuple[str, str, int, list[float]]], ms: list[Method],
              n_seeds: int) -> dict[tuple[str, str], dict[str, Any]]:
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for m in ms:
        for p in PROBLEMS:
            rows = np.array([r[3] for r in results if r[0] == m.label and r[1] == p])
            if not len(rows):
                continue
            entry: dict[str, Any] = {}
            for i, c in enumerate(CHECKPOINTS):
                q25, q50, q75 = np.percentile(rows[:, i], [25, 50, 75])
                entry[c] = (q50, q25, q75)
            entry["found"] = int((rows[:, -1] + PROBLEMS[p].optimum < 0.5).sum())
            entry["n"] = len(rows)
            table[(m.label, p)] = entry
    return table


def _cell(entry: dict[str, Any], c: int) -> str:
    q50, q25, q75 = entry[c]
    return f"{q50:7.4f} [{q25:.3f}-{q75:.3f}]"


def report(table: dict[tuple[str, str], dict[str, Any]], ms: list[Method],
           times: dict[str, dict[int, float]], n_seeds: int, levels: tuple[int, ...]) -> str:
    lines = [f"simple regret, median [IQR] over {n_seeds} seeds, after 50 / 100 evaluations",
             f"{'method':28s} | " + " | ".join(
                 f"{p:^47s}" for p in ("branin", "hartmann6")) + " | trap @100 (found)"]
    for m in ms:
        cells = []
        for p in ("branin", "hartmann6"):
            e = table.get((m.label, p))
            cells.append(f"{_cell(e, 50)} / {_cell(e, 100)}" if e else f"{'-':^47s}")
        e = table.get((m.label, "trap"))
        trap = f"{_cell(e, 100)} ({e['found']}/{e['n']})" if e else "-"
        lines.append(f"{m.label:28s} | " + " | ".join(cells) + f" | {trap}")
    lines.append("")
    lines.append("milliseconds per suggestion (median), n finished trials (Hartmann6 space)")
    lines.append(f"{'algorithm':28s} | " + " | ".join(f"n={n:>5d}" for n in TIMING_SIZES))
    for name, row in times.items():
        lines.append(f"{name:28s} | " + " | ".join(f"{row[n] * 1e3:7.1f}" for n in TIMING_SIZES))
    lines.append("")

    k = max(levels)
    anchors = [m.label for m in ms if m.anchor]
    anchors_k = [m.label for m in ms if m.anchor and m.k in (1, k) and (
        m.k == k or m.label == "random")]  # random: in flight makes no difference
    ours = f"ours k={k}"

    def ratio(mine: float, theirs: float) -> float:
        return mine / theirs if theirs > 0 else math.inf

    def worst_ratio(label: str, against: list[str]) -> float:
        return max(ratio(table[(label, p)][100][0],
                         min(table[(a, p)][100][0] for a in against))
                   for p in ("branin", "hartmann6"))

    lines.append(f"pending policies with {k} in flight, the worse of Branin and Hartmann6 of "
                 f"(policy / best anchor with {k} in flight), medians at 100:")
    policy_rows = [ours] + [f"ours[{p}] k={k}" for p in POLICIES]
    for label in sorted(policy_rows, key=lambda lb: worst_ratio(lb, anchors_k)):
        name = "dedupe (default)" if label == ours else label[5:-len(f" k={k}")].strip("[]")
        lines.append(f"  {name:18s} {worst_ratio(label, anchors_k):.3f}   trap found "
                     f"{table[(label, 'trap')]['found']}/{table[(label, 'trap')]['n']}")
    lines.append(f"ours with {k} in flight vs the best anchor in any configuration (sequential "
                 f"included): {worst_ratio(ours, anchors):.3f}")
    lines.append("")
    found = table[(ours, "trap")]["found"]
    found_anchor = max(table[(a, "trap")]["found"] for a in anchors)
    speedup = times["hyperopt tpe.suggest"][5000] / times["ours (default)"][5000]
    hyp = f"hyperopt-tpe k={k}"
    lines.append(
        f"regret_ratio_vs_best_anchor={worst_ratio(ours, anchors_k):.3f} "
        f"regret_ratio_vs_hyperopt_async={worst_ratio(ours, [hyp]):.3f} branch_found={found} "
        f"branch_found_best_anchor={found_anchor} speedup_vs_hyperopt_tpe_5000={speedup:.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="10 seeds, 8 in flight only, fewer timing repeats")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 40)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--only", default=None, help="run only methods whose label has this")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args()
    n_seeds = args.seeds or (10 if args.quick else 40)
    levels = (8,) if args.quick else (4, 8)
    ms = methods(levels, args.only)
    seeds = range(args.first_seed, args.first_seed + n_seeds)
    tasks = [(m, p, s) for s in seeds for p in PROBLEMS for m in ms]
    started = time.time()
    with multiprocessing.Pool(args.jobs) as pool:
        results = pool.map(run_one, tasks, chunksize=1)
    elapsed = time.time() - started
    times = ({} if args.no_timing else timings(args.quick))
    table = summarise(results, ms, n_seeds)
    if args.only or args.no_timing:
        for (label, p), e in sorted(table.items()):
            print(f"{label:32s} {p:10s} {_cell(e, 50)} / {_cell(e, 100)} found={e['found']}")
        print(f"({elapsed:.0f} s)")
        return
    print(report(table, ms, times, n_seeds, levels))
    print(f"(search runs took {elapsed:.0f} s with {args.jobs} processes)", file=sys.stderr)


if __name__ == "__main__":
    main()
