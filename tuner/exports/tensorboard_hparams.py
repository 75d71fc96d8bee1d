"""TensorBoard HParams export: one run per trial, the search space as HParams domains.

Written with the ``tensorboard`` package alone (no TensorFlow): the summaries are built
with ``tensorboard.plugins.hparams.summary_v2``'s protobuf helpers and written with
``tensorboard.summary.writer.event_file_writer.EventFileWriter``, the writer PyTorch's
``SummaryWriter`` uses. The layout is the one ``hp.hparams_config`` + ``hp.hparams``
produce in TensorFlow::

    LOGDIR/                      experiment config: every hyperparameter and its domain
    LOGDIR/trial-00042/          one run per trial: its values (session start), the
                                 scalars ``loss`` and ``duration_s``, and its end status

Open it with ``tensorboard --logdir LOGDIR`` (HPARAMS tab).

Hyperparameters are the search space's labels with the values the algorithm drew
(``misc.vals``: an ``hp.choice`` is its option index) and these domains:
``uniform``/``quniform`` -> ``RealInterval(low, high)``; ``loguniform``/``qloguniform``
-> ``RealInterval(exp(low), exp(high))``; ``randint``/``choice``/``pchoice`` ->
``Discrete`` option indices (``IntInterval`` above 64 options); ``normal`` and
``lognormal`` kinds are unbounded and get no domain. String-valued parameters as the
objective received them (the branch an ``hp.choice`` took, e.g. ``param.opt.name``) are
added as ``Discrete`` string hyperparameters of the values seen.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from broker.errors import ConfigError
from broker.trial_doc import TrialState, state_of
from tuner import report

DISCRETE_MAX = 64
"""Integer parameters with more options than this get an interval, not a list."""


def _tensorboard() -> Any:
    try:
        from tensorboard.plugins.hparams import summary_v2
    except ImportError:
        raise ConfigError("the TensorBoard export needs the tensorboard package: "
                          "pip install tensorboard") from None
    return summary_v2


def write_hparams(experiment: dict[str, Any], docs: list[dict[str, Any]], logdir: Path) -> Path:
    """Write ``docs`` (trial documents of ``experiment``) as a TensorBoard log directory."""
    hp = _tensorboard()
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    logdir.mkdir(parents=True, exist_ok=True)
    strings = _string_params(docs)
    hparams = [_hparam(hp, p) for p in experiment.get("params") or []]
    hparams += [hp.HParam(key, hp.Discrete(sorted(values))) for key, values in strings.items()]
    metrics = [hp.Metric("loss", display_name="loss"),
               hp.Metric("duration_s", display_name="duration (s)")]
    created = experiment.get("created_at") or experiment.get("started_at")
    _write(EventFileWriter, event_pb2, str(logdir), created, [
        (0, hp.hparams_config_pb(hparams=hparams, metrics=metrics, time_created_secs=created))])

    width = max(5, len(str(max((d["tid"] for d in docs), default=0))))
    for doc in docs:
        tid = doc["tid"]
        run = f"trial-{tid:0{width}d}"
        started = doc.get("started_at") or doc.get("queued_at")
        values: dict[str, Any] = {label: _number(v[0])
                                  for label, v in (doc["misc"].get("vals") or {}).items() if v}
        for key, value in report.flatten(doc.get("params") or {}).items():
            if f"param.{key}" in strings and isinstance(value, (str, bool)):
                values[f"param.{key}"] = str(value)
        summaries = [(0, hp.hparams_pb(values, trial_id=run, start_time_secs=started))]
        loss = (doc.get("result") or {}).get("loss")
        state = state_of(doc)
        if state is TrialState.OK and loss is not None:
            summaries.append((0, _scalar(summary_pb2, "loss", float(loss))))
        if doc.get("duration_s") is not None:
            summaries.append((0, _scalar(summary_pb2, "duration_s", float(doc["duration_s"]))))
        if state.is_finished:
            summaries.append((0, _session_end(summary_pb2, state, doc.get("ended_at"))))
        _write(EventFileWriter, event_pb2, str(logdir / run), started, summaries)
    return logdir


def _hparam(hp: Any, param: dict[str, Any]) -> Any:
    dist, args, label = param.get("dist"), param.get("args") or {}, param["label"]
    low, high = args.get("low"), args.get("high")
    domain = None
    if dist in ("uniform", "quniform") and low is not None and high is not None:
        domain = hp.RealInterval(float(low), float(high))
    elif dist in ("loguniform", "qloguniform") and low is not None and high is not None:
        domain = hp.RealInterval(math.exp(low), math.exp(high))
    elif dist in ("randint", "categorical"):
        first = int(low or 0)
        last = int(high) - 1 if high is not None else len(args.get("p") or []) - 1
        if last >= first:
            domain = (hp.Discrete(list(range(first, last + 1))) if last - first < DISCRETE_MAX
                      else hp.IntInterval(first, last))
    return hp.HParam(label, domain, description=f"hp.{dist} {args}" if dist else None)


def _string_params(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """``{"param.opt.name": {"adam", "sgd"}}``: string values the objective received."""
    seen: dict[str, set[str]] = {}
    for doc in docs:
        for key, value in report.flatten(doc.get("params") or {}).items():
            if isinstance(value, (str, bool)):
                seen.setdefault(f"param.{key}", set()).add(str(value))
    return seen


def _number(value: Any) -> float | int:
    return value if isinstance(value, int) and not isinstance(value, bool) else float(value)


def _scalar(summary_pb2: Any, tag: str, value: float) -> Any:
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])


def _session_end(summary_pb2: Any, state: TrialState, ended_at: float | None) -> Any:
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    status = {TrialState.OK: api_pb2.STATUS_SUCCESS, TrialState.FAIL: api_pb2.STATUS_FAILURE,
              TrialState.TIMEOUT: api_pb2.STATUS_FAILURE,
              TrialState.CANCELLED: api_pb2.STATUS_UNKNOWN}[state]
    # HParams has no "cancelled" status: a cancelled trial ends as STATUS_UNKNOWN
    info = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=ended_at or 0.0)
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=metadata.SESSION_END_INFO_TAG,
        metadata=metadata.create_summary_metadata(
            plugin_data_pb2.HParamsPluginData(session_end_info=info)),
        tensor=metadata.NULL_TENSOR)
    return summary


def _write(writer_cls: Any, event_pb2: Any, logdir: str, wall_time: float | None,
           summaries: list[tuple[int, Any]]) -> None:
    writer = writer_cls(logdir)
    try:
        for step, summary in summaries:
            writer.add_event(event_pb2.Event(wall_time=wall_time or 0.0, step=step,
                                             summary=summary))
    finally:
        writer.close()
