"""A seeded 10,000-trial experiment: the dashboard's page stays within a byte budget.

The trials are synthetic documents of the real shape (``misc.vals``, ``result``,
``params``, timings, host, GPU, log tail) inserted directly: this tests paging and
aggregation, not the tuner. The client below makes the requests ``app.js`` makes on an
experiment page's first load and on each live refresh, and counts the bytes received.

Budget (bytes on the wire, gzip as browsers ask for it; headers included):

* first load of the experiment page, JSON only: at most ``FIRST_LOAD_BUDGET``;
* one live refresh after a trial finished: at most ``REFRESH_BUDGET``.

Both also hold uncompressed, with looser bounds. The static assets (the page, its
script and Plotly's bundle) are fetched once and then revalidated with ETags.
"""

from __future__ import annotations

import gzip
import json
import math
import time
import urllib.request
from typing import Any

import numpy as np
import pytest
from hyperopt import hp
from hyperopt.pyll import scope

from broker import space as space_codec
from broker.store import TrialStore
from broker.trial_doc import EXP_KEY
from tests.helpers import unique
from tuner.dashboard import DashboardServer

N_TRIALS = 10_000
FIRST_LOAD_BUDGET = 64_000
REFRESH_BUDGET = 16_000
FIRST_LOAD_BUDGET_RAW = 160_000
REFRESH_BUDGET_RAW = 48_000

SPACE = {
    "lr": hp.loguniform("lr", -9, -1),
    "x": hp.uniform("x", -5, 5),
    "batch": scope.int(hp.quniform("batch", 16, 256, 16)),
    "opt": hp.choice("opt", [{"name": "sgd", "momentum": hp.uniform("momentum", 0.5, 0.99)},
                             {"name": "adam"}]),
}


def seed_experiment(store: TrialStore, n: int, *, name: str | None = None, running: int = 0,
                    seed: int = 0, t0: float | None = None) -> dict[str, Any]:
    """An experiment of ``n`` synthetic trials over :data:`SPACE` on 4 GPU workers.

    The last ``running`` trials are running; every 20th trial failed; the rest have
    ``loss = (x - 1)^2 + 0.1 * |log(lr) + 5| + noise``, so ``x`` matters most, ``lr``
    some, and ``batch`` not at all."""
    rng = np.random.default_rng(seed)
    t0 = time.time() - n if t0 is None else t0
    params = space_codec.describe(space_codec.validate(SPACE))
    experiment, _ = store.create_experiment(name or unique("big"), {
        "params": params, "queue": "trials.synthetic", "algo": "hyperopt.rand.suggest",
        "max_evals": n, "state": "running" if running else "finished", "started_at": t0,
        "space_fingerprint": "synthetic", "next_tid": n})
    exp_id = experiment["_id"]
    docs = []
    for tid in range(n):
        lr = float(math.exp(rng.uniform(-9, -1)))
        x = float(rng.uniform(-5, 5))
        batch = float(round(rng.uniform(16, 256) / 16) * 16)
        opt = int(rng.integers(2))
        momentum = float(rng.uniform(0.5, 0.99)) if opt == 0 else None
        vals = {"lr": [lr], "x": [x], "batch": [batch], "opt": [opt],
                "momentum": [momentum] if momentum is not None else []}
        gpu = tid % 4
        started = t0 + tid * 0.4
        is_running = tid >= n - running
        failed = tid % 20 == 19 and not is_running
        loss = (x - 1) ** 2 + 0.1 * abs(math.log(lr) + 5) + float(rng.normal(0, 0.05))
        doc: dict[str, Any] = {
            "state": 1 if is_running else 2, "tid": tid, "spec": None,
            "result": ({"status": "new"} if is_running else
                       {"status": "fail", "failure": {"kind": "exception",
                                                       "message": "ValueError: diverged"}}
                       if failed else {"status": "ok", "loss": loss}),
            "misc": {"tid": tid, "cmd": None, "workdir": None,
                     "idxs": {k: ([tid] if v else []) for k, v in vals.items()}, "vals": vals},
            EXP_KEY: exp_id, "owner": f"gpu{gpu}@node1", "version": 0,
            "book_time": started, "refresh_time": started + 1.5, "spec_signature": "0" * 64,
            "attempt": 1, "lease": None, "attempts": [], "queued_at": started - 0.1,
            "started_at": started, "worker": f"gpu{gpu}@node1", "host": "node1",
            "gpu": str(gpu), "log_tail": f"epoch 10/10 loss={loss:.4f}\n" * 4,
        }
        if not is_running:
            doc.update(ended_at=started + 1.5, duration_s=1.5, params={
                "lr": lr, "x": x, "batch": int(batch),
                "opt": {"name": "sgd", "momentum": momentum} if opt == 0 else {"name": "adam"}})
        docs.append(doc)
    for start in range(0, n, 2000):
        store.insert_trials(docs[start:start + 2000])
    return experiment


