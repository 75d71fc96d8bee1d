"""The MongoDB store: the source of truth for experiments, trials and workers.

Who may change what:

* the **tuner** creates experiments, inserts trials in ``queued`` state, re-queues
  trials whose lease expired, and cancels trials it no longer wants;
* a **worker** moves a trial from ``queued`` to ``running`` only through
  :meth:`TrialStore.claim` (a conditional ``find_one_and_update``, so a second
  delivery of the same message claims nothing), renews its lease while it runs, and
  writes the final result through :meth:`TrialStore.finish`, fenced by its lease
  token, so exactly one result per trial can exist and a worker that lost its lease
  (a zombie) changes nothing.

Every method is safe to call from several threads (PyMongo's client is thread-safe);
create one store per process after forking. The MongoDB features relied on are
pinned by ``tests/broker/test_mongo_contract.py``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pymongo
from hyperopt import base
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from broker import names
from broker.errors import ConfigError, ExperimentError, StoreContractError
from broker.settings import ENV, Settings, redact
from broker.trial_doc import (
    EXP_KEY,
    TID,
    UNFINISHED_JOB_STATES,
    TrialState,
    failure_result,
    job_state,
)


@dataclass(frozen=True)
class WorkerIdentity:
    """Who runs a trial: recorded in the trial document and the workers collection."""

    name: str
    host: str
    pid: int
    gpu: str | None = None
    queue: str | None = None
    slots: int = 1
    """Trials the worker runs at once (its Celery concurrency)."""


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one trial. ``token`` fences every later write."""

    exp_id: str
    tid: int
    token: str
    attempt: int
    worker: str
    doc: dict[str, Any]


def connect(settings: Settings, *, timeout_s: float = 5.0) -> TrialStore:
    """A store on ``settings.mongo_url``; :class:`ConfigError` naming the address if
    MongoDB does not answer within ``timeout_s``, refuses the credentials, or (for a
    server on another machine) the URL carries none and that was not explicitly allowed."""
    if not settings.mongo_url:
        raise ConfigError("no MongoDB URL configured")
    address = redact(settings.mongo_url)
    _refuse_unauthenticated(settings.mongo_url, address, settings.allow_unauthenticated_mongo)
    timeout_ms = int(timeout_s * 1000)
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.mongo_url,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        appname="tuner",
    )
    store = TrialStore(client, settings.mongo_db)
    try:
        client.admin.command("ping")
        store.ensure_indexes()  # also proves that we may read and write
    except OperationFailure as exc:
        client.close()
        if exc.code in (13, 18):  # Unauthorized, AuthenticationFailed
            what = "requires authentication" if exc.code == 13 else "rejected the credentials"
            raise ConfigError(f"MongoDB at {address} {what}: set the user and password in "
                              f"{ENV['mongo_url']}", address=address) from None
        raise ConfigError(f"MongoDB at {address} refused: {exc}", address=address) from None
    except PyMongoError as exc:
        client.close()
        raise ConfigError(
            f"cannot reach MongoDB at {address}: {type(exc).__name__}", address=address
        ) from None
    return store


