"""Views of fleet results for the CLI: one JSON object or one table row per host.

Every ``cluster`` command reports every host: what it returned or why it failed (the
step and the reason, for provisioning also the tail of the failing command's output).
Exception texts are shown as plain text, never as Rich markup (a host such as
``[fe80::1]`` would otherwise vanish).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from workers.provisioning import FleetResult, HostReport, HostState, StopReport, WorkerState


def _failed(exc: BaseException, prefix: str = "failed") -> Text:
    return Text.assemble((prefix, "red"), f": {exc}")


def _ok() -> Text:
    return Text("ok", style="green")


def _report(outcome: object) -> HostReport | None:
    """The host's report, also for a host whose workers failed after it was prepared."""
    if isinstance(outcome, HostReport):
        return outcome
    report = getattr(outcome, "report", None)
    return report if isinstance(report, HostReport) else None


# -- provision ---------------------------------------------------------------------------------


def provision_json(result: FleetResult[HostReport]) -> dict[str, Any]:
    """Host -> ``ok``, ``error``/``step`` when it failed, its GPUs, what changed and each
    worker's outcome."""
    rows: dict[str, Any] = {}
    for name, outcome in result.items():
        row: dict[str, Any] = {"ok": not isinstance(outcome, BaseException)}
        if isinstance(outcome, BaseException):
            row.update(error=str(outcome), step=getattr(outcome, "step", None))
        report = _report(outcome)
        if report is not None:
            row.update(python=report.python, gpus=[asdict(g) for g in report.gpus],
                       changed=report.changed, others=report.others,
                       workers=[asdict(w) for w in report.workers])
        rows[name] = row
    return rows


def print_provisioned(result: FleetResult[HostReport], out: Console) -> None:
    """One row per host: what changed and each worker's state; then each failed host
    with the step that failed, why, and the last output of the failing command."""
    table = Table(title="Provisioning")
    for column in ("host", "result", "GPUs", "workers", "changed"):
        table.add_column(column, overflow="fold")
    for name, outcome in result.items():
        report = _report(outcome)
        workers = ", ".join(f"{w.name} {w.action}" for w in report.workers) if report else ""
        if report and report.others:
            workers += f" (+ still running: {', '.join(report.others)})"
        gpus = str(len(report.gpus)) if report else ""
        changed = (", ".join(report.changed) or "nothing") if report else ""
        verdict = _failed(outcome) if isinstance(outcome, BaseException) else _ok()
        table.add_row(name, verdict, gpus, workers, changed)
    out.print(table)
    print_failures(result, out, with_output=True)


# -- status ------------------------------------------------------------------------------------


def _worker_json(worker: WorkerState) -> dict[str, Any]:
    return {"name": worker.name, "gpu": worker.gpu, "queue": worker.queue, "pid": worker.pid,
            "state": worker.state, "process_alive": worker.process_alive,
            "heartbeat_age_s": worker.heartbeat_age_s, "trial": worker.trial,
            "log": worker.log}


def status_json(result: FleetResult[HostState]) -> dict[str, Any]:
    """Host -> ``reachable``, its GPUs and its workers (state, heartbeat, trial), or the
    error that made it unreachable."""
    rows: dict[str, Any] = {}
    for name, outcome in result.items():
        if isinstance(outcome, HostState):
            rows[name] = {"reachable": True, "gpus": [asdict(g) for g in outcome.gpus],
                          "workers": [_worker_json(w) for w in outcome.workers]}
        else:
            rows[name] = {"reachable": False, "error": str(outcome)}
    return rows


def print_status(result: FleetResult[HostState], out: Console) -> None:
    """One row per worker, grouped by host; unreachable hosts with the reason."""
    table = Table(title="Cluster")
    for column in ("host", "reachable", "GPUs", "worker", "state", "trial", "heartbeat"):
        table.add_column(column, overflow="fold")
    for name, outcome in result.items():
        if not isinstance(outcome, HostState):
            table.add_row(name, _failed(outcome, "no"), "", "", "", "", "")
            continue
        gpus = ", ".join(f"{g.index}: {g.name} ({g.memory})" for g in outcome.gpus) or "none"
        if not outcome.workers:
            table.add_row(name, "yes", gpus, "-", "no workers", "", "")
        for i, worker in enumerate(outcome.workers):
            trial = worker.trial
            table.add_row(
                name if i == 0 else "", "yes" if i == 0 else "", gpus if i == 0 else "",
                worker.name, worker.state,
                f"{trial['experiment']} #{trial['tid']} ({trial['running_s']:.0f} s)"
                if trial else "",
                f"{worker.heartbeat_age_s:.1f} s ago" if worker.heartbeat_age_s is not None
                else "")
    out.print(table)
    print_failures(result, out)


# -- stop --------------------------------------------------------------------------------------


def stop_json(result: FleetResult[StopReport]) -> dict[str, Any]:
    """Host -> the workers stopped and those that were not running, or the error."""
    return {name: {"ok": True, "stopped": r.stopped, "not_running": r.not_running}
            if isinstance(r, StopReport) else {"ok": False, "error": str(r)}
            for name, r in result.items()}


def print_stopped(result: FleetResult[StopReport], out: Console) -> None:
    table = Table(title="Stopped")
    for column in ("host", "result", "stopped", "were not running"):
        table.add_column(column, overflow="fold")
    for name, outcome in result.items():
        if isinstance(outcome, StopReport):
            table.add_row(name, _ok(), ", ".join(outcome.stopped) or "-",
                          ", ".join(outcome.not_running) or "-")
        else:
            table.add_row(name, _failed(outcome), "", "")
    out.print(table)
    print_failures(result, out)


def print_failures(result: FleetResult[Any], out: Console, *,
                   with_output: bool = False) -> None:
    """Each failed host on a line of its own (a table cell may be cut); with
    ``with_output`` also the last output of the command that failed."""
    for name, exc in result.failed.items():
        out.print(f"{name} failed: {exc}", style="red", markup=False, highlight=False,
                  soft_wrap=True)
        output = getattr(exc, "output", "") if with_output else ""
        if output:
            out.print(f"{name}: last output of the failed step:", style="bold",
                      markup=False)
            out.print(output[-1500:], markup=False, highlight=False, soft_wrap=True)
