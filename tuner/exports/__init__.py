"""Experiment results out of MongoDB: CSV, JSON, TensorBoard HParams, MLflow.

:func:`export` writes one experiment in one format; ``python -m tuner experiments
export`` is its command-line form. :class:`~tuner.exports.mlflow_callback.MlflowCallback`
logs trials to MLflow while an experiment runs (opt-in, needs ``mlflow``).
"""

from __future__ import annotations

import re
from pathlib import Path

from broker.errors import TunerError
from broker.store import TrialStore
from tuner.compare import require_experiment
from tuner.exports import tabular

FORMATS = ("csv", "json", "tensorboard")


def export(store: TrialStore, ref: str, fmt: str, out_dir: Path) -> Path:
    """Write experiment ``ref`` (name or id) as ``fmt`` under ``out_dir``.

    Returns what was written: ``out_dir/NAME.csv``, ``out_dir/NAME.json``, or the
    TensorBoard log directory ``out_dir/NAME/`` (one run per trial).

    :raises TunerError: no such experiment, or an unknown format.
    :raises ConfigError: ``tensorboard`` is asked for but not installed.
    """
    if fmt not in FORMATS:
        raise TunerError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    experiment = require_experiment(store, ref)
    docs = store.find_trials(experiment["_id"])
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = safe_name(experiment["name"])
    if fmt == "csv":
        return tabular.write_csv(docs, out_dir / f"{stem}.csv")
    if fmt == "json":
        return tabular.write_json(docs, out_dir / f"{stem}.json")
    from tuner.exports.tensorboard_hparams import write_hparams

    return write_hparams(experiment, docs, out_dir / stem)


def safe_name(name: str) -> str:
    """An experiment name as a file name: other characters than ``[A-Za-z0-9._-]`` become
    ``_`` (a name is user data and may hold ``/`` or ``..``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".")
    return cleaned or "experiment"


__all__ = ["FORMATS", "export", "safe_name"]
