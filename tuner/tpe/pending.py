"""What the TPE does about trials that are queued or running: the pending policies.

A pending trial has a point but no loss yet. Ignoring it lets the next suggestion land
on the same spot (every free worker gets the same "most promising" point); the
policies below are the ways the literature and the libraries deal with that:

``ignore``
    Pending trials stay out of the model: every free worker is given a point from the
    same fit, and what keeps them apart is the randomness of the candidates and, by
    default, duplicate suppression (below). The default, because it did best on
    Branin and Hartmann6 in ``bench/quality.py`` with 8 trials in flight: in a few dozen
    evaluations the neighbourhood of the best points is worth several evaluations at
    once, and pushing pending points away from it (the other policies) cost more than
    it gained.
``hyperopt``
    What Hyperopt's ``tpe.suggest`` does: a pending trial counts as a failed one (loss
    ``+inf``), so it sits in the "bad" density ``g`` and pushes new points away.
``liar-best`` / ``liar-mean`` / ``liar-worst``
    Constant liar (Ginsbourger, Le Riche & Carraro 2010): a pending trial is given the
    best / mean / worst loss observed so far among finished trials where its group is
    active, and takes part in the split like a finished one. ``liar-worst`` is what
    Optuna's ``constant_liar=True`` amounts to (running trials join the "bad" set);
    ``liar-best`` piles the good set onto the pending points and is the worst of all.

Independently of the policy, **duplicate suppression** (``dedupe``) rejects any
candidate equal to, or within a small distance of, a finished or pending point, in
the space's own metric: categorical values and quantized values must be equal to
count as the same, a linear parameter compares ``|a - b| / (high - low)``, a log-scaled
one the relative distance ``|log a - log b|``. A candidate is a duplicate only when
the same parameters are active in both points and every one of them is that close.
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np

from tuner.tpe.space import Space


class Pending(str, Enum):
    """The pending policies (see the module docstring)."""

    HYPEROPT = "hyperopt"
    LIAR_BEST = "liar-best"
    LIAR_MEAN = "liar-mean"
    LIAR_WORST = "liar-worst"
    IGNORE = "ignore"


def lie(policy: Pending, losses: np.ndarray) -> float:
    """The loss a pending trial is given, from the finished losses it is compared with
    (``+inf`` for ``hyperopt``, or when nothing has finished yet)."""
    finite = losses[np.isfinite(losses)]
    if policy in (Pending.HYPEROPT, Pending.IGNORE) or finite.size == 0:
        return math.inf
    if policy is Pending.LIAR_BEST:
        return float(finite.min())
    if policy is Pending.LIAR_MEAN:
        return float(finite.mean())
    return float(finite.max())


DEFAULT_DEDUPE_DISTANCE = 1e-3
"""Two points closer than this in every active parameter are the same point: a
thousandth of a linear range, a 0.1 % relative difference on a log scale."""


class Deduper:
    """Says whether a point is (nearly) one already finished or pending.

    :param space: the space, for each parameter's metric.
    :param rows: (n, n_params) known points, internal coordinates, NaN = inactive.
    :param distance: the tolerance (see :data:`DEFAULT_DEDUPE_DISTANCE`).
    """

    def __init__(self, space: Space, rows: np.ndarray, distance: float) -> None:
        params = space.params
        self._space = space
        self._scale = np.array([1.0 if (p.categorical or p.log) else p.span for p in params],
                               dtype=float)
        exact = np.array([p.categorical or p.q is not None for p in params], dtype=bool)
        self._tol = np.where(exact, 1e-9, distance)
        self._rows = np.empty((0, len(params)))
        self._active = np.empty((0, len(params)), dtype=bool)
        self.add(rows)

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=float)  # (n, n_params)
        self._rows = np.vstack([self._rows, np.nan_to_num(rows / self._scale, nan=0.0)])
        self._active = np.vstack([self._active, ~np.isnan(rows)])

    def is_duplicate(self, x: np.ndarray) -> bool:
        if not len(self._rows):
            return False
        active = ~np.isnan(x)
        same_pattern = (self._active == active).all(axis=1)
        if not same_pattern.any():
            return False
        xs = np.nan_to_num(x / self._scale, nan=0.0)
        close = np.abs(self._rows[same_pattern] - xs) <= self._tol
        return bool(close.all(axis=1).any())
