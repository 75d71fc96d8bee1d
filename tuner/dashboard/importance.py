"""Parameter importance: how much of the loss's variation each parameter explains alone.

The measure is the first-order (main-effect) term of a functional ANOVA, estimated the
simplest way that works for every kind of parameter:

1. Take the successful trials in which the parameter has a value (a parameter inside an
   ``hp.choice`` branch has one only when that branch was taken) and replace their
   losses by their ranks, so that one diverged run with a huge loss cannot dominate.
2. Group the trials by the parameter: by value when it takes at most ``max_bins``
   distinct values (``hp.choice`` and ``hp.pchoice`` indices, small integers), otherwise
   into ``max_bins`` quantile bins (equal counts; the same for linear and log scales).
3. The score is the share of the rank variance that lies *between* the groups, with the
   small-sample bias removed (epsilon squared, the bias-corrected correlation ratio)::

       score = (SS_between - (k - 1) * MS_within) / SS_total, clipped to [0, 1]

   0 means the groups do no better than chance; 1 that the parameter alone orders the
   losses. It is the variance of E[rank | parameter], which fANOVA calls the main effect.

Unlike a rank correlation it sees non-monotone effects (a learning rate with a sweet spot
in the middle); like any main effect it misses pure interactions. The Spearman
correlation is reported beside it (``rho``) for the direction of a monotone trend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_BINS = 10
"""Groups per parameter: few enough that each holds several trials, many enough to see a
sweet spot."""

MIN_TRIALS = 8
"""Below this many trials with a value, a parameter gets no score."""


@dataclass(frozen=True)
class Importance:
    """One parameter's score (see the module docstring) and the evidence behind it."""

    label: str
    score: float
    rho: float | None
    n: int
    groups: int

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "score": round(self.score, 4),
                "rho": None if self.rho is None else round(self.rho, 4),
                "n": self.n, "groups": self.groups}


def importance(
    losses: Sequence[float],
    values: dict[str, Sequence[float | None]],
    *,
    max_bins: int = MAX_BINS,
    min_trials: int = MIN_TRIALS,
) -> list[Importance]:
    """Scores of the parameters in ``values`` (label -> one value or ``None`` per loss),
    highest first. Parameters with fewer than ``min_trials`` values are left out."""
    loss_array = np.asarray(losses, dtype=float)
    scores = []
    for label, column in values.items():
        present = [i for i, v in enumerate(column) if v is not None and _finite(v)]
        if len(present) < min_trials:
            continue
        x = np.asarray([float(column[i]) for i in present])
        y = _ranks(loss_array[present])
        groups = _groups(x, max_bins)
        score = _epsilon_squared(y, groups)
        rho = _pearson(_ranks(x), y) if np.unique(x).size > 1 else None
        scores.append(Importance(label, score, rho, len(present), int(np.unique(groups).size)))
    return sorted(scores, key=lambda s: (-s.score, s.label))


def _finite(value: float) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), from 0."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=float)
    ranks[order] = np.arange(len(a), dtype=float)
    values, inverse = np.unique(a, return_inverse=True)
    if values.size < len(a):
        sums = np.bincount(inverse, weights=ranks)
        counts = np.bincount(inverse)
        ranks = (sums / counts)[inverse]
    return ranks


def _groups(x: np.ndarray, max_bins: int) -> np.ndarray:
    """A group id per value: the value itself when there are few distinct values,
    otherwise its quantile bin."""
    distinct, inverse = np.unique(x, return_inverse=True)
    if distinct.size <= max_bins:
        return inverse
    edges = np.quantile(x, np.linspace(0, 1, max_bins + 1)[1:-1])
    return np.searchsorted(edges, x, side="right")


def _epsilon_squared(y: np.ndarray, groups: np.ndarray) -> float:
    n = len(y)
    ids, inverse = np.unique(groups, return_inverse=True)
    k = ids.size
    ss_total = float(np.sum((y - y.mean()) ** 2))
    if k < 2 or n <= k or ss_total <= 0:
        return 0.0
    sums = np.bincount(inverse, weights=y)
    counts = np.bincount(inverse)
    ss_between = float(np.sum(counts * (sums / counts - y.mean()) ** 2))
    ms_within = (ss_total - ss_between) / (n - k)
    return min(1.0, max(0.0, (ss_between - (k - 1) * ms_within) / ss_total))


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        return None
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))