class Client:
    """Fetches like a browser (gzip) and counts the bytes it receives."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.wire = 0
        self.raw = 0

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.base + path,
                                         headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
            headers = sum(len(k) + len(v) + 4 for k, v in response.getheaders()) + 17
            self.wire += len(body) + headers
            if response.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            self.raw += len(body) + headers
        return json.loads(body)

    def reset(self) -> tuple[int, int]:
        counts = (self.wire, self.raw)
        self.wire = self.raw = 0
        return counts


def load_page(client: Client, exp_id: str) -> dict[str, Any]:
    """The requests app.js makes when an experiment page opens."""
    summary = client.get(f"/api/experiments/{exp_id}")
    client.get(f"/api/experiments/{exp_id}/trials?sort=tid&desc=1&offset=0&limit=25")
    points = client.get(f"/api/experiments/{exp_id}/points")
    client.get(f"/api/experiments/{exp_id}/curve")
    client.get(f"/api/experiments/{exp_id}/lanes")
    client.get(f"/api/experiments/{exp_id}/importance")
    return {"summary": summary, "points": points}


def refresh_page(client: Client, exp_id: str, state: dict[str, Any]) -> dict[str, Any]:
    """The requests of one live refresh in which trials finished."""
    summary = client.get(f"/api/experiments/{exp_id}")
    points = state["points"]
    new = client.get(f"/api/experiments/{exp_id}/points?after={points['seq']}"
                     f"&epoch={points['epoch']}")
    client.get(f"/api/experiments/{exp_id}/trials?sort=tid&desc=1&offset=0&limit=25")
    client.get(f"/api/experiments/{exp_id}/curve")
    client.get(f"/api/experiments/{exp_id}/lanes")
    client.get(f"/api/experiments/{exp_id}/importance")
    return {"summary": summary, "points": new}


@pytest.fixture(scope="module")
def big(store):
    """The seeded experiment in a database of its own (dropped afterwards), so that 10,000
    documents do not slow down the other tests' queries on the shared one."""
    own = TrialStore(store.client, unique("tuner_scale").replace("-", "_"))
    own.ensure_indexes()
    experiment = seed_experiment(own, N_TRIALS, running=4)
    try:
        with DashboardServer(own, port=0).start() as server:
            yield experiment, server, own
    finally:
        store.client.drop_database(own.db.name)


def test_first_load_and_live_refresh_of_10k_trials_stay_within_budget(big):
    experiment, server, store = big
    exp_id = experiment["_id"]
    client = Client(server.url)

    state = load_page(client, exp_id)
    first_wire, first_raw = client.reset()
    summary, points = state["summary"], state["points"]
    assert sum(summary["counts"].values()) == N_TRIALS and summary["counts"]["running"] == 4
    assert points["reset"] and points["total"] == 9_497  # 499 failed, 4 running
    assert len(points["rows"]) == 1000

    # one running trial finishes: the refresh carries just it
    tid = N_TRIALS - 4
    store.trials.update_one({EXP_KEY: exp_id, "tid": tid}, {"$set": {
        "state": 2, "result": {"status": "ok", "loss": -1.0}, "ended_at": time.time(),
        "duration_s": 1.0, "params": {"lr": 0.01, "x": 1.0, "batch": 32,
                                      "opt": {"name": "adam"}}}})
    time.sleep(0.6)  # the index shares one refresh per 0.5 s between a tick's requests
    state = refresh_page(client, exp_id, state)
    refresh_wire, refresh_raw = client.reset()
    assert state["summary"]["counts"]["running"] == 3
    assert state["summary"]["best"]["tid"] == tid
    assert not state["points"]["reset"] and [r[0] for r in state["points"]["rows"]] == [tid]

    print(f"\n10,000 trials: first load {first_wire} B on the wire ({first_raw} B "
          f"uncompressed); refresh {refresh_wire} B ({refresh_raw} B uncompressed)")
    assert first_wire <= FIRST_LOAD_BUDGET, first_wire
    assert refresh_wire <= REFRESH_BUDGET, refresh_wire
    assert first_raw <= FIRST_LOAD_BUDGET_RAW, first_raw
    assert refresh_raw <= REFRESH_BUDGET_RAW, refresh_raw


def test_table_pages_sort_and_filter_on_the_server(big):
    experiment, server, _ = big
    client = Client(server.url)
    exp_id = experiment["_id"]
    page = client.get(f"/api/experiments/{exp_id}/trials?sort=loss&offset=0&limit=50")
    assert page["total"] == N_TRIALS and len(page["rows"]) == 50
    loss = page["columns"].index("loss")
    losses = [row[loss] for row in page["rows"]]
    assert losses == sorted(losses)
    failed = client.get(f"/api/experiments/{exp_id}/trials?state=fail&limit=10&offset=20")
    assert failed["total"] == 499 and len(failed["rows"]) == 10
    state = failed["columns"].index("state")
    assert {row[state] for row in failed["rows"]} == {"fail"}
    assert client.raw < 40_000
