"""Flat views of experiments and trials for the CLI (tables, JSON, CSV)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from broker.trial_doc import state_of


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"opt": {"name": "sgd", "lr": 0.1}}`` -> ``{"opt.name": "sgd", "opt.lr": 0.1}``."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1] if prefix else "value": value}


def trial_row(doc: dict[str, Any]) -> dict[str, Any]:
    result = doc.get("result") or {}
    failure = result.get("failure") or {}
    row: dict[str, Any] = {
        "tid": doc["tid"],
        "state": state_of(doc).value,
        "loss": result.get("loss"),
        "attempt": doc.get("attempt"),
        "host": doc.get("host"),
        "gpu": doc.get("gpu"),
        "worker": doc.get("worker"),
        "duration_s": _round(doc.get("duration_s")),
        "started_at": doc.get("started_at"),
        "ended_at": doc.get("ended_at"),
        "error": failure.get("message"),
    }
    if doc.get("params") is not None:
        row.update({f"param.{k}": v for k, v in flatten(doc["params"]).items()})
    else:
        row.update({f"val.{k}": v[0] for k, v in doc["misc"]["vals"].items() if v})
    return row


def experiment_row(doc: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    best = doc.get("best") or {}
    started, ended = doc.get("started_at"), doc.get("ended_at")
    return {
        "name": doc["name"],
        "id": doc["_id"],
        "state": doc.get("state"),
        "algo": doc.get("algo"),
        "ok": counts.get("ok", 0),
        "fail": counts.get("fail", 0),
        "running": counts.get("running", 0),
        "queued": counts.get("queued", 0),
        "best_loss": best.get("loss"),
        "started_at": started,
        "duration_s": _round(ended - started) if started and ended else None,
    }


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, default=str)


def to_csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
