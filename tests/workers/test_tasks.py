"""The trial task against real workers: redelivery, refused input, result validation."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

import objectives
import pytest
from hyperopt import hp, rand

from broker.celery_app import create_app, send_trial
from broker.trial_doc import TrialState, flat_vals, state_of
from sdk import hyper_tune
from tests.helpers import make_experiment, unique, wait_for

pytestmark = pytest.mark.usefixtures("workers")

EVIL_MARKER = Path(tempfile.gettempdir()) / f"tuner-evil-marker-{os.getuid()}"


def _finished(store, exp_id, tid):
    doc = store.trial(exp_id, tid)
    return doc if doc and state_of(doc).is_finished else None


def test_a_trial_delivered_twice_runs_once(settings, store, workers, tmp_path):
    runs = tmp_path / "runs.log"
    space = {"x": hp.uniform("x", -1, 1), "log": str(runs), "sleep": 0.5}
    experiment, (tid,) = make_experiment(store, settings, objectives.logged, space, 1)
    app = create_app(settings)
    for _ in range(2):
        send_trial(app, experiment["_id"], tid, queue=settings.queue)

    doc = wait_for(lambda: _finished(store, experiment["_id"], tid), message="the trial")
    wait_for(lambda: any("nothing to do" in workers.log(n) and f"{experiment['_id']}/{tid}"
                         in workers.log(n) for n in workers.processes),
             message="the second delivery to be consumed")
    assert state_of(doc) is TrialState.OK
    assert doc["attempt"] == 1
    assert len(runs.read_text().splitlines()) == 1


@pytest.fixture
def no_marker():
    EVIL_MARKER.unlink(missing_ok=True)
    yield
    assert not EVIL_MARKER.exists(), "planted code ran on a worker"


@pytest.mark.usefixtures("no_marker")
def test_a_tampered_spec_is_refused_and_nothing_in_it_runs(settings, store):
    experiment, tids = make_experiment(store, settings, objectives.quadratic,
                                       {"x": hp.uniform("x", -1, 1)}, 3)
    spec = json.loads(experiment["spec"])
    spec["objective"] = {"kind": "module", "module": "evil", "qualname": "run", "root": ".",
                         "sha256": None}
    store.update_experiment(experiment["_id"], spec=json.dumps(spec))  # old signature kept
    app = create_app(settings)
    send_trial(app, experiment["_id"], tids[0], queue=settings.queue)
    doc = wait_for(lambda: _finished(store, experiment["_id"], tids[0]), message="refusal")
    assert state_of(doc) is TrialState.FAIL
    assert "signature does not match" in doc["result"]["failure"]["message"]

    store.update_experiment(experiment["_id"], spec_signature=None)  # planted, unsigned
    send_trial(app, experiment["_id"], tids[1], queue=settings.queue)
    doc = wait_for(lambda: _finished(store, experiment["_id"], tids[1]), message="refusal")
    assert "not signed" in doc["result"]["failure"]["message"]

    planted = pickle.dumps({"FMinIter_Domain": "pretend this is a pickled domain"})
    store.update_experiment(experiment["_id"], spec=planted, spec_signature="00" * 32)
    send_trial(app, experiment["_id"], tids[2], queue=settings.queue)
    doc = wait_for(lambda: _finished(store, experiment["_id"], tids[2]), message="refusal")
    assert state_of(doc) is TrialState.FAIL


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {EVIL_MARKER}",))


@pytest.mark.usefixtures("no_marker")
def test_a_pickled_message_is_refused_and_the_worker_keeps_working(settings, store, workers):
    app = create_app(settings)
    app.conf.accept_content = ["json", "pickle"]  # the attacker's client, not ours
    app.send_task("workers.evaluate_trial", args=[_Evil(), 0], queue=settings.queue,
                  serializer="pickle")
    wait_for(lambda: any("untrusted content" in workers.log(n) for n in workers.processes),
             message="a worker to report the refused message")
    result = hyper_tune(objectives.quadratic, {"x": hp.uniform("x", -1, 1)}, algo=rand.suggest,
                        max_evals=4, name=unique("after-pickle"), settings=settings)
    assert result["trials"]["ok"] == 4


RETURNS = ["nan", "inf", "none", "string", "no_loss", "bad_status", "not_json", "big", "good"]
REASONS = {
    "nan": "loss is NaN",
    "inf": "loss is +inf",
    "none": "objective returned NoneType None",
    "string": "objective returned str '0.5'",
    "no_loss": "status 'ok' but no 'loss'",
    "bad_status": "unknown status 'great'",
    "not_json": "result['obj'] is object",
    "big": "bytes of JSON; the limit is",
}


def test_malformed_returns_fail_with_a_specific_reason(settings, store):
    result = hyper_tune(
        objectives.returns, {"value": hp.choice("value", RETURNS)}, algo=rand.suggest,
        max_evals=len(RETURNS), name=unique("returns"), settings=settings,
        points_to_evaluate=[{"value": i} for i in range(len(RETURNS))])
    docs = store.find_trials(result["experiment_id"])
    by_value = {RETURNS[flat_vals(d)["value"]]: d for d in docs}
    assert set(by_value) == set(RETURNS)
    for value, reason in REASONS.items():
        doc = by_value[value]
        assert state_of(doc) is TrialState.FAIL, value
        assert doc["result"]["failure"]["kind"] == "invalid_result"
        assert reason in doc["result"]["failure"]["message"], (value, doc["result"])
        assert "loss" not in doc["result"]
    assert state_of(by_value["good"]) is TrialState.OK
    assert result["best_loss"] == pytest.approx(3.141592653589793)
    assert result["trials"] == {"queued": 0, "running": 0, "ok": 1, "fail": 8, "timeout": 0,
                                "cancelled": 0}
