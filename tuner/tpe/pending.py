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

    Points are kept per pattern of active parameters, sorted on one parameter, so a
    lookup reads only the few points within tolerance on that parameter instead of
    the whole history (it runs once per candidate, and with many trials in flight a
    suggestion may try dozens of candidates).

    :param space: the space, for each parameter's metric.
    :param rows: (n, n_params) known points, internal coordinates, NaN = inactive.
    :param distance: the tolerance (see :data:`DEFAULT_DEDUPE_DISTANCE`).
    """

    def __init__(self, space: Space, rows: np.ndarray, distance: float) -> None:
        params = space.params
        self._scale = np.array([1.0 if (p.categorical or p.log) else p.span for p in params],
                               dtype=float)
        self._exact = np.array([p.categorical or p.q is not None for p in params], dtype=bool)
        self._tol = np.where(self._exact, 1e-9, distance)
        self._buckets: dict[bytes, _Bucket] = {}
        self.add(rows)

    def add(self, rows: np.ndarray) -> None:
        rows = np.atleast_2d(np.asarray(rows, dtype=float))  # (n, n_params)
        if not rows.size:
            return
        active = ~np.isnan(rows)
        scaled = np.nan_to_num(rows / self._scale, nan=0.0)
        packed = np.packbits(active, axis=1)
        codes = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
        _, first, which = np.unique(codes, return_index=True, return_inverse=True)
        for i, row in enumerate(first):
            pattern = active[row]
            key = pattern.tobytes()
            if key not in self._buckets:
                self._buckets[key] = _Bucket(self._sort_column(pattern), self._tol)
            self._buckets[key].add(scaled[which.ravel() == i])

    def is_duplicate(self, x: np.ndarray) -> bool:
        bucket = self._buckets.get((~np.isnan(x)).tobytes())
        return bucket is not None and bucket.contains(np.nan_to_num(x / self._scale, nan=0.0))

    def _sort_column(self, pattern: np.ndarray) -> int | None:
        """An active parameter to sort on, continuous ones first (they spread most)."""
        for wanted in (pattern & ~self._exact, pattern):
            if wanted.any():
                return int(np.argmax(wanted))
        return None


class _Bucket:
    """The known points of one pattern of active parameters: a sorted block plus the
    points added since it was sorted (merged once there are enough of them)."""

    MERGE_AT = 256

    def __init__(self, column: int | None, tol: np.ndarray) -> None:
        self.column, self.tol = column, tol
        self.sorted = np.empty((0, len(tol)))
        self.recent: list[np.ndarray] = []

    def add(self, rows: np.ndarray) -> None:
        if len(rows) < self.MERGE_AT and len(self.sorted):
            self.recent.extend(rows)
            if len(self.recent) < self.MERGE_AT:
                return
            rows, self.recent = np.array(self.recent), []
        merged = np.vstack([self.sorted, rows])
        if self.column is not None:
            merged = merged[np.argsort(merged[:, self.column], kind="stable")]
        self.sorted = merged

    def contains(self, x: np.ndarray) -> bool:
        if self.column is None:  # no active parameter: every such point is the same
            return bool(len(self.sorted) or self.recent)
        keys, value, tol = self.sorted[:, self.column], x[self.column], self.tol[self.column]
        lo = int(np.searchsorted(keys, value - tol, side="left"))
        hi = int(np.searchsorted(keys, value + tol, side="right"))
        near = [self.sorted[lo:hi]] + ([np.array(self.recent)] if self.recent else [])
        return any(bool((np.abs(block - x) <= self.tol).all(axis=1).any()) for block in near
                   if len(block))
