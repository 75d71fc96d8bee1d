"""A Hyperopt search space as the TPE sees it: parameters, their conditions, groups.

:func:`extract` walks a ``Domain``'s ``pyll`` graph once and returns a :class:`Space`:
one :class:`Param` per ``hyperopt_param`` node, in an *internal* coordinate where the
prior is simple (uniform or normal; log-scaled kinds are modelled in log space; an
``hp.choice``/``hp.pchoice``/``hp.randint`` is an index), plus the condition under which
each parameter is active (which options of which ``hp.choice`` lead to it).

Parameters that are active under exactly the same condition form a :class:`Group`; the
TPE models a group jointly (multivariate kernels) and groups independently of each
other, in an order where a group comes after the choices that switch it on (Optuna's
``group=True`` decomposition, read here from the graph instead of from past trials).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hyperopt import pyll
from hyperopt.pyll import Apply, Literal
from scipy.special import ndtri

from broker.errors import SpaceError

Conjunction = tuple[tuple[str, int], ...]
"""``((choice_label, option_index), ...)``: every listed choice takes the listed option."""

NUMERIC_KINDS = frozenset({
    "uniform", "quniform", "loguniform", "qloguniform",
    "normal", "qnormal", "lognormal", "qlognormal",
})
LOG_KINDS = frozenset({"loguniform", "qloguniform", "lognormal", "qlognormal"})
UNBOUNDED_KINDS = frozenset({"normal", "qnormal", "lognormal", "qlognormal"})

UNBOUNDED_SPAN_SIGMAS = 4.0
"""An unbounded (normal-prior) parameter is given a span of this many prior sigmas:
what ``high - low`` is for a bounded one, for bandwidths and distances."""


@dataclass(frozen=True)
class Param:
    """One hyperparameter, in internal coordinates.

    Numeric parameters: ``low``/``high`` bound the internal value (``-inf``/``inf`` for
    normal priors, whose ``mu``/``sigma`` are then set); ``log`` says the internal value
    is the log of the real one; ``q`` quantizes the real value. Categorical ones
    (``hp.choice``, ``hp.pchoice``, ``hp.randint``): the internal value is the option
    index, ``probs`` the prior, ``offset`` what is added to get ``randint``'s value.
    """

    label: str
    kind: str
    categorical: bool
    low: float = -math.inf
    high: float = math.inf
    mu: float = 0.0
    sigma: float = 1.0
    q: float | None = None
    log: bool = False
    probs: np.ndarray | None = None
    offset: int = 0
    branches: tuple[int, ...] = ()  # options of a choice that own parameters
    conditions: frozenset[Conjunction] = frozenset({()})

    @property
    def branching(self) -> bool:
        """Whether this is an ``hp.choice`` with an option that owns parameters."""
        return bool(self.branches)

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def span(self) -> float:
        """The width of the prior's support in internal units (for bandwidths)."""
        if self.categorical:
            return 1.0
        if self.bounded:
            return self.high - self.low
        return UNBOUNDED_SPAN_SIGMAS * self.sigma

    @property
    def n_options(self) -> int:
        assert self.probs is not None
        return len(self.probs)

    # -- real value <-> internal coordinate ------------------------------------------------

    def to_internal(self, value: Any) -> float:
        """The internal coordinate of a value as stored in ``misc.vals``."""
        if self.categorical:
            return float(int(value) - self.offset)
        x = float(value)
        if self.log:
            floor = self._log_floor()
            x = math.log(x) if x > floor else math.log(floor)
        return min(max(x, self.low), self.high)

    def _log_floor(self) -> float:
        """A quantized log value may round to 0: it is read as half a step (or less)."""
        if self.q is not None:
            lowest = math.exp(self.low) if math.isfinite(self.low) else self.q / 2
            return max(min(self.q / 2, lowest), 1e-300)
        return 1e-300

    def to_values(self, internal: np.ndarray) -> list[Any]:
        """Values as Hyperopt's own sampler would store them, from internal coordinates."""
        if self.categorical:
            return [int(i) + self.offset for i in np.asarray(internal, dtype=np.int64)]
        x = np.clip(np.asarray(internal, dtype=float), self.low, self.high)
        if self.log:
            x = np.exp(x)
        if self.q is not None:
            x = np.round(x / self.q) * self.q
        return [float(v) for v in x]


@dataclass
class Group:
    """Parameters active under one condition, modelled jointly."""

    conditions: frozenset[Conjunction]
    params: list[int]  # indices into Space.params
    numeric: list[int] = field(default_factory=list)  # positions within ``params``
    categorical: list[int] = field(default_factory=list)
    depends_on: frozenset[str] = frozenset()


