"""Our TPE for Hyperopt spaces: a drop-in, pending-aware ``suggest``.

Use it wherever a Hyperopt algorithm goes::

    import tuner.tpe
    hyper_tune(train_model, space, algo=tuner.tpe.suggest)          # the default policy
    fmin(fn, space, algo=tuner.tpe.configure(pending="liar-mean"), ...)

It reads the same spaces as ``hyperopt.tpe.suggest`` (every ``hp.*`` of Hyperopt 0.3,
nested ``hp.choice``/``hp.pchoice``, conditional parameters) and writes the same trial
documents, so the two can be swapped mid-experiment. One call may ask for several ids
(``supports_batch``): the points share one model fit and each is pending-aware of the
ones before it. When duplicate suppression finds nothing new in a finite space, it
returns fewer documents than ids (none: the space is exhausted; ``fmin`` then stops).

**The algorithm** (modules: :mod:`.space` reads the graph, :mod:`.history` the trials,
:mod:`.kde` the Parzen estimators, :mod:`.model` one group's ``l``/``g``,
:mod:`.sampler` proposes points, :mod:`.pending` the pending policies):

* Tree-structured Parzen estimator, candidates drawn from ``l`` and ranked by
  ``l(x)/g(x)``, the prior as one more kernel (Bergstra, Bardenet, Bengio & Kégl 2011,
  "Algorithms for Hyper-Parameter Optimization"; Bergstra, Yamins & Cox 2013, "Making
  a Science of Model Search").
* Multivariate kernels over parameters that co-occur (Falkner, Klein & Hutter 2018,
  "BOHB"; Optuna's ``multivariate=True``, Akiba et al. 2019), with a grouped
  decomposition for conditional branches: parameters active under the same condition
  form one group, modelled jointly, groups after the choices that activate them (as
  Optuna's ``group=True``, read here from the space's graph).
* The bandwidth, prior, weighting and split choices studied by Watanabe 2023 ("Tree-
  Structured Parzen Estimator: Understanding Its Algorithm Components and Their Roles
  for Better Empirical Performance", arXiv:2304.11127) and used by Optuna's TPE:
  neighbour-gap bandwidths with the magic clip, prior weight 1, uniform weights for
  the good set and fading ones for the bad set, Aitchison–Aitken kernels for
  categorical parameters (Aitchison & Aitken 1976); the clip exponent (1.5 for the
  good set) and ``gamma`` (0.07) were chosen on ``bench/quality.py``'s functions with
  seeds the benchmark does not use.
* Two departures, for the conditional trap of ``bench/quality.py``: the good/bad split
  of a nested group is local to the trials that visited it, and every ``hp.choice``
  option that owns parameters keeps at least ``7 * sqrt(n * p)`` of the ``n`` trials
  where the choice was active (forced exploration; Auer, Cesa-Bianchi & Fischer 2002).
  A group where nothing beats its worst loss (a plateau) is explored with its own
  scrambled Sobol sequence rather than at the edges ``prior/g`` favours (Bergstra &
  Bengio 2012 on quasi-random search; Sobol' 1967; Owen 1998); so is the start (the
  first ``n_startup`` trials).

**Pending policies** (``configure(pending=..., dedupe=...)``; see :mod:`.pending`):

``ignore`` + ``dedupe`` (the default: "duplicate suppression")
    Queued and running trials stay out of the model; no proposed point equals, or
    lies within ``dedupe_distance`` of, a finished or pending one (categorical and
    quantized values must be equal, linear parameters compare ``|a - b| / range``,
    log-scaled ones ``|log a - log b|``). It had the best regret on Branin and
    Hartmann6 with 8 trials in flight in ``bench/quality.py`` (80 seeds, and on 240
    seeds the benchmark does not use); ``liar-mean`` found the trap's better branch a
    little more often (51 vs 42 of 80 seeds, both far above every anchor's 23).
``hyperopt``
    Hyperopt's behaviour: a pending trial counts as a failed one (loss ``+inf``).
``liar-best`` / ``liar-mean`` / ``liar-worst``
    Constant liar (Ginsbourger, Le Riche & Carraro 2010, "Kriging is well-suited to
    parallelize optimization"): a pending trial gets the best / mean / worst loss
    observed among finished trials of its group. ``liar-worst`` is what Optuna's
    ``constant_liar=True`` amounts to.

Any policy combines with ``dedupe=True`` (default) or ``False``.
"""

from __future__ import annotations

from tuner.tpe.algorithm import Suggest, configure
from tuner.tpe.pending import Pending
from tuner.tpe.sampler import Options

suggest = configure()
"""The default: ``fmin(..., algo=tuner.tpe.suggest)`` or ``hyper_tune(..., algo=...)``."""

__all__ = ["Options", "Pending", "Suggest", "configure", "suggest"]
