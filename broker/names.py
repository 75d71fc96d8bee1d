"""Names both sides must agree on: the task, queues, channels and collections.

A message carries an experiment id and a trial id, nothing else; see
:mod:`workers.tasks` for the receiving end.
"""

from __future__ import annotations

EVALUATE_TRIAL = "workers.evaluate_trial"
"""The one task: evaluate trial ``tid`` of experiment ``exp_id`` (both JSON scalars)."""

QUEUE_PREFIX = "trials."

EXPERIMENTS = "experiments"
TRIALS = "trials"
WORKERS = "workers"
"""MongoDB collections: one document per experiment, per trial, per worker process."""


def queue_for(machine_type: str) -> str:
    """The Celery queue that workers of ``machine_type`` consume (``trials.a100``)."""
    return QUEUE_PREFIX + machine_type


def trial_channel(exp_id: str) -> str:
    """Redis pub/sub channel on which workers announce that a trial changed state."""
    return f"tuner:trials:{exp_id}"


def pool_channel(queue: str) -> str:
    """Redis pub/sub channel on which tuners sharing ``queue`` announce that they joined
    or left, so the others re-divide the workers at once (see tuner.fair_share)."""
    return f"tuner:pool:{queue}"
