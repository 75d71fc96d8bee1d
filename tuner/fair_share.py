"""Several experiments sharing one pool of workers, in proportion to their weights.

How it works. Every tuner publishes a *claim* on its experiment document (``pool``):
its queue, weight, demand (how many trials it could run at once) and usage (worker
seconds its trials ran since it joined), renewed every sweep. Every sweep each tuner
reads the live claims on its queue and computes the same allocation of the queue's
live workers (:func:`allocate`): water-filling by weight, capped by each demand, the
seats left over by rounding going to the experiments least served so far per unit of
weight. It then keeps only that many trials in flight. A tuner that joins or leaves
(or finds itself with spare seats) announces it on the queue's channel, so the others
recompute at once instead of at their next sweep.

Consequences, and limits:

* A newly started experiment gets a worker as soon as any running trial of the others
  ends (they do not refill above their new share): within one trial duration.
* A finished experiment releases its share at once (its tuner announces it).
* The split is of *trials in flight*, which is the split of worker time because every
  trial in flight on a shared queue is running (no look-ahead queueing while sharing).
  Trials are not pre-empted: a long trial keeps its worker until it ends.
* Fractional shares (3 equal experiments on 2 workers) are met over time, by giving
  the odd seat to whichever is least served; a tuner that dies stops counting after
  three missed sweeps, but its running trials finish first.
* Under sharing, a worker slot alternates between experiments, which never share a
  trial process. Switching costs loading the objective into a spare trial process (or
  a fork of an already-imported server: :mod:`workers.trial_process`), and a worker
  with several slots keeps idle processes of the other experiments loaded
  (:class:`workers.runner.RunnerPool`). With 1-second trials on 64 slots of a 2-core
  machine, weights 1:3 split worker time 1:3.0 (``bench/scale.py``); when a switch
  still cost ~1 s of imports, the switches used the CPU and the split reached only 1:2.0.
* Weights are per experiment, on one queue; there are no quotas across queues, users
  or time (use separate machine types / queues for hard isolation).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

from broker.names import pool_channel
from broker.store import TrialStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    exp_id: str
    weight: float
    demand: int
    usage_s: float


def allocate(claims: list[Claim], workers: int) -> dict[str, int]:
    """Seats per experiment: proportional to weight, never above demand, summing to at
    most ``workers``; rounding leftovers go to the least served per unit of weight."""
    shares = _water_fill({c.exp_id: c for c in claims if c.demand > 0 and c.weight > 0},
                         float(workers))
    seats = {c.exp_id: min(c.demand, math.floor(shares.get(c.exp_id, 0.0) + 1e-9))
             for c in claims}
    spare = workers - sum(seats.values())
    hungry = sorted((c for c in claims if c.weight > 0 and seats[c.exp_id] < c.demand),
                    key=lambda c: (c.usage_s / c.weight, -c.weight, c.exp_id))
    while spare > 0 and hungry:
        for claim in list(hungry):
            if spare == 0:
                break
            seats[claim.exp_id] += 1
            spare -= 1
            if seats[claim.exp_id] >= claim.demand:
                hungry.remove(claim)
    return seats


def _water_fill(claims: dict[str, Claim], capacity: float) -> dict[str, float]:
    shares: dict[str, float] = {}
    open_claims = dict(claims)
    while open_claims and capacity > 1e-9:
        total = sum(c.weight for c in open_claims.values())
        capped = {i: c for i, c in open_claims.items()
                  if c.demand <= capacity * c.weight / total}
        if not capped:
            for i, c in open_claims.items():
                shares[i] = capacity * c.weight / total
            return shares
        for i, c in capped.items():
            shares[i] = float(c.demand)
            capacity -= c.demand
            del open_claims[i]
    return shares


class FairShare:
    """One tuner's membership in its queue's pool."""

    def __init__(self, store: TrialStore, redis: Redis, *, exp_id: str, queue: str,
                 weight: float, stale_s: float) -> None:
        self.store, self.redis = store, redis
        self.exp_id, self.queue, self.weight = exp_id, queue, weight
        self.stale_s = stale_s
        self.joined_at = time.time()
        self.sharing = False
        self._announced = False
        self._last_seats = 0

    def seats(self, *, demand: int, usage_s: float, workers: int) -> int:
        """Renew this tuner's claim and return its seats among ``workers``."""
        now = time.time()
        self.store.update_experiment(self.exp_id, pool={
            "queue": self.queue, "weight": self.weight, "demand": demand,
            "usage_s": usage_s, "heartbeat_at": now})
        if not self._announced:
            self._announce()
            self._announced = True
        claims = [Claim(d["_id"], float(p["weight"]), int(p["demand"]), float(p["usage_s"]))
                  for d in self.store.experiments.find(
                      {"pool.queue": self.queue, "pool.heartbeat_at": {"$gt": now - self.stale_s}},
                      {"pool": 1})
                  if (p := d.get("pool"))]
        self.sharing = len(claims) > 1
        mine = allocate(claims, workers).get(self.exp_id, 0)
        if self.sharing and demand < self._last_seats:
            self._announce()  # winding down: let the others take our seats now
        self._last_seats = mine
        return mine

    def leave(self) -> None:
        self.store.update_experiment(self.exp_id, pool=None)
        self._announce()

    def _announce(self) -> None:
        try:
            self.redis.publish(pool_channel(self.queue), json.dumps({"exp_id": self.exp_id}))
        except RedisError as exc:  # a hint: the others still recompute every sweep
            log.warning("could not announce a pool change: %s", exc)
