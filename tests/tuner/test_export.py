"""Exports of a real experiment: CSV and JSON read back to the same values; TensorBoard
read back with TensorBoard's own event reader, one HParams session per trial; the
MLflow callback against a recording client (and a real MLflow when it is installed)."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from broker.errors import TunerError
from broker.trial_doc import TrialState, state_of
from tests.tuner.test_dashboard_http import run_small_experiment
from tuner import cli, cli_results, report
from tuner.exports import export, safe_name
from tuner.exports.mlflow_callback import MlflowCallback, MlflowLogger

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture(scope="module")
def experiment(settings, store) -> dict[str, Any]:
    result = run_small_experiment(settings, n=12, seed=21)
    doc = store.find_experiment(result["experiment_id"])
    return {"doc": doc, "docs": store.find_trials(doc["_id"])}


def _parse_cell(text: str) -> Any:
    """A CSV cell back to a value: empty is None, numbers are numbers."""
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def test_csv_and_json_exports_read_back_to_the_same_rows(store, experiment, tmp_path):
    name = experiment["doc"]["name"]
    expected = [report.trial_row(d) for d in experiment["docs"]]

    as_json = json.loads(export(store, name, "json", tmp_path).read_text())
    assert as_json == expected

    path = export(store, name, "csv", tmp_path)
    assert path == tmp_path / f"{name}.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(expected) == 12
    for row, want in zip(rows, expected, strict=True):
        assert {k: _parse_cell(v) for k, v in row.items() if k in want} == want
        assert all(row[k] == "" for k in row if k not in want)  # other branch's columns
    columns = set(rows[0])
    assert {"tid", "state", "loss", "duration_s", "started_at", "ended_at", "host", "gpu",
            "param.lr", "param.x", "param.opt.name"} <= columns


def test_tensorboard_export_has_one_hparams_session_per_trial(store, experiment, tmp_path):
    from tensorboard.backend.event_processing import event_multiplexer
    from tensorboard.plugins.hparams import api_pb2, metadata

    logdir = export(store, experiment["doc"]["_id"], "tensorboard", tmp_path)
    docs = experiment["docs"]
    reader = event_multiplexer.EventMultiplexer()
    reader.AddRunsFromDirectory(str(logdir))
    reader.Reload()
    content = reader.PluginRunToTagToContent(metadata.PLUGIN_NAME)

    config = metadata.parse_experiment_plugin_data(content["."][metadata.EXPERIMENT_TAG])
    infos = {h.name: h for h in config.hparam_infos}
    assert {"lr", "x", "opt", "momentum", "param.opt.name"} <= set(infos)
    assert infos["lr"].domain_interval.min_value == pytest.approx(math.exp(-9))
    assert infos["lr"].domain_interval.max_value == pytest.approx(math.exp(-1))
    assert (infos["x"].domain_interval.min_value, infos["x"].domain_interval.max_value) == (-5, 5)
    assert [v.number_value for v in infos["opt"].domain_discrete.values] == [0, 1]
    assert {v.string_value for v in infos["param.opt.name"].domain_discrete.values} <= {
        "sgd", "adam"}
    assert [m.name.tag for m in config.metric_infos] == ["loss", "duration_s"]

    sessions = {run: tags for run, tags in content.items()
                if metadata.SESSION_START_INFO_TAG in tags}
    assert len(sessions) == len(docs) == 12
    for doc in docs:
        run = f"trial-{doc['tid']:05d}"
        start = metadata.parse_session_start_info_plugin_data(
            sessions[run][metadata.SESSION_START_INFO_TAG])
        assert start.group_name == run
        vals = {k: v[0] for k, v in doc["misc"]["vals"].items() if v}
        assert {k: v.number_value for k, v in start.hparams.items()
                if not k.startswith("param.")} == pytest.approx(vals)
        assert start.hparams["param.opt.name"].string_value == doc["params"]["opt"]["name"]
        end = metadata.parse_session_end_info_plugin_data(
            sessions[run][metadata.SESSION_END_INFO_TAG])
        if state_of(doc) is TrialState.OK:
            assert end.status == api_pb2.STATUS_SUCCESS
            [loss] = reader.Scalars(run, "loss")
            assert loss.value == pytest.approx(doc["result"]["loss"], rel=1e-6)  # float32
        else:
            assert end.status == api_pb2.STATUS_FAILURE
            assert "loss" not in reader.GetAccumulator(run).Tags()["scalars"]


def test_export_refuses_unknown_experiments_and_formats(store, experiment, tmp_path):
    with pytest.raises(TunerError, match="no experiment"):
        export(store, "no-such-experiment", "csv", tmp_path)
    with pytest.raises(TunerError, match="unknown export format"):
        export(store, experiment["doc"]["name"], "xlsx", tmp_path)
    assert safe_name("../a b/c") == "_a_b_c"


def test_export_command_writes_the_files(store, experiment, settings, tmp_path, monkeypatch,
                                         capsys):
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    args = parser().parse_args(["experiments", "export", experiment["doc"]["name"],
                                "--format", "csv", "--out", str(tmp_path / "out")])
    assert args.handler(args) == 0
    assert (tmp_path / "out" / f"{experiment['doc']['name']}.csv").exists()
    assert "wrote" in capsys.readouterr().out


def parser() -> argparse.ArgumentParser:
    """``tuner.cli``'s parser with this module's commands added, as tuner/cli.py will."""
    parser = cli.build_parser()
    groups = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    experiments = groups.choices["experiments"]
    commands = next(a for a in experiments._actions
                    if isinstance(a, argparse._SubParsersAction))
    if "compare" not in commands.choices:
        cli_results.add_commands(groups, commands)
    return parser


# -- MLflow --------------------------------------------------------------------------------


@pytest.fixture
def mlflow_entities(monkeypatch):
    """``mlflow.entities`` (the logger builds its batches from it): the real one when
    mlflow is installed, otherwise a stand-in, so the logic is tested either way."""
    try:
        import mlflow.entities  # noqa: F401
    except ImportError:
        import sys
        from collections import namedtuple
        from types import ModuleType

        entities = ModuleType("mlflow.entities")
        entities.Metric = namedtuple("Metric", "key value timestamp step")
        entities.Param = namedtuple("Param", "key value")
        entities.RunTag = namedtuple("RunTag", "key value")
        package = ModuleType("mlflow")
        package.entities = entities
        monkeypatch.setitem(sys.modules, "mlflow", package)
        monkeypatch.setitem(sys.modules, "mlflow.entities", entities)


class RecordingClient:
    """The part of ``mlflow.tracking.MlflowClient`` the logger uses, in memory."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.experiments: dict[str, str] = {}

    def get_experiment_by_name(self, name: str) -> Any:
        exp_id = self.experiments.get(name)
        return None if exp_id is None else SimpleNamespace(experiment_id=exp_id)

    def create_experiment(self, name: str) -> str:
        self.experiments[name] = str(len(self.experiments))
        return self.experiments[name]

    def search_runs(self, experiment_ids: list[str], filter_string: str) -> list[Any]:
        wanted = filter_string.split("'")[1]
        return [SimpleNamespace(info=SimpleNamespace(run_id=run_id),
                                data=SimpleNamespace(tags=run["tags"]))
                for run_id, run in self.runs.items()
                if run["tags"].get("tuner.experiment_id") == wanted]

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str],
                   start_time: int | None = None) -> Any:
        run_id = f"run{len(self.runs)}"
        self.runs[run_id] = {"name": run_name, "tags": dict(tags), "params": {},
                             "metrics": {}, "status": "RUNNING"}
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id))

    def log_batch(self, run_id: str, metrics: list[Any], params: list[Any],
                  tags: list[Any]) -> None:
        run = self.runs[run_id]
        run["params"].update({p.key: p.value for p in params})
        run["metrics"].update({m.key: m.value for m in metrics})
        run["tags"].update({t.key: t.value for t in tags})

    def set_terminated(self, run_id: str, status: str, end_time: int | None = None) -> None:
        self.runs[run_id]["status"] = status


