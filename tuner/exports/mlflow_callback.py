"""Opt-in MLflow logging: one parent run per experiment, one child run per finished trial.

While tuning, pass the callback as Hyperopt's ``early_stop_fn`` (the tuner calls it in
its own process whenever trials changed); it never stops the search itself, and can wrap
a real early-stopping function::

    from hyperopt.early_stop import no_progress_loss
    from tuner.exports.mlflow_callback import MlflowCallback

    hyper_tune(train, space, max_evals=100,
               early_stop_fn=MlflowCallback(then=no_progress_loss(20)))

After the fact, :meth:`MlflowLogger.log` takes an experiment and its trial documents.

Each child run carries the trial's parameters as the objective received them (flattened,
``opt.lr``), the metrics ``loss`` and ``duration_s``, the tags ``tuner.tid``,
``tuner.state``, ``host``, ``gpu``, and ends ``FINISHED`` (ok), ``FAILED`` or ``KILLED``
(cancelled). Trials already logged under the parent (found by tag when the logger
starts) are not logged twice, so a resumed experiment continues where it stopped. A
failure to reach MLflow is logged as a warning and retried at the next call: it never
stops the tuning. Needs the ``mlflow`` (or ``mlflow-skinny``) package.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from broker.errors import ConfigError
from broker.trial_doc import TrialState, state_of
from tuner import report

log = logging.getLogger(__name__)

PARAM_VALUE_MAX = 6000
"""MLflow's limit on a parameter value's length (characters)."""

EXPERIMENT_TAG = "tuner.experiment_id"
TID_TAG = "tuner.tid"
_RUN_STATUS = {TrialState.OK: "FINISHED", TrialState.FAIL: "FAILED", TrialState.TIMEOUT: "FAILED",
               TrialState.CANCELLED: "KILLED"}


def _client(tracking_uri: str | None) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError("MLflow logging needs the mlflow package: pip install mlflow") from None
    return MlflowClient(tracking_uri=tracking_uri)


class MlflowLogger:
    """Logs trials to MLflow through an ``MlflowClient`` (``client``, for tests, or one
    on ``tracking_uri``; default: MLflow's own default, ``MLFLOW_TRACKING_URI``).

    :param mlflow_experiment: MLflow experiment to log into (default: the tuner
        experiment's name; created if missing).
    """

    def __init__(self, *, tracking_uri: str | None = None, mlflow_experiment: str | None = None,
                 client: Any = None) -> None:
        self.client = client if client is not None else _client(tracking_uri)
        self.mlflow_experiment = mlflow_experiment
        self.parent_run_id: str | None = None
        self._mlflow_experiment_id: str | None = None
        self._logged: set[int] = set()

    def log(self, experiment: dict[str, Any], docs: Iterable[dict[str, Any]]) -> list[int]:
        """Log the finished trials among ``docs`` not logged yet; returns their tids."""
        if self.parent_run_id is None:
            self._start(experiment)
        logged = []
        for doc in docs:
            state = state_of(doc)
            if not state.is_finished or doc["tid"] in self._logged:
                continue
            self._log_trial(doc, state)
            self._logged.add(doc["tid"])
            logged.append(doc["tid"])
        return logged

    def _start(self, experiment: dict[str, Any]) -> None:
        name = self.mlflow_experiment or experiment["name"]
        found = self.client.get_experiment_by_name(name)
        self._mlflow_experiment_id = (found.experiment_id if found is not None
                                      else self.client.create_experiment(name))
        exp_id = str(experiment["_id"])
        runs = self.client.search_runs(
            [self._mlflow_experiment_id], filter_string=f"tags.`{EXPERIMENT_TAG}` = '{exp_id}'")
        for run in runs:
            tags = run.data.tags
            if TID_TAG not in tags:
                self.parent_run_id = run.info.run_id
            elif tags[TID_TAG].isdigit():
                self._logged.add(int(tags[TID_TAG]))
        if self.parent_run_id is None:
            parent = self.client.create_run(
                self._mlflow_experiment_id, run_name=experiment["name"],
                tags={EXPERIMENT_TAG: exp_id, "tuner.algo": str(experiment.get("algo"))})
            self.parent_run_id = parent.info.run_id

    def _log_trial(self, doc: dict[str, Any], state: TrialState) -> None:
        from mlflow.entities import Metric, Param, RunTag

        row = report.trial_row(doc)
        run = self.client.create_run(
            self._mlflow_experiment_id, run_name=f"trial-{doc['tid']}",
            start_time=_ms(doc.get("started_at")),
            tags={"mlflow.parentRunId": self.parent_run_id, EXPERIMENT_TAG: str(doc["exp_key"]),
                  TID_TAG: str(doc["tid"]), "tuner.state": state.value,
                  "host": str(doc.get("host")), "gpu": str(doc.get("gpu"))})
        params = [Param(_key(k.split(".", 1)[1]), _value(v)) for k, v in row.items()
                  if k.startswith(("param.", "val.")) and v is not None]
        at = _ms(doc.get("ended_at")) or 0
        metrics = [Metric(name, float(row[name]), at, 0) for name in ("loss", "duration_s")
                   if row.get(name) is not None]
        tags = [RunTag("tuner.error", str(row["error"])[:5000])] if row.get("error") else []
        self.client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=tags)
        self.client.set_terminated(run.info.run_id, status=_RUN_STATUS[state],
                                   end_time=_ms(doc.get("ended_at")))


class MlflowCallback:
    """An ``early_stop_fn`` that logs each finished trial to MLflow (see the module
    docstring), then defers to ``then`` (another ``early_stop_fn``) if given."""

    def __init__(self, *, then: Callable[..., tuple[bool, Any]] | None = None,
                 logger: MlflowLogger | None = None, **logger_options: Any) -> None:
        self.then = then
        self.logger = logger if logger is not None else MlflowLogger(**logger_options)
        self.__name__ = "MlflowCallback"

    def __call__(self, trials: Any, *args: Any) -> tuple[bool, Any]:
        experiment = getattr(trials, "experiment", None) or {
            "_id": getattr(trials, "_exp_key", None) or "hyperopt", "name": "hyperopt"}
        try:
            self.logger.log(experiment, list(trials.trials))
        except ConfigError:
            raise
        except Exception as exc:  # MLflow unreachable, or it refused a value: tuning goes on
            log.warning("MLflow logging failed (will retry): %s: %s", type(exc).__name__, exc)
        if self.then is not None:
            return self.then(trials, *args)
        return False, list(args)


def _key(name: str) -> str:
    """An MLflow parameter name: letters, digits, ``_-. /`` only, at most 250 characters."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)[:250]


def _value(value: Any) -> str:
    return str(value)[:PARAM_VALUE_MAX]


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)