@dataclass
class Space:
    """Every parameter of a domain, its groups in sampling order, and label lookups."""

    params: list[Param]
    groups: list[Group]
    index: dict[str, int]

    @property
    def labels(self) -> list[str]:
        return [p.label for p in self.params]

    def active(self, conditions: frozenset[Conjunction], choices: dict[str, int]) -> bool:
        """Whether a condition holds given the choices made so far."""
        return any(all(choices.get(lbl) == opt for lbl, opt in conj) for conj in conditions)

    def active_mask(self, conditions: frozenset[Conjunction], X: np.ndarray) -> np.ndarray:
        """Rows of ``X`` (internal coordinates, NaN when inactive) where a condition holds."""
        result = np.zeros(len(X), dtype=bool)
        for conj in conditions:
            ok = np.ones(len(X), dtype=bool)
            for lbl, opt in conj:
                ok &= X[:, self.index[lbl]] == opt
            result |= ok
        return result

    def canonical(self, X: np.ndarray, columns: list[int] | None = None) -> np.ndarray:
        """``X`` with quantized parameters moved to the value they will be stored as
        (internal -> value -> internal), so that scores and duplicate checks see the
        point that will actually be evaluated."""
        X = np.array(X, dtype=float, copy=True)
        for j in range(len(self.params)) if columns is None else columns:
            p = self.params[j]
            if p.q is None:
                continue
            col = X[..., j]
            ok = ~np.isnan(col)
            t = np.clip(col[ok], p.low, p.high)
            v = np.round((np.exp(t) if p.log else t) / p.q) * p.q
            if p.log:
                v = np.log(np.maximum(v, p._log_floor()))
            col[ok] = np.clip(v, p.low, p.high)
            X[..., j] = col
        return X

    def sample_prior(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` points from the prior, internal coordinates, NaN where inactive."""
        return self.from_unit(rng.uniform(size=(size, len(self.params))))

    def from_unit(self, U: np.ndarray) -> np.ndarray:
        """Points of the prior from numbers in (0, 1), one column per parameter (the
        prior's quantile function), NaN where a parameter is inactive: uniform numbers
        give prior draws, a low-discrepancy sequence a space-filling design."""
        U = np.atleast_2d(U)
        X = np.full(U.shape, np.nan)
        for group in self.groups:
            mask = self.active_mask(group.conditions, X)
            if mask.any():
                for j in group.params:
                    X[mask, j] = quantile(self.params[j], U[mask, j])
        return X


def quantile(param: Param, u: np.ndarray) -> np.ndarray:
    """The prior's quantile function of one parameter, internal coordinates."""
    u = np.clip(np.asarray(u, dtype=float), 1e-12, 1 - 1e-12)
    if param.categorical:
        assert param.probs is not None
        edges = np.cumsum(param.probs)
        idx = np.searchsorted(edges / edges[-1], u, side="right")
        idx = np.minimum(idx, len(param.probs) - 1)
        positive = np.flatnonzero(param.probs > 0)  # never an option of probability 0
        idx = positive[np.minimum(np.searchsorted(positive, idx), len(positive) - 1)]
        return idx.astype(float)
    if param.bounded:
        return param.low + u * (param.high - param.low)
    return param.mu + param.sigma * ndtri(u)


# -- extraction from the pyll graph ----------------------------------------------------------

_CACHE: weakref.WeakKeyDictionary[Any, Space] = weakref.WeakKeyDictionary()


def extract(domain: Any) -> Space:
    """The :class:`Space` of a Hyperopt ``Domain`` (cached per domain object).

    :raises SpaceError: a distribution's arguments depend on another hyperparameter, or
        a node is not one Hyperopt's ``hp.*`` functions build.
    """
    try:
        return _CACHE[domain]
    except (KeyError, TypeError):
        pass
    space = extract_expr(domain.expr)
    try:
        _CACHE[domain] = space
    except TypeError:  # not weak-referenceable: no caching
        pass
    return space


def extract_expr(expr: Any) -> Space:
    """The :class:`Space` of a ``pyll`` expression (what ``hp.*`` functions build)."""
    expr = pyll.as_apply(expr)
    found: dict[str, tuple[Apply, set[Conjunction]]] = {}
    branching: dict[str, set[int]] = {}
    _walk(expr, (), found, branching, set())
    params = []
    for label in sorted(found):
        node, conjunctions = found[label]
        params.append(_make_param(label, node, _simplify(conjunctions, found),
                                  tuple(sorted(branching.get(label, ())))))
    index = {p.label: i for i, p in enumerate(params)}
    return Space(params=params, groups=_groups(params, index), index=index)


def _walk(node: Any, cond: Conjunction, found: dict[str, tuple[Apply, set[Conjunction]]],
          branching: dict[str, set[int]], seen: set[tuple[int, Conjunction]]) -> None:
    if not isinstance(node, Apply):
        return
    key = (id(node), cond)
    if key in seen:
        return
    seen.add(key)
    if node.name == "switch":
        selector = node.pos_args[0]
        if isinstance(selector, Apply) and selector.name == "hyperopt_param":
            _walk(selector, cond, found, branching, seen)
            label = selector.arg["label"].obj
            for i, option in enumerate(node.pos_args[1:]):
                if _has_param(option):
                    branching.setdefault(label, set()).add(i)
                _walk(option, cond + ((label, i),), found, branching, seen)
            return
    if node.name == "hyperopt_param":
        label = node.arg["label"].obj
        dist = node.arg["obj"]
        if label in found and found[label][0] is not dist:
            raise SpaceError(f"label {label!r} is used by two different hyperparameters",
                             label=label)
        found.setdefault(label, (dist, set()))[1].add(cond)
        if _has_param(dist):
            raise SpaceError(f"the distribution of {label!r} depends on another "
                             "hyperparameter; tuner.tpe cannot model it (use hyperopt's "
                             "tpe.suggest)", label=label)
        return
    for child in node.inputs():
        _walk(child, cond, found, branching, seen)


def _has_param(node: Any) -> bool:
    return isinstance(node, Apply) and any(
        isinstance(n, Apply) and n.name == "hyperopt_param" for n in pyll.dfs(node))


def _simplify(conjunctions: set[Conjunction],
              found: dict[str, tuple[Apply, set[Conjunction]]]) -> frozenset[Conjunction]:
    """Drop redundant paths: a path that is a prefix-subset of another subsumes it, and
    a parameter present under every option of a choice does not depend on that choice."""
    conj = {tuple(sorted(set(c))) for c in conjunctions}
    changed = True
    while changed:
        changed = False
        conj = {c for c in conj if not any(o != c and set(o) <= set(c) for o in conj)}
        for c in list(conj):
            for i, (lbl, _) in enumerate(c):
                rest = c[:i] + c[i + 1:]
                n = _n_options(found[lbl][0]) if lbl in found else None
                if n is None:
                    continue
                siblings = {tuple(sorted(rest + ((lbl, k),))) for k in range(n)}
                if siblings <= conj:
                    conj = (conj - siblings) | {rest}
                    changed = True
                    break
            if changed:
                break
    return frozenset(conj)


def _n_options(dist: Apply) -> int | None:
    args = _args(dist)
    if dist.name == "categorical":
        return len(np.atleast_1d(args["p"]))
    if dist.name == "randint":
        low, high = (0, args["low"]) if args.get("high") is None else (args["low"], args["high"])
        return int(high) - int(low)
    return None


def _args(dist: Apply) -> dict[str, Any]:
    """The distribution's arguments by name, evaluated (they are constant here)."""
    names = {
        "uniform": ("low", "high"), "loguniform": ("low", "high"),
        "quniform": ("low", "high", "q"), "qloguniform": ("low", "high", "q"),
        "normal": ("mu", "sigma"), "lognormal": ("mu", "sigma"),
        "qnormal": ("mu", "sigma", "q"), "qlognormal": ("mu", "sigma", "q"),
        "randint": ("low", "high"), "categorical": ("p",),
    }.get(dist.name)
    if names is None:
        raise SpaceError(f"unknown distribution {dist.name!r}")
    values: dict[str, Any] = {}
    for key, arg in list(zip(names, dist.pos_args, strict=False)) + list(dist.named_args):
        if key in ("rng", "size"):
            continue
        values[key] = arg.obj if isinstance(arg, Literal) else pyll.rec_eval(arg)
    return values


def _make_param(label: str, dist: Apply, conditions: frozenset[Conjunction],
                branches: tuple[int, ...]) -> Param:
    name = dist.name
    args = _args(dist)
    if name == "categorical":
        p = np.asarray(args["p"], dtype=float).ravel()
        return Param(label, name, True, probs=p / p.sum(), branches=branches,
                     conditions=conditions)
    if name == "randint":
        low, high = (0, args["low"]) if args.get("high") is None else (args["low"], args["high"])
        n = int(high) - int(low)
        return Param(label, name, True, probs=np.full(n, 1.0 / n), offset=int(low),
                     branches=branches, conditions=conditions)
    if name not in NUMERIC_KINDS:
        raise SpaceError(f"unknown distribution {name!r} for {label!r}", label=label)
    q = float(args["q"]) if "q" in args else None
    log = name in LOG_KINDS
    if name in UNBOUNDED_KINDS:
        return Param(label, name, False, mu=float(args["mu"]), sigma=float(args["sigma"]),
                     q=q, log=log, conditions=conditions)
    return Param(label, name, False, low=float(args["low"]), high=float(args["high"]), q=q,
                 log=log, conditions=conditions)


def _groups(params: list[Param], index: dict[str, int]) -> list[Group]:
    by_condition: dict[frozenset[Conjunction], list[int]] = {}
    for i, p in enumerate(params):
        by_condition.setdefault(p.conditions, []).append(i)
    groups = []
    for conditions, members in by_condition.items():
        depends = frozenset(lbl for conj in conditions for lbl, _ in conj)
        groups.append(Group(
            conditions=conditions, params=members,
            numeric=[k for k, j in enumerate(members) if not params[j].categorical],
            categorical=[k for k, j in enumerate(members) if params[j].categorical],
            depends_on=depends,
        ))
    ordered: list[Group] = []
    placed: set[str] = set()
    pending = sorted(groups, key=lambda g: (max((len(c) for c in g.conditions), default=0),
                                            min(params[j].label for j in g.params)))
    while pending:
        for g in pending:
            if g.depends_on <= placed:
                ordered.append(g)
                placed.update(params[j].label for j in g.params)
                pending.remove(g)
                break
        else:  # a cycle cannot come from hp.* functions; keep a deterministic order anyway
            ordered.extend(pending)
            break
    return ordered
