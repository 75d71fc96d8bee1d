"""A connected tuning session: resolved settings, the store, the Celery app.

:func:`open_session` is where the "local default" happens for the tuner: with nothing
configured it starts the local services (and, when no worker serves the queue, local
workers) and stops exactly what it started when the session ends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from celery import Celery
from redis import Redis
from redis.exceptions import RedisError

from broker import defaults, gpus
from broker.celery_app import create_app
from broker.notify import check_broker, redis_client
from broker.services import LocalServices, resolve
from broker.settings import Settings
from broker.store import TrialStore, connect
from tuner.dispatch import CeleryDispatcher
from tuner.local import LocalWorkers


@dataclass
class Session:
    settings: Settings
    store: TrialStore
    app: Celery
    dispatcher: CeleryDispatcher
    redis: Redis
    local_pool: LocalWorkers | None = None

    @property
    def local_workers(self) -> int:
        return self.local_pool.count if self.local_pool is not None else 0

    def check_local_workers(self) -> None:
        """:class:`ServiceError` if a worker this session started has died."""
        if self.local_pool is not None:
            self.local_pool.check()

    def queue_length(self) -> int | None:
        """Messages waiting in the broker's queue; ``None`` if the broker is down."""
        try:
            return int(self.redis.llen(self.settings.queue))
        except RedisError:
            return None

    def alive_workers(self) -> int:
        """Trial slots of the live workers on the queue (a worker with concurrency 16
        counts 16)."""
        return sum(int(w.get("slots") or 1) for w in self.store.alive_workers(
            self.settings.queue, now=time.time(), lease_s=self.settings.lease_s))


@contextmanager
def open_session(settings: Settings, *, local_workers: int | None = None) -> Iterator[Session]:
    """Connect (``ConfigError`` within ~10 s if MongoDB or the broker is unreachable)."""
    with ExitStack() as stack:
        resolved, started = resolve(settings, start=True)
        if started:
            services = LocalServices(settings.state_dir)
            stack.callback(services.down, started)
        check_broker(resolved.broker_url or "", timeout_s=defaults.CONNECT_TIMEOUT_S)
        store = connect(resolved, timeout_s=defaults.CONNECT_TIMEOUT_S)
        stack.callback(store.close)
        app = create_app(resolved)
        redis = redis_client(resolved.broker_url or "")
        stack.callback(redis.close)
        session = Session(resolved, store, app, CeleryDispatcher(app, resolved.queue), redis)
        if settings.uses_local_default and session.alive_workers() == 0:
            count = local_workers or default_local_worker_count()
            session.local_pool = stack.enter_context(LocalWorkers(resolved, count=count))
        yield session


def default_local_worker_count() -> int:
    """One worker per GPU; without GPUs, one per core up to 4."""
    return len(gpus.detect()) or max(1, min(4, os.cpu_count() or 1))
