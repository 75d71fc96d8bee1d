"""Every JSON endpoint the dashboard page uses, over HTTP, against the MongoDB wire server
filled by a real experiment run by the real workers."""

from __future__ import annotations

import gzip
import json
import math
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import objectives
import pytest
from hyperopt import hp, rand

from broker.settings import Settings
from broker.trial_doc import TrialState, state_of
from sdk import hyper_tune
from tests.helpers import unique
from tuner.dashboard import DashboardServer

pytestmark = pytest.mark.usefixtures("workers")

SPACE = {
    "lr": hp.loguniform("lr", -9, -1),
    "x": hp.uniform("x", -5, 5),
    "opt": hp.choice("opt", [{"name": "sgd", "momentum": hp.uniform("momentum", 0.5, 0.99)},
                             {"name": "adam"}]),
    "sleep": 0.0,
}


def run_small_experiment(settings: Settings, *, n: int = 16, seed: int = 3,
                         name: str | None = None, sleep: float = 0.0) -> dict[str, Any]:
    """A real experiment through the workers: ``n`` trials of ``objectives.dashboard_model``
    over :data:`SPACE` (some fail, each logs a line). Returns ``hyper_tune``'s summary."""
    return hyper_tune(objectives.dashboard_model, {**SPACE, "sleep": sleep},
                      algo=rand.suggest, max_evals=n, name=name or unique("dash"),
                      settings=settings, rstate=np.random.default_rng(seed))


