"""Worker lifecycle: each worker announces itself in the ``workers`` collection and
renews that every heartbeat, so the tuner knows how many workers serve its queue; it
forks a spare trial process per slot when it starts and stops its trial processes when
it stops."""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery, signals

from broker.settings import Settings
from broker.store import connect
from workers import context
from workers.context import identity

log = logging.getLogger(__name__)


def install(app: Celery, settings: Settings, worker_name: str, slots: int = 1) -> None:
    """Heartbeat from the worker's main process from ``worker_ready`` to shutdown."""
    stop = threading.Event()

    @signals.worker_ready.connect(weak=False)
    def _start(**_: object) -> None:
        thread = threading.Thread(target=_beat, args=(settings, worker_name, slots, stop),
                                  name="presence", daemon=True)
        thread.start()
        context.current(worker_name).runners.prewarm(spares=slots)

    @signals.worker_shutting_down.connect(weak=False)
    def _hand_back(**_: object) -> None:
        # Stopping a worker must not wait for (possibly hours-long) trials: kill them;
        # their tasks hand the trials back to the queue and return (workers.tasks).
        if context.initialised():
            ctx = context.current(worker_name)
            ctx.stopping.set()
            ctx.runners.interrupt()

    @signals.worker_shutdown.connect(weak=False)
    @signals.worker_process_shutdown.connect(weak=False)
    def _stop(**_: object) -> None:
        stop.set()
        if context.initialised():
            context.current(worker_name).runners.close()


def _beat(settings: Settings, worker_name: str, slots: int, stop: threading.Event) -> None:
    me = identity(worker_name, settings, slots)
    store = None
    while not stop.is_set():
        try:
            store = store or connect(settings)
            store.worker_heartbeat(me, now=time.time())
        except Exception as exc:  # keep beating through outages
            log.warning("worker heartbeat failed: %s", exc)
        stop.wait(settings.heartbeat_s)
    if store is not None:
        try:
            store.worker_gone(me)
        except Exception as exc:
            log.warning("could not mark worker gone: %s", exc)
