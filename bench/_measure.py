"""Metrics shared by the benchmarks, so every system is measured alike.

An *interval* is one finished trial as ``(worker, t_start, t_end)``, with the
times in seconds since the epoch, taken inside the objective.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from itertools import pairwise

Interval = tuple[str, float, float]


def utilisation(intervals: Sequence[Interval], n_workers: int) -> float:
    """Fraction of worker time spent inside the objective.

    ``sum(t_end - t_start) / (n_workers * (max t_end - min t_start))``.
    """
    if not intervals:
        raise ValueError("utilisation of no intervals")
    busy = sum(t_end - t_start for _, t_start, t_end in intervals)
    span = max(t_end for *_, t_end in intervals) - min(t_start for _, t_start, _ in intervals)
    return busy / (n_workers * span)


def gaps_ms(intervals: Iterable[Interval]) -> list[float]:
    """Idle time between consecutive trials of the same worker, in ms.

    Per worker, trials sorted by start: ``next.t_start - prev.t_end``.
    """
    gaps: list[float] = []
    for runs in _by_worker(intervals).values():
        gaps.extend(1000.0 * (nxt[0] - prev[1]) for prev, nxt in pairwise(runs))
    return gaps


def percentile(values: Iterable[float], q: float) -> float:
    """``q``-th percentile (0–100), interpolating linearly like NumPy's default."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def idle_breakdown(intervals: Sequence[Interval], n_workers: int) -> dict[str, float]:
    """Where the idle worker time went, as fractions of ``n_workers * span``.

    ``start``: slots waiting for their first trial after the run's first start
    (a slot that never ran counts as idle from start to end); ``gaps``: between a
    slot's trials; ``end``: slots idle after their last trial until the run's last end.
    With ``utilisation`` they add up to 1.
    """
    by_worker = _by_worker(intervals)
    first = min(t_start for _, t_start, _ in intervals)
    last = max(t_end for *_, t_end in intervals)
    total = n_workers * (last - first)
    start = (n_workers - len(by_worker)) * (last - first)
    end = 0.0
    for runs in by_worker.values():
        start += runs[0][0] - first
        end += last - max(e for _, e in runs)
    gaps = sum(gaps_ms(intervals)) / 1000.0
    return {"start": start / total, "gaps": gaps / total, "end": end / total}


def _by_worker(intervals: Iterable[Interval]) -> dict[str, list[tuple[float, float]]]:
    """Each worker's ``(t_start, t_end)`` runs, sorted by start."""
    by_worker: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for worker, t_start, t_end in intervals:
        by_worker[worker].append((t_start, t_end))
    for runs in by_worker.values():
        runs.sort()
    return by_worker
