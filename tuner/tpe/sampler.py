"""Propose points: random start, then one TPE pick per group, pending-aware, in batches.

:class:`Proposer` is built once per call of the algorithm, from the space and the
history. Each :meth:`Proposer.next` walks the groups in order (a group after the
choices that activate it), draws candidates from the group's ``l``, keeps the best by
``log l - log g`` and, when duplicate suppression is on, backtracks to the next best
candidate (deepest group first) while the assembled point repeats a known one.
Every proposed point is then added to the models it touches as a pending trial, so
one call proposes a whole batch from a single fit.

**Exploring** ``hp.choice`` **branches.** TPE's density ratio judges an option by the
trials that took it; a wide, easy branch soon owns the "good" set and a narrow better
branch is starved before its own parameters are searched (the conditional trap of
``bench/quality.py``). Every option that owns parameters therefore keeps at least
``branch_floor * sqrt(n * p)`` of the ``n`` trials where its choice was active (``p``:
its prior probability), finished or pending: a forced-exploration schedule in the
manner of ε-greedy bandits (Auer, Cesa-Bianchi & Fischer 2002), whose share vanishes
as ``1/sqrt(n)``. A forced option is still searched by its own TPE.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import qmc

from tuner.tpe.history import History
from tuner.tpe.model import GroupModel, ModelOptions
from tuner.tpe.pending import DEFAULT_DEDUPE_DISTANCE, Deduper, Pending
from tuner.tpe.space import Space, quantile

MAX_BACKTRACKS = 64
"""Duplicate suppression tries at most this many alternative candidates per point."""

MAX_RANDOM_TRIES = 256
"""...and then at most this many prior draws, before declaring the space exhausted."""


@dataclass(frozen=True)
class Options:
    """Everything that can be configured per experiment (see ``tuner.tpe.configure``)."""

    pending: Pending = Pending.IGNORE
    dedupe: bool = True
    dedupe_distance: float = DEFAULT_DEDUPE_DISTANCE
    n_startup: int = 10
    n_candidates: int = 24
    branch_floor: float = 7.0
    model: ModelOptions = field(default_factory=ModelOptions)


class Proposer:
    """Proposes points one after the other from one shared fit of ``history``."""

    def __init__(self, space: Space, history: History, rng: np.random.Generator,
                 options: Options) -> None:
        self.space = space
        self.history = history
        self.rng = rng
        self.options = options
        self._rows = history.X
        self._dedupe = (Deduper(space, history.X, options.dedupe_distance)
                        if options.dedupe else None)
        self._models: dict[int, GroupModel] = {}
        self._tpe = int(history.ok.sum()) >= max(options.n_startup, 1)
        self._salt = _experiment_salt(history, rng)

    def next(self) -> np.ndarray | None:
        """The next point (internal coordinates, NaN = inactive), or None when duplicate
        suppression finds nothing new (the space is exhausted)."""
        x = self._tpe_point() if self._tpe else self._random_point()
        if x is not None:
            self._record(x)
        return x

    # -- random start ---------------------------------------------------------------------------

    def _random_point(self) -> np.ndarray | None:
        """The start: the next point of the experiment's scrambled Sobol sequence, then
        (if that one is taken) prior draws."""
        if not self.space.params:
            x = np.empty(0)
            return None if self._is_duplicate(x) else x
        u = self._sobol(len(self.space.params), len(self._rows), salt=0)
        x = self.space.canonical(self.space.from_unit(u))[0]
        if not self._is_duplicate(x):
            return x
        return self._prior_point()

    def _prior_point(self) -> np.ndarray | None:
        for _ in range(MAX_RANDOM_TRIES if self._dedupe else 1):
            x = self.space.canonical(self.space.sample_prior(self.rng, 1))[0]
            if not self._is_duplicate(x):
                return x
        return None

    def _sobol(self, dims: int, index: int, salt: int) -> np.ndarray:
        """Point ``index`` of a scrambled Sobol sequence that stays the same across the
        calls of one experiment (its scrambling is seeded by the experiment's first
        trial), so that successive calls continue one low-discrepancy design."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rng = np.random.default_rng([self._salt, salt])
            engine = qmc.Sobol(dims, scramble=True, seed=rng)
            if index:
                engine.fast_forward(index)
            return engine.random(1)

    # -- TPE ------------------------------------------------------------------------------------

    def _tpe_point(self) -> np.ndarray | None:
        groups = self.space.groups
        x = np.full(len(self.space.params), np.nan)
        picks: list[list] = []  # [group position, candidates, scores, used mask, chosen]
        start = 0
        for _ in range(MAX_BACKTRACKS + 1):
            for gi in range(start, len(groups)):
                group = groups[gi]
                if not self.space.active(group.conditions, self._choices(x)):
                    continue
                cands, scores = self._candidates(gi)
                chosen = int(np.argmax(scores))
                picks.append([gi, cands, scores, np.zeros(len(scores), bool), chosen])
                x[group.params] = cands[chosen]
            if not self._is_duplicate(x):
                return x
            start = self._backtrack(picks, x)
            if start is None:
                break
        return self._prior_point()

    def _backtrack(self, picks: list[list], x: np.ndarray) -> int | None:
        """Replace the deepest pick by its next best candidate; where to rebuild from."""
        groups = self.space.groups
        while picks:
            gi, cands, scores, used, chosen = picks[-1]
            used[chosen] = True
            if not used.all():
                nxt = int(np.argmax(np.where(used, -np.inf, scores)))
                picks[-1][4] = nxt
                for later in groups[gi + 1:]:
                    x[later.params] = np.nan
                x[groups[gi].params] = cands[nxt]
                return gi + 1
            x[groups[gi].params] = np.nan
            picks.pop()
        return None

    def _choices(self, x: np.ndarray) -> dict[str, int]:
        return {p.label: int(x[j]) for j, p in enumerate(self.space.params)
                if p.branching and not np.isnan(x[j])}

    def _candidates(self, gi: int) -> tuple[np.ndarray, np.ndarray]:
        group = self.space.groups[gi]
        model = self._model(gi)
        cands = model.good.sample(self.rng, self.options.n_candidates)
        if not model.good.n_components:
            cands[0] = self._explore(gi)
        for k in group.categorical:
            j = group.params[k]
            if self.space.params[j].branching:
                option = self._forced_option(j)
                if option is not None:
                    cands[:, k] = option
        full = np.full((len(cands), len(self.space.params)), np.nan)
        full[:, group.params] = cands
        cands = self.space.canonical(full, group.params)[:, group.params]
        if not model.good.n_components:  # no information: the space-filling point first
            return cands, -np.arange(len(cands), dtype=float)
        return cands, model.score(cands)

    def _explore(self, gi: int) -> np.ndarray:
        """A group with nothing better than its worst (a plateau, or only failures):
        ``l`` is the prior, and the ratio ``prior / g`` would favour the edges of the
        space, where ``g`` thins out; the next point of the group's own Sobol sequence
        covers the space evenly instead (Bergstra & Bengio 2012, quasi-random search)."""
        group = self.space.groups[gi]
        rows = self._rows[:, group.params]
        index = int((~np.isnan(rows).any(axis=1)).sum())
        u = self._sobol(len(group.params), index, salt=gi + 1)[0]
        return np.array([quantile(self.space.params[j], u[k:k + 1])[0]
                         for k, j in enumerate(group.params)])

    def _forced_option(self, j: int) -> int | None:
        """The branch of choice ``j`` furthest below its exploration floor, if any."""
        if self.options.branch_floor <= 0:
            return None
        param = self.space.params[j]
        assert param.probs is not None
        col = self._rows[:, j]
        col = col[~np.isnan(col)].astype(np.int64)
        counts = np.bincount(col, minlength=len(param.probs))[:len(param.probs)]
        branches = np.array(param.branches)
        p = param.probs[branches]
        deficit = self.options.branch_floor * np.sqrt(len(col) * p) - counts[branches]
        deficit[p <= 0] = -np.inf
        best = int(np.argmax(deficit))
        return int(branches[best]) if deficit[best] > 0 else None

    def _model(self, gi: int) -> GroupModel:
        model = self._models.get(gi)
        if model is None:
            group = self.space.groups[gi]
            rows = self._rows
            n_hist = len(self.history.X)
            mask = self.space.active_mask(group.conditions, rows)
            mask &= ~np.isnan(rows[:, group.params]).any(axis=1)
            n_extra = len(rows) - n_hist
            loss = np.concatenate([self.history.loss, np.full(n_extra, np.nan)])
            finished = np.concatenate([self.history.finished, np.zeros(n_extra, bool)])
            order = np.concatenate([self.history.tids,
                                    np.arange(n_extra) + self.history.tids.max(initial=0) + 1])
            model = GroupModel(group, [self.space.params[j] for j in group.params],
                               rows[mask][:, group.params], loss[mask], finished[mask],
                               order[mask], self.options.pending, self.options.model)
            self._models[gi] = model
        return model

    # -- bookkeeping ----------------------------------------------------------------------------

    def _is_duplicate(self, x: np.ndarray) -> bool:
        return self._dedupe is not None and self._dedupe.is_duplicate(x)

    def _record(self, x: np.ndarray) -> None:
        self._rows = np.vstack([self._rows, x[None, :]])
        if self._dedupe is not None:
            self._dedupe.add(x[None, :])
        for gi, model in self._models.items():
            group = self.space.groups[gi]
            if not np.isnan(x[group.params]).any():
                model.add_pending(x[group.params])


def _experiment_salt(history: History, rng: np.random.Generator) -> int:
    """A seed that is the same for every call of one experiment: a hash of its first
    trial's point (or a fresh draw when there is no trial yet)."""
    if not len(history.tids):
        return int(rng.integers(2**31))
    first = history.X[int(np.argmin(history.tids))]
    return zlib.crc32(np.nan_to_num(first, nan=-1.0).tobytes())