def get(server: DashboardServer, path: str, *, headers: dict[str, str] | None = None
        ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(server.url.rstrip("/") + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(server: DashboardServer, path: str, status: int = 200) -> Any:
    code, headers, body = get(server, path)
    assert code == status, (path, code, body[:300])
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


@pytest.fixture(scope="module")
def experiment(settings, store):
    result = run_small_experiment(settings)
    docs = store.find_trials(result["experiment_id"])
    assert {state_of(d) for d in docs} == {TrialState.OK, TrialState.FAIL}  # both kinds
    return {"id": result["experiment_id"], "name": result["experiment"], "docs": docs,
            "result": result}


@pytest.fixture(scope="module")
def server(store):
    with DashboardServer(store, port=0).start() as server:
        yield server


def test_experiments_lists_counts_best_loss_and_duration(server, experiment):
    data = get_json(server, "/api/experiments")
    row = next(e for e in data["experiments"] if e["id"] == experiment["id"])
    docs = experiment["docs"]
    ok = [d for d in docs if state_of(d) is TrialState.OK]
    assert row["name"] == experiment["name"] and row["state"] == "finished"
    assert row["algo"] == "hyperopt.rand.suggest"
    assert row["counts"] == {"queued": 0, "running": 0, "ok": len(ok),
                             "fail": len(docs) - len(ok), "timeout": 0, "cancelled": 0}
    # (nx-27017's $min keeps 15 significant digits)
    assert row["best_loss"] == pytest.approx(min(d["result"]["loss"] for d in ok), rel=1e-13)
    assert row["started_at"] and row["duration_s"] > 0


def test_summary_describes_space_counts_and_best_trial(server, experiment):
    data = get_json(server, f"/api/experiments/{experiment['id']}")
    by_name = get_json(server, f"/api/experiments/{experiment['name']}")
    assert by_name["experiment"]["id"] == data["experiment"]["id"] == experiment["id"]
    assert "spec" not in data["experiment"]
    space = {p["label"]: p for p in data["space"]}
    assert set(space) == {"lr", "x", "opt", "momentum"}
    assert space["lr"]["log"] and not space["x"]["log"]
    assert space["lr"]["range"] == pytest.approx([math.exp(-9), math.exp(-1)])
    assert space["opt"]["categorical"] and space["opt"]["range"] == [0, 1]
    assert sum(data["counts"].values()) == 16
    best = data["best"]
    assert best["loss"] == experiment["result"]["best_loss"]
    assert best["param.opt.name"] == experiment["result"]["best"]["opt"]["name"]
    assert data["seq"] == 16 and data["epoch"]


def test_trials_page_sorts_filters_and_flattens_parameters(server, experiment):
    base = f"/api/experiments/{experiment['id']}/trials"
    page = get_json(server, f"{base}?sort=tid&offset=0&limit=5")
    columns = page["columns"]
    assert page["total"] == 16 and len(page["rows"]) == 5
    assert [r[columns.index("tid")] for r in page["rows"]] == [0, 1, 2, 3, 4]
    # parameters as space_eval gives them, the hp.choice as the branch it took
    assert {"param.lr", "param.x", "param.opt.name", "param.opt.momentum"} <= set(columns)
    docs = {d["tid"]: d for d in experiment["docs"]}
    for row in page["rows"]:
        doc = docs[row[columns.index("tid")]]
        assert row[columns.index("param.opt.name")] == doc["params"]["opt"]["name"]
        assert row[columns.index("host")] == doc["host"]

    desc = get_json(server, f"{base}?sort=tid&desc=1&offset=5&limit=5")
    assert [r[columns.index("tid")] for r in desc["rows"]] == [10, 9, 8, 7, 6]

    by_loss = get_json(server, f"{base}?sort=loss&limit=50")
    states = [r[by_loss["columns"].index("state")] for r in by_loss["rows"]]
    losses = [r[by_loss["columns"].index("loss")] for r in by_loss["rows"] if r[1] == "ok"]
    n_ok = states.count("ok")
    assert states[:n_ok] == ["ok"] * n_ok  # best first, failures after
    assert losses == sorted(losses)

    by_param = get_json(server, f"{base}?sort=param.x&desc=1&limit=50")
    xs = [r[by_param["columns"].index("param.x")] for r in by_param["rows"]]
    assert xs == sorted(xs, reverse=True)

    failed = get_json(server, f"{base}?state=fail&limit=50")
    assert failed["total"] == sum(1 for d in docs.values() if state_of(d) is TrialState.FAIL)
    assert {r[failed["columns"].index("state")] for r in failed["rows"]} == {"fail"}
    assert all("diverged" in r[failed["columns"].index("error")] for r in failed["rows"])


def test_trial_detail_has_params_result_timings_host_gpu_and_log_tail(server, experiment):
    doc = next(d for d in experiment["docs"] if state_of(d) is TrialState.FAIL)
    data = get_json(server, f"/api/experiments/{experiment['id']}/trials/{doc['tid']}")
    assert data["tid"] == doc["tid"] and data["state"] == "fail"
    assert data["params"] == doc["params"]
    assert data["vals"] == {k: v[0] for k, v in doc["misc"]["vals"].items() if v}
    assert "diverged" in data["result"]["failure"]["message"]
    assert "ValueError" in data["result"]["failure"]["traceback"]
    assert data["timings"]["started_at"] <= data["timings"]["ended_at"]
    assert data["host"] == doc["host"] and data["worker"] == doc["worker"] and "gpu" in data
    assert "training" in data["log_tail"]
    assert "lease" not in data and "spec_signature" not in data
    get_json(server, f"/api/experiments/{experiment['id']}/trials/999", status=404)
    get_json(server, f"/api/experiments/{experiment['id']}/trials/abc", status=400)


def test_points_give_a_sample_then_only_what_finished_since(server, experiment):
    base = f"/api/experiments/{experiment['id']}/points"
    first = get_json(server, base)
    ok = {d["tid"]: d for d in experiment["docs"] if state_of(d) is TrialState.OK}
    assert first["reset"] and first["total"] == len(ok)
    assert first["labels"] == ["lr", "momentum", "opt", "x"]
    for tid, loss, lr, momentum, opt, x in first["rows"]:
        vals = ok[tid]["misc"]["vals"]
        assert loss == pytest.approx(ok[tid]["result"]["loss"], rel=1e-6)
        assert (lr, opt, x) == pytest.approx((vals["lr"][0], vals["opt"][0], vals["x"][0]),
                                             rel=1e-6)
        assert (momentum is None) == (not vals["momentum"])  # only on the sgd branch
    delta = get_json(server, f"{base}?after={first['seq']}&epoch={first['epoch']}")
    assert not delta["reset"] and delta["rows"] == []
    stale = get_json(server, f"{base}?after={first['seq']}&epoch=old")
    assert stale["reset"] and len(stale["rows"]) == len(ok)


def test_curve_holds_the_improvements_by_trial_and_by_time(server, experiment):
    curve = get_json(server, f"/api/experiments/{experiment['id']}/curve")
    ok = sorted((d for d in experiment["docs"] if state_of(d) is TrialState.OK),
                key=lambda d: d["tid"])
    expected, best = [], math.inf
    for doc in ok:
        if doc["result"]["loss"] < best:
            best = doc["result"]["loss"]
            expected.append([doc["tid"], best])
    assert curve["by_trial"] == expected
    losses = [p[1] for p in curve["by_time"]]
    assert losses == sorted(losses, reverse=True) and losses[-1] == best
    assert curve["last_tid"] == ok[-1]["tid"]


def test_lanes_show_recent_trials_per_worker(server, experiment, workers):
    data = get_json(server, f"/api/experiments/{experiment['id']}/lanes")
    lanes = {lane["id"]: lane for lane in data["lanes"]}
    used = {d["worker"] for d in experiment["docs"]}
    assert used <= set(lanes)
    assert set(workers.alive()) <= {i for i, lane in lanes.items() if lane["alive"]}
    assert len(data["bars"]) == 16
    for lane_id, _tid, start, end, state in data["bars"]:
        assert lane_id in lanes and start <= end and state in ("ok", "fail")


def test_importance_scores_every_parameter(server, experiment):
    data = get_json(server, f"/api/experiments/{experiment['id']}/importance")
    scores = {s["label"]: s for s in data["scores"]}
    assert {"lr", "x", "opt"} <= set(scores)
    assert all(0 <= s["score"] <= 1 for s in scores.values())
    assert "epsilon" in data["measure"]


def test_compare_returns_curves_and_best_trials(server, experiment, settings):
    other = run_small_experiment(settings, n=8, seed=11)
    data = get_json(server, f"/api/compare?e={experiment['id']}&e={other['experiment']}")
    first, second = data["experiments"]
    assert first["name"] == experiment["name"] and second["name"] == other["experiment"]
    assert first["best_loss"] == experiment["result"]["best_loss"]
    assert second["best_loss"] == other["best_loss"]
    assert first["curve"]["by_trial"][-1][1] == first["best_loss"]
    assert first["best_trial"]["tid"] == first["best_tid"]
    get_json(server, "/api/compare", status=400)
    get_json(server, "/api/compare?e=no-such-experiment", status=404)


def test_bad_requests_and_unknown_things_get_clear_errors(server, experiment):
    base = f"/api/experiments/{experiment['id']}"
    assert "no experiment" in get_json(server, "/api/experiments/nope", status=404)["error"]
    assert "sort" in get_json(server, f"{base}/trials?sort=__proto__", status=400)["error"]
    assert "state" in get_json(server, f"{base}/trials?state=done", status=400)["error"]
    get_json(server, f"{base}/trials?offset=-1", status=400)
    get_json(server, f"{base}/nothing", status=404)
    # a page on another origin cannot read the API through a rebound DNS name
    code, _, _ = get(server, "/api/experiments", headers={"Host": "attacker.example:80"})
    assert code == 403


def test_the_page_and_its_scripts_come_from_the_server(server):
    code, headers, page = get(server, "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b"/static/plotly.min.js" in page and b"/static/app.js" in page
    assert b"http://" not in page and b"https://" not in page  # no CDN
    code, headers, body = get(server, "/static/plotly.min.js",
                              headers={"Accept-Encoding": "gzip"})
    assert code == 200 and headers["Content-Encoding"] == "gzip"
    assert b"plotly" in gzip.decompress(body)[:2000].lower()
    code, _, _ = get(server, "/static/plotly.min.js", headers={"If-None-Match": headers["ETag"]})
    assert code == 304
    code, _, script = get(server, "/static/app.js")
    assert code == 200 and b".innerHTML" not in script  # data only enters via textContent
    assert get(server, "/static/../server.py")[0] == 404
