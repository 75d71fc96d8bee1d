"""The Celery app, configured in one place for long GPU trials.

The tuner sends tasks by name (:func:`send_trial`) and never imports worker code;
workers register the task on the same app (:mod:`workers.tasks`). Every setting that
differs from Celery's default is commented with the reason.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from broker import names
from broker.errors import ConfigError
from broker.settings import Settings


def create_app(settings: Settings) -> Celery:
    """A Celery app on ``settings.broker_url``; nothing connects until first use."""
    if not settings.broker_url:
        raise ConfigError("no broker URL configured")
    app = Celery("tuner", broker=settings.broker_url, set_as_current=False)
    transport = {
        # Redis redelivers unacknowledged messages after this; with late acks a message
        # stays unacknowledged for the whole trial, so it must exceed the longest trial.
        # A redelivered copy finds the trial leased and does nothing (see
        # broker.store.TrialStore.claim); lost workers are found through leases.
        "visibility_timeout": settings.visibility_timeout_s,
        # ...and looks for such messages this often (seconds; default ~100 s).
        "unacked_restore_interval": max(1.0, min(60.0, settings.visibility_timeout_s / 4)),
        "unacked_restore_throttle": 1,
        # Fail fast on an unreachable broker instead of hanging the tuner, and give up on
        # a connection whose peer vanished without closing it.
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
        # Keep the connection alive through idle periods on long trials.
        "socket_keepalive": True,
        "health_check_interval": 25,
    }
    app.conf.update(
        # JSON only: a message can never carry code (pickle would run on load).
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # Acknowledge after the trial, so a worker that dies mid-trial loses nothing.
        task_acks_late=True,
        # ...and requeue the message if a prefork pool process running it dies (the
        # default threads pool runs trials in their own process group instead). A trial
        # whose worker keeps dying is failed after max_attempts (our own cap, in the
        # trial document), so a poison trial cannot loop forever.
        task_reject_on_worker_lost=True,
        # One message per worker process: a long trial must not hold others hostage.
        worker_prefetch_multiplier=1,
        # Results live in MongoDB; no Celery result backend to keep consistent.
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        visibility_timeout=settings.visibility_timeout_s,
        task_default_queue=settings.queue,
        task_create_missing_queues=True,
        # Events let Flower show each worker's state and each trial's task.
        worker_send_task_events=True,
        task_send_sent_event=True,
        # Keep retrying the broker after a restart instead of exiting.
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # A broker outage must not cancel trials that are running on the GPU.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        # Workers pin GPUs and own a long-lived runner process; do not recycle them.
        worker_max_tasks_per_child=None,
    )
    return app


def send_trial(app: Celery, exp_id: str, tid: int, *, queue: str, **options: Any) -> None:
    """Queue the evaluation of one trial: the message carries the two ids only."""
    app.send_task(names.EVALUATE_TRIAL, args=[exp_id, int(tid)], queue=queue,
                  routing_key=queue, **options)