@pytest.mark.usefixtures("mlflow_entities")
def test_mlflow_callback_logs_each_finished_trial_once(experiment):
    client = RecordingClient()
    calls = []

    def early_stop(trials: Any, *args: Any) -> tuple[bool, list[Any]]:
        calls.append(args)
        return False, [len(calls)]

    callback = MlflowCallback(then=early_stop, logger=MlflowLogger(client=client))
    trials = SimpleNamespace(experiment=experiment["doc"], trials=experiment["docs"][:5])
    assert callback(trials) == (False, [1])
    trials.trials = experiment["docs"]
    assert callback(trials, 1) == (False, [2])
    children = {r["tags"]["tuner.tid"]: r for r in client.runs.values()
                if "tuner.tid" in r["tags"]}
    assert sorted(map(int, children)) == [d["tid"] for d in experiment["docs"]]
    for doc in experiment["docs"]:
        run = children[str(doc["tid"])]
        assert run["tags"]["mlflow.parentRunId"] == callback.logger.parent_run_id
        assert run["params"]["opt.name"] == doc["params"]["opt"]["name"]
        if state_of(doc) is TrialState.OK:
            assert run["status"] == "FINISHED"
            assert run["metrics"]["loss"] == doc["result"]["loss"]
        else:
            assert run["status"] == "FAILED" and "diverged" in run["tags"]["tuner.error"]
    # a new logger (a resumed experiment) finds what was logged and logs nothing twice
    again = MlflowLogger(client=client)
    assert again.log(experiment["doc"], experiment["docs"]) == []
    assert again.parent_run_id == callback.logger.parent_run_id


@pytest.mark.usefixtures("mlflow_entities")
def test_mlflow_failures_never_stop_the_tuning(experiment, caplog):

    class Down(RecordingClient):
        def create_run(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("mlflow is down")

    callback = MlflowCallback(logger=MlflowLogger(client=Down()))
    trials = SimpleNamespace(experiment=experiment["doc"], trials=experiment["docs"])
    assert callback(trials) == (False, [])
    assert "MLflow logging failed" in caplog.text


def test_mlflow_logger_with_a_real_file_store(experiment, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    logger = MlflowLogger(tracking_uri=uri)
    assert len(logger.log(experiment["doc"], experiment["docs"])) == 12
    client = MlflowClient(uri)
    mlflow_exp = client.get_experiment_by_name(experiment["doc"]["name"])
    runs = client.search_runs([mlflow_exp.experiment_id], max_results=100)
    assert len(runs) == 13  # the parent and one run per trial


def test_without_mlflow_the_callback_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mlflow(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("mlflow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(TunerError, match="pip install mlflow"):
        MlflowCallback()


def test_parser_has_the_results_commands():
    args = parser().parse_args(["experiments", "compare", "a", "b", "--format", "json"])
    assert args.names == ["a", "b"] and args.format == "json"
    args = parser().parse_args(["dashboard", "--port", "0"])
    assert args.port == 0 and args.host == "127.0.0.1"
    assert Path(cli_results.__file__).name == "cli_results.py"
