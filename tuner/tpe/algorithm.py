"""The ``suggest`` callable: Hyperopt's algorithm interface on top of :mod:`.sampler`.

``Suggest(options)(new_ids, domain, trials, seed)`` reads the space (once per domain)
and the trials (finished rows cached), proposes one point per new id from a single
shared fit, and returns Hyperopt trial documents: ``misc.idxs/vals`` hold ``[value]``
for active parameters and ``[]`` for inactive ones, an ``hp.choice`` its option index,
a ``randint`` an int, a quantized parameter its quantized value, exactly as
``hyperopt.rand.suggest`` writes them. Fewer documents than ids (possibly none) mean
duplicate suppression found no new point: the space is exhausted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from enum import Enum
from typing import Any

import numpy as np

from tuner.tpe import history as history_module
from tuner.tpe.model import ModelOptions
from tuner.tpe.pending import Pending
from tuner.tpe.sampler import Options, Proposer
from tuner.tpe.space import Space, extract


class Suggest:
    """A Hyperopt ``suggest`` function with its options bound.

    Call it as Hyperopt calls any algorithm; ``supports_batch`` tells the suggestion
    loop that one call may ask for several ids (they share one model fit and are
    pending-aware of each other). Deterministic for a given seed and trials. Calls on
    the same ``Trials`` object must not run concurrently (the trial reader's cache is
    per ``Trials`` object and not locked); the suggestion loop calls from one thread.

    :raises SpaceError: the space has a distribution whose arguments depend on another
        hyperparameter (``hyperopt.tpe.suggest`` handles those).
    """

    supports_batch = True

    def __init__(self, options: Options, name: str = "suggest") -> None:
        self.options = options
        self.__name__ = name
        self.__qualname__ = name
        self.__module__ = "tuner.tpe"
        self.__doc__ = f"TPE for Hyperopt spaces ({describe(options)})."

    def __call__(self, new_ids: Sequence[int], domain: Any, trials: Any,
                 seed: int) -> list[dict[str, Any]]:
        space = extract(domain)
        history = history_module.read(trials, space)
        proposer = Proposer(space, history, np.random.default_rng(seed), self.options)
        tids, miscs = [], []
        for tid in new_ids:
            x = proposer.next()
            if x is None:
                break
            tids.append(tid)
            miscs.append(_misc(tid, x, space, domain))
        return trials.new_trial_docs(tids, [None] * len(tids),
                                     [domain.new_result() for _ in tids], miscs)

    def __repr__(self) -> str:
        return f"tuner.tpe.{self.__name__}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Suggest, (self.options, self.__name__))


def _misc(tid: int, x: np.ndarray, space: Space, domain: Any) -> dict[str, Any]:
    idxs: dict[str, list[int]] = {}
    vals: dict[str, list[Any]] = {}
    for j, param in enumerate(space.params):
        if np.isnan(x[j]):
            idxs[param.label], vals[param.label] = [], []
        else:
            idxs[param.label] = [tid]
            vals[param.label] = param.to_values(x[j:j + 1])
    return {"tid": tid, "cmd": domain.cmd, "workdir": domain.workdir, "idxs": idxs,
            "vals": vals}


_MODEL_FIELDS = {f.name for f in fields(ModelOptions)}
_TOP_FIELDS = {f.name for f in fields(Options)} - {"model"}


def make_options(**kwargs: Any) -> Options:
    """:class:`Options` from keyword arguments (model ones included), validated.

    :raises ValueError: an unknown option, policy or out-of-range value.
    """
    unknown = set(kwargs) - _MODEL_FIELDS - _TOP_FIELDS
    if unknown:
        raise ValueError(f"unknown TPE option(s): {', '.join(sorted(unknown))}")
    top = {k: v for k, v in kwargs.items() if k in _TOP_FIELDS}
    if "pending" in top:
        try:
            top["pending"] = Pending(top["pending"])
        except ValueError:
            choices = ", ".join(p.value for p in Pending)
            raise ValueError(f"pending must be one of {choices}; got {top['pending']!r}") from None
    model = replace(ModelOptions(), **{k: v for k, v in kwargs.items() if k in _MODEL_FIELDS})
    options = replace(Options(), model=model, **top)
    _check(options)
    return options


def _check(options: Options) -> None:
    m = options.model
    if options.n_candidates < 1 or options.n_startup < 0:
        raise ValueError("n_candidates must be >= 1 and n_startup >= 0")
    if not 0 < m.gamma <= 1 or m.gamma_cap < 1:
        raise ValueError("gamma must be in (0, 1] and gamma_cap >= 1")
    if m.prior_weight <= 0 or m.magic_exponent <= 0 or options.dedupe_distance < 0:
        raise ValueError("prior_weight and magic_exponent must be > 0, dedupe_distance >= 0")
    if options.branch_floor < 0:
        raise ValueError("branch_floor must be >= 0")


def describe(options: Options) -> str:
    """The options that differ from the defaults, as ``key=value`` text."""
    default = Options()
    parts = [f"{f.name}={_text(getattr(options, f.name))}" for f in fields(Options)
             if f.name != "model" and getattr(options, f.name) != getattr(default, f.name)]
    parts += [f"{f.name}={_text(getattr(options.model, f.name))}" for f in fields(ModelOptions)
              if getattr(options.model, f.name) != getattr(default.model, f.name)]
    return ", ".join(parts) or "defaults"


def _text(value: Any) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)


def configure(**kwargs: Any) -> Suggest:
    """A ``suggest`` with per-experiment options, e.g. ``configure(pending="liar-mean")``.

    Options: ``pending`` (a :class:`~tuner.tpe.pending.Pending` name), ``dedupe``,
    ``dedupe_distance``, ``n_startup``, ``n_candidates``, ``branch_floor``, and the
    model's ``gamma``, ``gamma_cap``, ``prior_weight``, ``min_bandwidth``, ``bandwidth``,
    ``weighting``. The result is a plain callable with Hyperopt's ``suggest`` signature.
    """
    options = make_options(**kwargs)
    text = describe(options)
    name = "suggest" if text == "defaults" else f"suggest[{text}]"
    return Suggest(options, name)
