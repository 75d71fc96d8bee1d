"""``hyper_tune``: run a Hyperopt search distributed over the workers.

Drop-in for Paperspace Gradient's ``gradient_sdk.hyper_tune``: same arguments, same
defaults, and it reads the experiment name and MongoDB address from the same
environment variables. Returns a summary dict instead of Gradient's bare argmin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hyperopt import base, fmin, space_eval

from broker import objective
from broker.settings import Settings
from tuner import tpe as tuner_tpe
from tuner.trials import DistributedTrials


def hyper_tune(
    train_model: Callable[..., Any],
    hparam_def: Any,
    algo: Callable[..., Any] | None = None,
    max_evals: int = 25,
    func: Callable[..., Any] = fmin,
    *,
    name: str | None = None,
    parallelism: int | None = None,
    trial_timeout: float | None = None,
    trial_soft_timeout: float | None = None,
    weight: float | None = None,
    settings: Settings | None = None,
    **fmin_kwargs: Any,
) -> dict[str, Any]:
    """Minimise ``train_model`` over the Hyperopt space ``hparam_def`` on the workers.

    :param train_model: the objective; returns a loss, or a dict with ``loss`` and
        ``status`` (Hyperopt's convention). Runs on the workers, which find it by
        re-running the calling script from their copy of the workspace.
    :param hparam_def: any Hyperopt search space (nested ``hp.choice`` included).
    :param algo: a Hyperopt ``suggest`` function; default this project's TPE
        (:mod:`tuner.tpe`: faster, pending-aware, better on Hyperopt's own spaces than
        ``hyperopt.tpe.suggest``, which remains a valid choice).
    :param max_evals: total trials of the experiment, earlier runs under the same name
        included; ``TUNER_MAX_EVALS`` (``--max-evals``) overrides it.
    :param func: the search driver; default ``hyperopt.fmin``.
    :param name: experiment name (default ``TUNER_EXPERIMENT``/``EXPERIMENT_NAME``, else
        a new one). The same name again resumes the experiment.
    :param parallelism: trials running at once (default: number of live workers).
    :param trial_timeout: seconds after which a trial is killed (process tree included)
        and recorded as ``timeout``; the algorithm sees a failed point.
    :param trial_soft_timeout: seconds after which the objective gets
        ``SoftTimeLimitExceeded`` (from ``sdk``), e.g. to save a checkpoint.
    :param weight: share of a worker pool shared with other experiments (default 1):
        weights 1 and 3 split the workers 1:3.
    :param fmin_kwargs: passed to ``func`` (``timeout``, ``loss_threshold``,
        ``early_stop_fn``, ``rstate``, ``points_to_evaluate``, ...).
    :returns: ``{"best": params as space_eval gives them, "argmin": raw values,
        "best_loss", "trials": counts by state, "experiment_id", "experiment"}``;
        ``best``/``argmin``/``best_loss`` are ``None`` when no trial succeeded.
    :raises ConfigError: MongoDB or the broker cannot be reached (within ~10 s).
    :raises SpaceError: the space is malformed (nothing is queued).
    """
    settings = Settings.from_env() if settings is None else settings
    if settings.max_evals is not None:
        max_evals = settings.max_evals
    trials = DistributedTrials(
        name, settings=settings, parallelism=parallelism,
        points_to_evaluate=fmin_kwargs.pop("points_to_evaluate", None),
        trial_timeout=trial_timeout, trial_soft_timeout=trial_soft_timeout, weight=weight,
    )
    try:
        argmin = func(train_model, hparam_def, algo=algo or tuner_tpe.suggest,
                      max_evals=max_evals,
                      trials=trials, **fmin_kwargs)
    except base.AllTrialsFailed:
        argmin = None
    if objective.capturing() or trials.experiment is None:
        return {}
    return summarize(trials, hparam_def, argmin)


def summarize(trials: DistributedTrials, space: Any, argmin: Any) -> dict[str, Any]:
    """The result of a finished run of ``trials``."""
    best_loss = trials.best_loss
    if best_loss is None:
        argmin = None
    elif not isinstance(argmin, dict) or not argmin:
        argmin = trials.argmin
    assert trials.experiment is not None
    return {
        "best": space_eval(space, argmin) if argmin is not None else None,
        "argmin": argmin,
        "best_loss": best_loss,
        "trials": {state.value: n for state, n in trials.counts().items()},
        "experiment_id": trials.experiment["_id"],
        "experiment": trials.experiment_name,
    }
