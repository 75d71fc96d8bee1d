"""Trial-change notifications over Redis pub/sub: how the tuner learns within
milliseconds that a trial finished, instead of polling.

Notifications are hints, not data: a lost one (Redis restarting, a slow subscriber)
costs at most one sweep interval, because the tuner also re-reads unfinished trials
from MongoDB periodically. MongoDB stays the source of truth.
"""

from __future__ import annotations

import json
import logging
import time

import redis
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from broker.errors import ConfigError
from broker.names import pool_channel, trial_channel
from broker.settings import redact

log = logging.getLogger(__name__)

RECONNECT_S = 0.5
"""Pause between reconnection attempts while Redis is down (seconds)."""


def redis_client(url: str, *, timeout_s: float = 5.0) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=None, health_check_interval=30
    )


def check_broker(url: str, *, timeout_s: float = 5.0) -> None:
    """:class:`ConfigError` naming the address unless Redis answers an authenticated
    ``PING`` within ``timeout_s``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    address = redact(url)
    try:
        client.ping()
    except (AuthenticationError, ResponseError) as exc:
        raise ConfigError(f"broker at {address} refused the credentials: {exc}",
                          address=address) from None
    except RedisError as exc:
        raise ConfigError(f"cannot reach the broker at {address}: {type(exc).__name__}",
                          address=address) from None
    finally:
        client.close()


class Notifier:
    """Worker side: announce that a trial changed state."""

    def __init__(self, url: str) -> None:
        self._client = redis_client(url)

    def trial_changed(self, exp_id: str, tid: int, state: str) -> None:
        payload = json.dumps({"tid": tid, "state": state})
        try:
            self._client.publish(trial_channel(exp_id), payload)
        except RedisError as exc:  # a hint only: the tuner's sweep catches up
            log.warning("could not publish trial %s/%s change: %s", exp_id, tid, exc)


class Subscription:
    """Tuner side: wait for trial changes of one experiment, and (with ``queue``) for
    other tuners joining or leaving that queue's pool (``pool_changed``)."""

    def __init__(self, url: str, exp_id: str, queue: str | None = None) -> None:
        self._client = redis_client(url)
        self._channel = trial_channel(exp_id)
        self._pool = pool_channel(queue) if queue else None
        self.pool_changed = False
        self._pubsub: redis.client.PubSub | None = None
        self._down_since: float | None = None
        self._connect()

    def _connect(self) -> None:
        try:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(*[c for c in (self._channel, self._pool) if c])
        except RedisError as exc:
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("trial notifications unavailable (%s); polling until Redis is "
                            "back", exc)
            self._pubsub = None
            return
        if self._down_since is not None:
            log.warning("trial notifications back after %.0f s",
                        time.monotonic() - self._down_since)
            self._down_since = None
        self._pubsub = pubsub

    def wait(self, timeout_s: float) -> list[int]:
        """Trial ids announced within ``timeout_s`` (waits for the first one, then takes
        whatever else is already there). Empty on timeout or while Redis is down."""
        if self._pubsub is None:
            time.sleep(max(timeout_s, RECONNECT_S))
            self._connect()
            return []
        try:
            first = self._pubsub.get_message(timeout=timeout_s)
            messages = [first] if first else []
            while first and (more := self._pubsub.get_message(timeout=0)):
                messages.append(more)
        except (RedisError, OSError) as exc:
            log.warning("lost trial notifications (%s); reconnecting", exc)
            self.close()
            self._down_since = time.monotonic()
            time.sleep(RECONNECT_S)
            self._connect()
            return []
        tids = []
        for message in messages:
            if message.get("type") != "message":
                continue
            if message.get("channel") in (self._pool, (self._pool or "").encode()):
                self.pool_changed = True
            else:
                tids.append(json.loads(message["data"])["tid"])
        return tids

    def close(self) -> None:
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except RedisError:
                pass
            self._pubsub = None
