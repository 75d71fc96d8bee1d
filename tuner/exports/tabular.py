"""CSV and JSON exports: one row per trial, as ``experiments trials`` prints them.

Rows are :func:`tuner.report.trial_row`: ``tid``, ``state``, ``loss``, ``attempt``,
``host``, ``gpu``, ``worker``, ``duration_s``, ``started_at``, ``ended_at``, ``error`` and
the parameters flattened as the objective received them (``param.opt.lr``), or the raw
values (``val.LABEL``) for a trial that has not run yet. In CSV an empty cell is
``None`` and a list or dict cell is JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner import report


def rows(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [report.trial_row(doc) for doc in docs]


def write_csv(docs: list[dict[str, Any]], path: Path) -> Path:
    path.write_text(report.to_csv(rows(docs)), encoding="utf-8", newline="")
    return path


def write_json(docs: list[dict[str, Any]], path: Path) -> Path:
    path.write_text(report.to_json(rows(docs)) + "\n", encoding="utf-8")
    return path
