"""The TPE model of one group: split the trials, fit ``l`` and ``g``, score candidates.

For the trials where a group is active, :class:`GroupModel` sorts the losses (pending
trials carry their policy's lie, failed ones ``+inf``), takes the best
``ceil(gamma * n)`` (at most ``gamma_cap``) as the "good" set and the rest as the
"bad" set, and fits a :class:`~tuner.tpe.kde.ParzenMixture` to each. Candidates are
drawn from ``l`` (the good mixture) and ranked by ``log l(x) - log g(x)``, which orders
them as expected improvement does (Bergstra et al. 2011).

Bandwidths are Optuna's: each kernel is as wide as the larger gap to its neighbours
along that dimension, clipped below by the "magic clip" ``span / (n + 2)`` (Bergstra et
al. 2011; Watanabe 2023 §3.4, who found its exponent to matter). Where we depart from
Optuna's defaults, it is for a measured reason (``bench/quality.py``):

* the good set's clip is ``span / (n + 2) ** 1.5`` (``magic_exponent``) and ``gamma``
  is 0.07: sharper kernels around fewer, better points converge faster on the
  continuous benchmarks (Branin, Hartmann6), sequentially and with 8 in flight;
* the split is *local*: a group nested under an ``hp.choice`` option is split among
  the trials that took that option, so a branch that is worse overall is still
  searched well whenever it is visited (Hyperopt and Optuna split globally, which
  leaves such a branch to the prior);
* trials tied at the worst observed loss are never "good": on a plateau there is
  nothing to exploit, and the sampler explores the group evenly instead
  (:mod:`tuner.tpe.sampler`).

The good set's kernels are weighted uniformly; the bad set's older trials fade as in
Optuna (``FADE_AFTER``); the prior is one more component of each mixture, with weight
``prior_weight`` (Watanabe 2023 §3.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tuner.tpe.kde import ParzenMixture
from tuner.tpe.pending import Pending, lie
from tuner.tpe.space import Group, Param

FADE_AFTER = 25
"""Optuna's ``default_weights``: the newest this many "bad" trials keep weight 1, older
ones fade linearly towards ``1/n``."""

MAX_CLIP_DIVISOR = 100.0
"""The magic clip never makes a kernel narrower than ``span / 100`` (Optuna's bound)."""


@dataclass(frozen=True)
class ModelOptions:
    """Knobs of the density model; the defaults are what ``bench/quality.py`` selected."""

    gamma: float = 0.07
    gamma_cap: int = 25
    prior_weight: float = 1.0
    magic_exponent: float = 1.5


class GroupModel:
    """``l`` and ``g`` of one group, fitted to the rows where it is active.

    :param params: the group's parameters.
    :param X: (n, len(params)) their internal coordinates in those rows.
    :param loss: (n,) losses; NaN for failed trials.
    :param finished: (n,) False for pending trials.
    :param order: (n,) trial ids (recency, for fading the bad set).

    After fitting, ``split_losses`` holds what each row counted as in the split (a
    pending row: its policy's lie) and ``is_good`` which rows are in ``l``.
    """

    def __init__(self, group: Group, params: list[Param], X: np.ndarray, loss: np.ndarray,
                 finished: np.ndarray, order: np.ndarray, policy: Pending,
                 options: ModelOptions) -> None:
        self.group = group
        self.params = params
        self.options = options
        self.policy = policy
        if policy is Pending.IGNORE:
            keep = finished
            X, loss, order, finished = X[keep], loss[keep], order[keep], finished[keep]
        ok = finished & ~np.isnan(loss)
        self.lie = lie(policy, loss[ok])
        y = np.where(finished, np.where(np.isnan(loss), np.inf, loss), self.lie)
        # Hyperopt counts pending trials in the split; a liar counts finished ones (Optuna)
        n_counted = len(y) if policy is Pending.HYPEROPT else int(finished.sum())
        n_good = min(math.ceil(options.gamma * n_counted), options.gamma_cap, len(y))
        good = np.lexsort((order, y))[:n_good]  # by loss; ties: the older trial first
        worst = loss[ok].max() if ok.any() else np.inf
        good = good[y[good] < worst] if ok.sum() > 1 else good[:0]
        self.is_good = np.zeros(len(y), dtype=bool)
        self.is_good[good] = True
        self.threshold = float(y[good].max()) if len(good) else -np.inf
        self.split_losses = y
        self.good = self._fit(X[self.is_good], order[self.is_good], good=True)
        self.bad = self._fit(X[~self.is_good], order[~self.is_good], good=False)

    def _fit(self, X: np.ndarray, order: np.ndarray, good: bool) -> ParzenMixture:
        g = self.group
        weights = np.ones(len(X)) if good else fade(order)
        exponent = self.options.magic_exponent if good else 1.0
        h = bandwidths(self.params, X, g.numeric, exponent)
        return ParzenMixture(self.params, g.numeric, g.categorical, X, weights, h,
                             prior_weight=self.options.prior_weight,
                             cat_smoothing=self.options.prior_weight / (len(X) + 1))

    def add_pending(self, x: np.ndarray) -> None:
        """Account for a point proposed earlier in the same batch, as the policy says,
        without refitting: one more kernel in ``l`` or ``g``, as wide as the median
        kernel already there."""
        if self.policy is Pending.IGNORE:
            return
        goes_good = self.lie < self.threshold or (
            self.policy is Pending.LIAR_BEST and math.isfinite(self.lie))
        target = self.good if goes_good else self.bad
        if target.n_components:
            h = np.median(target.bandwidths, axis=0)
        else:
            h = np.array([self.params[k].span for k in self.group.numeric]) / 2
        target.extend(x[None, :], np.ones(1), h[None, :])

    def score(self, X: np.ndarray) -> np.ndarray:
        """``log l(x) - log g(x)`` for candidate rows (group coordinates)."""
        return self.good.log_pdf(X) - self.bad.log_pdf(X)


def fade(order: np.ndarray) -> np.ndarray:
    """Optuna's weights for the bad set: the newest ``FADE_AFTER`` keep weight 1, older
    ones fade linearly (an old bad region may have become interesting again)."""
    n = len(order)
    if n <= FADE_AFTER:
        return np.ones(n)
    if np.all(order[1:] >= order[:-1]):  # rows come in trial order: nothing to sort
        age = np.arange(n)
    else:
        age = np.argsort(np.argsort(order, kind="stable"), kind="stable")  # 0 = oldest
    ramp = np.concatenate([np.linspace(1.0 / n, 1.0, n - FADE_AFTER), np.ones(FADE_AFTER)])
    return ramp[age]


def bandwidths(params: list[Param], X: np.ndarray, numeric: list[int],
               exponent: float = 1.0) -> np.ndarray:
    """Kernel widths (n, n_numeric) for the observations ``X`` of one set: the larger
    gap to either neighbour along each dimension (Optuna's heuristic; the support's ends
    count as neighbours only when there are fewer than two points), within
    ``[span / min(100, (n + 2) ** exponent), span]`` and never below half a
    quantization step."""
    n = len(X)
    if n == 0 or not numeric:
        return np.empty((n, len(numeric)))
    ps = [params[k] for k in numeric]
    span = np.array([p.span for p in ps])
    low = np.array([p.low if p.bounded else p.mu - p.span / 2 for p in ps])
    high = np.array([p.high if p.bounded else p.mu + p.span / 2 for p in ps])
    V = np.ascontiguousarray(X[:, numeric].T)  # one row per dimension: sorts fast
    order = np.argsort(V, axis=1)
    s = np.hstack([low[:, None], np.take_along_axis(V, order, axis=1), high[:, None]])
    widths = np.maximum(s[:, 1:-1] - s[:, :-2], s[:, 2:] - s[:, 1:-1])
    if n >= 2:
        widths[:, 0] = s[:, 2] - s[:, 1]
        widths[:, -1] = s[:, -2] - s[:, -3]
    out_t = np.empty_like(widths)
    np.put_along_axis(out_t, order, widths, axis=1)
    out = out_t.T
    floor = np.broadcast_to(span / min(MAX_CLIP_DIVISOR, (2.0 + n) ** exponent), out.shape)
    for d, p in enumerate(ps):
        if p.q is not None:
            floor = np.array(floor)  # writable copy, once
            floor[:, d] = np.maximum(floor[:, d], _half_step(p, V[d]))
    return np.clip(out, floor, span)


def _half_step(p: Param, values: np.ndarray) -> float | np.ndarray:
    """Half a quantization step in internal units: a kernel narrower than that would
    put its mass between two values the parameter can take."""
    if p.q is None:
        return 0.0
    if not p.log:
        return p.q / 2
    return 0.5 * np.log1p(p.q / np.maximum(np.exp(values), p.q))
