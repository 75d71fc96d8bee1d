"""Send trials to workers: a suggestion becomes a Celery task here.

The message carries the experiment id and the trial id only; everything else is read
from MongoDB by the worker. Sending is idempotent from the system's point of view: a
trial sent twice is evaluated once (see :meth:`broker.store.TrialStore.claim`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from celery import Celery

from broker.celery_app import send_trial


class Dispatcher(Protocol):
    def send(self, exp_id: str, tids: Iterable[int]) -> None: ...


class CeleryDispatcher:
    """Sends to the queue of one machine type over one broker connection."""

    def __init__(self, app: Celery, queue: str) -> None:
        self.app = app
        self.queue = queue

    def send(self, exp_id: str, tids: Iterable[int]) -> None:
        with self.app.producer_or_acquire() as producer:
            for tid in tids:
                send_trial(self.app, exp_id, tid, queue=self.queue, producer=producer)
