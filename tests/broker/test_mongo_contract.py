"""The MongoDB behaviours the trial store relies on, pinned.

Runs against the embedded nx-27017 server by default; set ``TUNER_TEST_MONGO_URL`` to
hold a real MongoDB to the same contract. Known deviations of nx-27017 that the store
works around (and so does not rely on):

* ``find_one_and_update`` with an ``$or`` *beside* other top-level fields can update a
  document that does not match the other fields: the store uses no ``$or``.
* ``$push`` of a sub-document stores it as a JSON string: the store rewrites lists with
  ``$set`` under a fencing condition instead.
* datetimes may come back as ISO strings: the store keeps times as float seconds.
* a query on other fields scans the whole collection even when an index covers it:
  single trials are addressed by a string ``_id`` (``broker.store.trial_id``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pymongo
import pytest
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from broker.settings import Settings
from tests.helpers import unique


@pytest.fixture
def coll(settings: Settings) -> Iterator[pymongo.collection.Collection]:
    url = os.environ.get("TUNER_TEST_MONGO_URL") or settings.mongo_url
    client: pymongo.MongoClient = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    collection = client["tuner_contract"][unique("c").replace("-", "_")]
    yield collection
    collection.drop()
    client.close()


def test_unique_compound_index_rejects_duplicates(coll):
    coll.create_index([("exp_key", 1), ("tid", 1)], unique=True)
    coll.insert_many([{"exp_key": "e", "tid": 0}, {"exp_key": "e", "tid": 1},
                      {"exp_key": "f", "tid": 0}])
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"exp_key": "e", "tid": 1})
    assert coll.count_documents({}) == 3


def test_string_ids_address_single_documents_with_conditions(coll):
    coll.insert_many([{"_id": f"e:{t}", "exp_key": "e", "tid": t, "state": 0}
                      for t in range(5)])
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": "e:3", "exp_key": "e", "tid": 3})
    assert coll.find_one_and_update({"_id": "e:2", "state": 1}, {"$set": {"state": 2}}) is None
    before = coll.find_one_and_update({"_id": "e:2", "state": 0}, {"$set": {"state": 1}})
    assert (before["tid"], before["state"]) == (2, 0)
    assert coll.update_one({"_id": "e:9", "state": 0}, {"$set": {"x": 1}}).matched_count == 0
    found = coll.find({"_id": {"$in": ["e:4", "e:1", "e:7"]}, "state": 0}, {"_id": 0})
    assert [d["tid"] for d in found.sort("tid", 1)] == [1, 4]


def test_conditional_find_one_and_update_is_atomic_across_clients(coll, settings):
    coll.insert_one({"k": 1, "state": 0})
    winners = []
    url = os.environ.get("TUNER_TEST_MONGO_URL") or settings.mongo_url

    def claim(i: int) -> None:
        client: pymongo.MongoClient = pymongo.MongoClient(url)
        doc = client[coll.database.name][coll.name].find_one_and_update(
            {"k": 1, "state": 0}, {"$set": {"state": 1, "owner": i}})
        if doc is not None:
            winners.append(i)
        client.close()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert coll.find_one({"k": 1})["owner"] == winners[0]


def test_conditional_update_touches_only_the_matching_document(coll):
    coll.insert_many([{"exp_key": "e", "tid": t, "state": s} for t, s in
                      ((0, 1), (1, 0), (2, 0), (3, 2))])
    claimed = coll.find_one_and_update({"exp_key": "e", "tid": 2, "state": 0},
                                       {"$set": {"state": 1}, "$inc": {"attempt": 1}},
                                       return_document=ReturnDocument.BEFORE)
    assert claimed["tid"] == 2 and claimed["state"] == 0
    assert coll.find_one_and_update({"exp_key": "e", "tid": 0, "state": 0},
                                    {"$set": {"state": 1}}) is None
    assert {d["tid"]: (d["state"], d.get("attempt")) for d in coll.find()} == {
        0: (1, None), 1: (0, None), 2: (1, 1), 3: (2, None)}


def test_dotted_range_query_does_not_match_a_null_parent(coll):
    coll.insert_many([{"k": 1, "lease": None}, {"k": 2, "lease": {"expires_at": 1.0}}])
    assert [d["k"] for d in coll.find({"lease.expires_at": {"$lt": 5.0}})] == [2]


def test_return_document_before_and_after_and_projection(coll):
    coll.insert_one({"k": 1, "n": 5, "big": "x" * 100})
    before = coll.find_one_and_update({"k": 1}, {"$inc": {"n": 3}},
                                      projection={"n": 1}, return_document=ReturnDocument.BEFORE)
    after = coll.find_one_and_update({"k": 1}, {"$inc": {"n": 2}},
                                     projection={"n": 1, "_id": 0},
                                     return_document=ReturnDocument.AFTER)
    assert before["n"] == 5 and "big" not in before
    assert after == {"n": 10}


def test_fenced_update_reports_whether_it_matched(coll):
    coll.insert_one({"k": 1, "state": 1, "lease": {"token": "a"}})
    assert coll.update_one({"k": 1, "lease.token": "b", "state": 1},
                           {"$set": {"state": 2}}).matched_count == 0
    assert coll.update_one({"k": 1, "lease.token": "a", "state": 1},
                           {"$set": {"state": 2, "lease": None}}).matched_count == 1
    assert coll.find_one({"k": 1})["state"] == 2


def test_values_round_trip_exactly(coll):
    doc = {"k": 1, "t": 1795785228.7132547, "small": 1e-300, "neg": -0.5, "i": 2**40,
           "none": None, "flag": True, "nested": {"a": [1, {"b": [2.5, None, "s"]}]},
           "attempts": [{"attempt": 1, "worker": "w@h", "at": 12.25}]}
    coll.insert_one(dict(doc))
    coll.update_one({"k": 1}, {"$set": {"attempts": [*doc["attempts"], {"attempt": 2}]}})
    back = coll.find_one({"k": 1}, {"_id": 0})
    assert back == {**doc, "attempts": [*doc["attempts"], {"attempt": 2}]}
    assert isinstance(back["t"], float) and isinstance(back["i"], int)


def test_query_operators_the_store_uses(coll):
    coll.insert_many([
        {"exp_key": "e", "tid": i, "state": i % 3, "result": {"status": "ok" if i % 2 else "fail"},
         "heartbeat_at": float(i)} for i in range(10)])
    assert coll.count_documents({"exp_key": "e", "state": {"$in": [0, 1]}}) == 7
    assert coll.count_documents({"exp_key": "e", "state": 2,
                                 "result.status": {"$ne": "ok"}}) == 2
    assert [d["tid"] for d in coll.find({"exp_key": "e", "tid": {"$in": [7, 2, 5]}}).sort(
        "tid", 1)] == [2, 5, 7]
    assert coll.count_documents({"heartbeat_at": {"$gt": 6.5}}) == 3
    assert coll.update_many({"exp_key": "e", "tid": {"$in": [1, 2]}, "state": {"$in": [1, 2]}},
                            {"$set": {"state": 4}}).modified_count == 2
    coll.update_one({"tid": 9}, {"$set": {"result.failure": {"kind": "timeout"}}})
    assert coll.count_documents({"exp_key": "e", "result.failure.kind": "timeout"}) == 1
    # $ne also matches documents that lack the field (a failure without "failure")
    assert coll.count_documents({"exp_key": "e", "result.failure.kind": {"$ne": "timeout"}}) == 9


def test_count_stage_and_sort_on_a_nested_field(coll):
    coll.insert_many([{"e": 1, "state": 2, "result": {"status": "ok", "loss": loss}}
                      for loss in (0.5, -1.25, 3.0)] + [{"e": 1, "state": 0}])
    count = list(coll.aggregate([{"$match": {"e": 1, "state": 2}}, {"$count": "n"}]))
    assert count == [{"n": 3}]
    # MongoDB returns no document when nothing matches; nx-27017 returns {"n": 0}
    assert list(coll.aggregate([{"$match": {"e": 2}}, {"$count": "n"}])) in ([], [{"n": 0}])
    best = coll.find_one({"e": 1, "result.status": "ok"}, sort=[("result.loss", 1)])
    assert best["result"]["loss"] == -1.25


def test_upsert_with_set_on_insert(coll):
    for now in (1.0, 2.0):
        coll.update_one({"_id": "w"}, {"$set": {"heartbeat_at": now},
                                       "$setOnInsert": {"started_at": now}}, upsert=True)
    assert coll.find_one({"_id": "w"}) == {"_id": "w", "heartbeat_at": 2.0, "started_at": 1.0}