def _refuse_unauthenticated(url: str, address: str, allowed: bool) -> None:
    """A MongoDB on another machine without credentials would let anyone on the network
    plant experiments: refuse unless the user said so explicitly."""
    if allowed or "@" in url.split("?")[0]:
        return
    hosts = url.split("://", 1)[-1].split("/", 1)[0].split(",")
    if all(h.rsplit(":", 1)[0].strip("[]") in LOOPBACK for h in hosts):
        return
    raise ConfigError(
        f"the MongoDB URL {address} has no credentials: add a user and password, or set "
        f"{ENV['allow_unauthenticated_mongo']}=1 to accept an unauthenticated database",
        address=address)


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class TrialStore:
    """Experiments, trials and workers in one MongoDB database."""

    def __init__(self, client: pymongo.MongoClient, db_name: str) -> None:
        self.client = client
        self.db = client[db_name]
        self.experiments = self.db[names.EXPERIMENTS]
        self.trials = self.db[names.TRIALS]
        self.workers = self.db[names.WORKERS]

    def close(self) -> None:
        self.client.close()

    def ensure_indexes(self) -> None:
        self.trials.create_index([(EXP_KEY, 1), (TID, 1)], unique=True)
        self.trials.create_index([(EXP_KEY, 1), ("state", 1)])
        self.experiments.create_index([("name", 1)], unique=True)

    # -- experiments -----------------------------------------------------------------

    def create_experiment(self, name: str, fields: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The experiment called ``name``, created with ``fields`` if it does not exist.

        Returns ``(document, created)``. Concurrent creators race on the unique index;
        exactly one wins and the others get the winner's document.
        """
        now = time.time()
        doc = {
            "_id": secrets.token_hex(6),
            "name": name,
            "state": "created",
            "created_at": now,
            "next_tid": 0,
            **fields,
        }
        try:
            self.experiments.insert_one(doc)
            return doc, True
        except DuplicateKeyError:
            existing = self.experiment_by_name(name)
            if existing is None:
                raise ExperimentError(f"experiment {name!r} vanished while being created") from None
            return existing, False

    def experiment_by_name(self, name: str) -> dict[str, Any] | None:
        return self.experiments.find_one({"name": name})

    def experiment(self, exp_id: str) -> dict[str, Any] | None:
        return self.experiments.find_one({"_id": exp_id})

    def find_experiment(self, name_or_id: str) -> dict[str, Any] | None:
        return self.experiment_by_name(name_or_id) or self.experiment(name_or_id)

    def list_experiments(self) -> list[dict[str, Any]]:
        return list(self.experiments.find({}, {"spec": 0}).sort("created_at", 1))

    def update_experiment(self, exp_id: str, **fields: Any) -> None:
        self.experiments.update_one({"_id": exp_id}, {"$set": fields})

    def reserve_tids(self, exp_id: str, n: int) -> list[int]:
        """``n`` trial ids never handed out before for this experiment, even across
        tuner restarts or by concurrent tuners."""
        doc = self.experiments.find_one_and_update(
            {"_id": exp_id},
            {"$inc": {"next_tid": n}},
            projection={"next_tid": 1},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise ExperimentError(f"no experiment with id {exp_id}")
        end = int(doc["next_tid"])
        return list(range(end - n, end))

    # -- trials: tuner side -------------------------------------------------------------

    def insert_trials(self, docs: list[dict[str, Any]]) -> None:
        """Insert new trial documents, each under its :func:`trial_id`."""
        if docs:
            self.trials.insert_many([{**d, "_id": trial_id(d[EXP_KEY], d[TID])} for d in docs],
                                    ordered=True)

    def trial(self, exp_id: str, tid: int) -> dict[str, Any] | None:
        return self.trials.find_one(_one(exp_id, tid), {"_id": 0})

    def find_trials(
        self,
        exp_id: str,
        *,
        tids: Iterable[int] | None = None,
        unfinished: bool = False,
        projection: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Trial documents of one experiment, in ``tid`` order."""
        query: dict[str, Any] = {EXP_KEY: exp_id} if tids is None else {
            "_id": {"$in": [trial_id(exp_id, tid) for tid in tids]}}
        if unfinished:
            query["state"] = {"$in": UNFINISHED_JOB_STATES}
        fields = {"_id": 0, **(projection or {})}
        return list(self.trials.find(query, fields).sort(TID, 1))

    def count_by_state(self, exp_id: str) -> dict[TrialState, int]:
        """Trials per state. One ``$count`` aggregation per state: nx-27017 answers these
        in milliseconds where ``count_documents`` scans (over a second at 10,000 trials)."""
        counts = {}
        for state in TrialState:
            pipeline = [{"$match": {EXP_KEY: exp_id, **state.query()}}, {"$count": "n"}]
            counts[state] = next(iter(self.trials.aggregate(pipeline)), {}).get("n", 0)
        return counts

    def best_trial(self, exp_id: str) -> dict[str, Any] | None:
        """The successful trial with the lowest loss (read alone, not the whole history)."""
        return self.trials.find_one({EXP_KEY: exp_id, **TrialState.OK.query()}, {"_id": 0},
                                    sort=[("result.loss", 1)])

    def requeue_expired(
        self, exp_id: str, *, now: float, max_attempts: int
    ) -> tuple[list[int], list[int]]:
        """Put running trials whose lease expired back in the queue, or fail them once
        they have lost ``max_attempts`` workers. Returns ``(requeued, failed)`` tids."""
        expired = self.trials.find(
            {EXP_KEY: exp_id, "state": base.JOB_STATE_RUNNING, "lease.expires_at": {"$lt": now}},
            {"_id": 0, TID: 1, "lease": 1, "attempt": 1, "attempts": 1},
        )
        requeued, failed = [], []
        for doc in expired:
            lease = doc["lease"]
            outcome = self._release(
                exp_id, doc, lease["token"], lease.get("owner"), "lease expired",
                max_attempts=max_attempts, now=now,
            )
            if outcome == "queued":
                requeued.append(doc[TID])
            elif outcome == "failed":
                failed.append(doc[TID])
        return requeued, failed

    def cancel(self, exp_id: str, *, running: bool) -> list[int]:
        """Cancel queued trials at once; with ``running``, ask workers to stop running
        ones (they notice at their next heartbeat). Returns the tids cancelled at once."""
        queued = [d[TID] for d in self.trials.find(
            {EXP_KEY: exp_id, "state": base.JOB_STATE_NEW}, {TID: 1})]
        now = time.time()
        if queued:
            self.trials.update_many(
                {"_id": {"$in": [trial_id(exp_id, tid) for tid in queued]},
                 "state": base.JOB_STATE_NEW},
                {"$set": {"state": job_state(TrialState.CANCELLED), "refresh_time": now,
                          "result": {"status": base.STATUS_FAIL,
                                     "failure": {"kind": "cancelled",
                                                 "message": "cancelled before it ran"}}}},
            )
        if running:
            self.trials.update_many(
                {EXP_KEY: exp_id, "state": base.JOB_STATE_RUNNING}, {"$set": {"cancel": True}}
            )
        return queued

    # -- trials: worker side ------------------------------------------------------------

    def claim(
        self, exp_id: str, tid: int, worker: WorkerIdentity, *, lease_s: float, now: float
    ) -> tuple[Claim | None, dict[str, Any] | None]:
        """Take trial ``tid`` if it is queued.

        Returns ``(claim, previous_document)``; ``claim`` is ``None`` when the trial is
        running, finished or cancelled (a redelivered or duplicated message), in which
        case the caller must do nothing. A running trial whose worker died is never taken
        over here: only the tuner re-queues it (:meth:`requeue_expired`), because only
        the tuner knows whether an expired lease means a dead worker or an outage that
        kept every worker from renewing.
        """
        token = secrets.token_hex(8)
        before = self.trials.find_one_and_update(
            _one(exp_id, tid, state=base.JOB_STATE_NEW),
            {
                "$set": {
                    "state": base.JOB_STATE_RUNNING,
                    "owner": worker.name,
                    "lease": {"token": token, "owner": worker.name, "expires_at": now + lease_s},
                    "book_time": now,
                    "started_at": now,
                    "refresh_time": now,
                    "worker": worker.name,
                    "host": worker.host,
                    "gpu": worker.gpu,
                },
                "$inc": {"attempt": 1},
            },
            projection={"_id": 0},
            return_document=ReturnDocument.BEFORE,
        )
        if before is None:
            return None, self.trial(exp_id, tid)
        if before.get(EXP_KEY) != exp_id or before.get(TID) != tid:
            raise StoreContractError(
                f"claim of trial {exp_id}/{tid} updated trial "
                f"{before.get(EXP_KEY)}/{before.get(TID)}: this MongoDB server does not honour "
                "the store's contract (see tests/broker/test_mongo_contract.py)")
        attempt = int(before.get("attempt", 0)) + 1
        return Claim(exp_id, tid, token, attempt, worker.name, before), before

    def renew(self, claim: Claim, *, lease_s: float, now: float) -> str:
        """Extend the lease. Returns ``"ok"``, ``"cancel"`` (the tuner asked to stop) or
        ``"lost"`` (someone else holds the trial now: stop running it)."""
        doc = self.trials.find_one_and_update(
            _one(claim.exp_id, claim.tid, **{"lease.token": claim.token}),
            {"$set": {"lease.expires_at": now + lease_s, "refresh_time": now}},
            projection={"cancel": 1},
        )
        if doc is None:
            return "lost"
        return "cancel" if doc.get("cancel") else "ok"

    def record_params(self, claim: Claim, params: Any) -> None:
        self.trials.update_one(
            _one(claim.exp_id, claim.tid, **{"lease.token": claim.token}),
            {"$set": {"params": params}},
        )

    def finish(
        self,
        claim: Claim,
        result: dict[str, Any],
        *,
        now: float,
        cancelled: bool = False,
        **fields: Any,
    ) -> bool:
        """Write the one result of the trial. ``False`` if the lease was lost (the
        result is discarded: the trial was re-queued and another run owns it)."""
        state = TrialState.CANCELLED if cancelled else TrialState.OK
        update = {
            "state": job_state(state),
            "result": result,
            "lease": None,
            "ended_at": now,
            "refresh_time": now,
            **fields,
        }
        matched = self.trials.update_one(
            _one(claim.exp_id, claim.tid, state=base.JOB_STATE_RUNNING,
                 **{"lease.token": claim.token}),
            {"$set": update},
        ).matched_count
        return matched == 1

    def release(self, claim: Claim, reason: str, *, max_attempts: int, now: float,
                counted: bool = True) -> str:
        """The run was lost (its process died): re-queue the trial, or fail it once it
        has lost ``max_attempts`` runs. ``counted=False`` hands the trial back without
        counting the run (the worker is shutting down; not the trial's fault).
        Returns ``"queued"``, ``"failed"`` or ``"lost"`` (no longer ours)."""
        doc = {**claim.doc, "attempt": claim.attempt}
        return self._release(claim.exp_id, doc, claim.token, claim.worker, reason,
                             max_attempts=max_attempts, now=now, counted=counted)

    def _release(
        self, exp_id: str, doc: dict[str, Any], token: str, owner: str | None, reason: str,
        *, max_attempts: int, now: float, counted: bool = True,
    ) -> str:
        """Give a running trial back (or fail it at the attempt cap), fenced by ``token``.

        The lost run is appended to ``attempts`` by rewriting the list read with the
        document (the token fences the write), not with ``$push``, which not every
        MongoDB-compatible server applies to sub-documents correctly."""
        tid, attempt = doc[TID], int(doc.get("attempt", 0))
        entry = lost_run(attempt, owner, reason, now, counted=counted)
        attempts = [*doc.get("attempts", []), entry]
        lost = lost_runs({"attempts": attempts})
        if counted and lost >= max_attempts:
            result = failure_result("worker_lost", f"worker lost ×{lost} (last: {reason})")
            update: dict[str, Any] = {"state": base.JOB_STATE_DONE, "result": result,
                                      "ended_at": now}
            outcome = "failed"
        else:
            update = {"state": base.JOB_STATE_NEW, "queued_at": now}
            outcome = "queued"
        update.update({"lease": None, "refresh_time": now, "attempts": attempts})
        matched = self.trials.update_one(
            _one(exp_id, tid, state=base.JOB_STATE_RUNNING, **{"lease.token": token}),
            {"$set": update},
        ).matched_count
        return outcome if matched == 1 else "lost"

    # -- workers ------------------------------------------------------------------------

    def worker_heartbeat(self, worker: WorkerIdentity, *, now: float, **fields: Any) -> None:
        self.workers.update_one(
            {"_id": worker.name},
            {"$set": {"host": worker.host, "pid": worker.pid, "gpu": worker.gpu,
                      "queue": worker.queue, "slots": worker.slots, "heartbeat_at": now,
                      **fields},
             "$setOnInsert": {"started_at": now}},
            upsert=True,
        )

    def worker_gone(self, worker: WorkerIdentity) -> None:
        self.workers.update_one({"_id": worker.name}, {"$set": {"heartbeat_at": 0.0}})

    def alive_workers(self, queue: str, *, now: float, lease_s: float) -> list[dict[str, Any]]:
        return list(self.workers.find({"queue": queue, "heartbeat_at": {"$gt": now - lease_s}}))


def trial_id(exp_id: str, tid: int) -> str:
    """A trial document's ``_id``. Every read or write of one trial (claim, lease,
    result, the tuner's re-read of the trials in flight) goes through it: the primary
    key is indexed on every server, where nx-27017 scans the whole collection for an
    ``{exp_key, tid}`` query despite the index (~10 ms per 10,000 trials)."""
    return f"{exp_id}:{tid}"


def _one(exp_id: str, tid: int, **conditions: Any) -> dict[str, Any]:
    return {"_id": trial_id(exp_id, tid), **conditions}


def lost_run(attempt: int, worker: str | None, reason: str, now: float, *,
             counted: bool = True) -> dict[str, Any]:
    """An entry of a trial's ``attempts`` history: one run that did not finish."""
    return {"attempt": attempt, "worker": worker, "reason": reason, "at": now,
            "counted": counted}


def lost_runs(doc: dict[str, Any]) -> int:
    """How many runs of the trial were lost in a way that counts toward the cap."""
    return sum(1 for entry in doc.get("attempts") or [] if entry.get("counted", True))
