"""Riding out a MongoDB outage in the tuner.

While MongoDB is unreachable the tuner waits (retrying each step once a second) instead
of failing the experiment; after ``budget_s`` it gives up with a clear error (the
experiment can be resumed by running it again). When MongoDB is back, re-queuing trials
whose lease "expired" is held off for ``settle_s``: their workers could not renew during
the outage either, and must get a chance to renew (or to write their result) before
their trials are taken from them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from pymongo.errors import ConnectionFailure

from broker.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_S = 1.0


class OutageGuard:
    def __init__(self, *, budget_s: float, settle_s: float) -> None:
        self.budget_s = budget_s
        self.settle_s = settle_s
        self._since: float | None = None
        self._settled_at = 0.0

    def attempt(self, step: Callable[[], T]) -> tuple[bool, T | None]:
        """Run ``step``; ``(False, None)`` if MongoDB was unreachable (after a pause),
        :class:`ConfigError` once the outage has lasted longer than the budget."""
        try:
            value = step()
        except ConnectionFailure as exc:
            now = time.monotonic()
            if self._since is None:
                self._since = now
                log.warning("MongoDB is unreachable (%s); waiting for it", exc)
            if now - self._since > self.budget_s:
                raise ConfigError(
                    f"MongoDB has been unreachable for {now - self._since:.0f} s; stopped "
                    "waiting. Run the experiment again under the same name to resume it"
                ) from None
            time.sleep(RETRY_S)
            return False, None
        if self._since is not None:
            log.warning("MongoDB is back after %.0f s", time.monotonic() - self._since)
            self._since = None
            self._settled_at = time.monotonic() + self.settle_s
        return True, value

    @property
    def settled(self) -> bool:
        """False during an outage and right after it, while workers catch up."""
        return self._since is None and time.monotonic() >= self._settled_at
