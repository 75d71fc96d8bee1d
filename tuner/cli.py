"""``python -m tuner``: a thin command-line adapter over the library.

Only this module turns exceptions into exit codes and one-line messages.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from broker.errors import TunerError
from broker.services import LocalServices, resolve
from broker.settings import ENV, Settings
from broker.store import TrialStore, connect
from tuner import report
from tuner.run_command import RunRequest, run_experiment

console = Console()
T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tuner",
        description="Distributed hyperparameter tuning with Hyperopt, Celery and MongoDB.")
    parser.add_argument("--state-dir", help=f"local default services' folder ({ENV['state_dir']};"
                        " default ./.tuner)")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    hp = groups.add_parser("hyperparameters", help="run hyperparameter tuning experiments")
    hp_cmds = hp.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    run = hp_cmds.add_parser("run", help="create (or resume) an experiment and run it",
                             description="Start what is missing, run the tuning command "
                             "against it, show progress, print the best parameters.")
    run.add_argument("--name", required=True, help="experiment name; an existing name resumes")
    run.add_argument("--tuning-command", required=True,
                     help="command that runs the tuning (calls hyper_tune), e.g. 'python tune.py'")
    run.add_argument("--worker-command", help="command that starts one worker "
                     "(default: python -m workers)")
    run.add_argument("--worker-count", type=int,
                     help="workers to start on this machine (default 2), or on --hosts "
                     "(default one per GPU); 0 uses those already running")
    run.add_argument("--worker-machine-type", help="machine type, i.e. queue, of the workers")
    run.add_argument("--workspace", help="folder with the tuning code (default: .)")
    run.add_argument("--max-evals", type=int, help="overrides max_evals of the tuning script")
    run.add_argument("--trial-timeout", type=float, metavar="SECONDS",
                     help="kill a trial (and its child processes) after this long")
    run.add_argument("--trial-soft-timeout", type=float, metavar="SECONDS",
                     help="raise SoftTimeLimitExceeded in the objective after this long")
    run.add_argument("--weight", type=float,
                     help="share of a worker pool shared with other experiments (default 1)")
    run.set_defaults(handler=_hyperparameters_run)

    exp = groups.add_parser("experiments", help="inspect experiments")
    exp_cmds = exp.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    listing = exp_cmds.add_parser("list", help="all experiments")
    listing.add_argument("--format", choices=["table", "json"], default="table")
    listing.set_defaults(handler=_experiments_list)
    show = exp_cmds.add_parser("show", help="one experiment: state, counts, best trial")
    show.add_argument("name", help="experiment name or id")
    show.add_argument("--format", choices=["table", "json"], default="table")
    show.set_defaults(handler=_experiments_show)
    trials = exp_cmds.add_parser("trials", help="the trials of one experiment")
    trials.add_argument("name", help="experiment name or id")
    trials.add_argument("--format", choices=["table", "json", "csv"], default="table")
    trials.set_defaults(handler=_experiments_trials)

    from tuner import cli_cluster, cli_results

    cli_results.add_commands(groups, exp_cmds)  # dashboard, experiments export / compare
    cli_cluster.add_commands(groups, run, exp_cmds)  # cluster, flower, experiments logs

    services = groups.add_parser("services", help="the local default Redis and MongoDB")
    svc_cmds = services.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for name, handler, text in (("up", _services_up, "start them (idempotent)"),
                                ("down", _services_down, "stop them"),
                                ("status", _services_status, "show whether they run")):
        svc_cmds.add_parser(name, help=text).set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return Settings.from_env(state_dir=args.state_dir, **overrides)


# -- hyperparameters -----------------------------------------------------------------------


def _hyperparameters_run(args: argparse.Namespace) -> int:
    settings = _settings(args, experiment=args.name, machine_type=args.worker_machine_type,
                         workspace=args.workspace, max_evals=args.max_evals,
                         trial_timeout_s=args.trial_timeout,
                         trial_soft_timeout_s=args.trial_soft_timeout, weight=args.weight)
    settings.check_time_limits()
    from tuner import cli_cluster

    cluster = cli_cluster.cluster_request(args, settings, args.worker_count)
    remote = None if cluster is None else (
        lambda resolved: cli_cluster.cluster_workers(cluster, resolved, console))
    on_hosts = bool(args.hosts or args.inventory)
    local_count = 0 if on_hosts else (2 if args.worker_count is None else args.worker_count)
    request = RunRequest(name=args.name, tuning_command=args.tuning_command,
                         worker_count=local_count, worker_command=args.worker_command,
                         remote_workers=remote)
    return run_experiment(request, settings, console)


# -- experiments ------------------------------------------------------------------------------


def _with_store(args: argparse.Namespace, use: Callable[[TrialStore], T]) -> T:
    """``use(store)`` with a store of the configured services (the local default is
    started for the call when it does not run, and stopped again)."""
    settings = _settings(args)
    resolved, started = resolve(settings, start=True)
    try:
        store = connect(resolved)
        try:
            return use(store)
        finally:
            store.close()
    finally:
        if started:
            LocalServices(settings.state_dir).down(started)


def _experiment(store: TrialStore, name: str) -> dict[str, Any]:
    doc = store.find_experiment(name)
    if doc is None:
        raise TunerError(f"no experiment named {name!r}")
    return doc


def _counts(store: TrialStore, exp_id: str) -> dict[str, int]:
    return {s.value: n for s, n in store.count_by_state(exp_id).items()}


def _experiments_list(args: argparse.Namespace) -> int:
    def use(store: TrialStore) -> int:
        rows = [report.experiment_row(doc, _counts(store, doc["_id"]))
                for doc in store.list_experiments()]
        _emit(rows, args.format, title="Experiments")
        return 0
    return _with_store(args, use)


def _experiments_show(args: argparse.Namespace) -> int:
    def use(store: TrialStore) -> int:
        doc = _experiment(store, args.name)
        details = {k: v for k, v in doc.items() if k not in ("spec", "spec_signature")}
        details["counts"] = _counts(store, doc["_id"])
        if args.format == "json":
            console.print_json(data=details, default=str)
            return 0
        table = Table(title=f"Experiment {doc['name']}", show_header=False)
        for key, value in report.flatten(details).items():
            table.add_row(key, _text(value, key))
        console.print(table)
        return 0
    return _with_store(args, use)


def _experiments_trials(args: argparse.Namespace) -> int:
    def use(store: TrialStore) -> int:
        doc = _experiment(store, args.name)
        rows = [report.trial_row(t) for t in store.find_trials(doc["_id"])]
        _emit(rows, args.format, title=f"Trials of {doc['name']}")
        return 0
    return _with_store(args, use)


def _emit(rows: list[dict[str, Any]], fmt: str, *, title: str) -> None:
    if fmt == "json":
        sys.stdout.write(report.to_json(rows) + "\n")
    elif fmt == "csv":
        sys.stdout.write(report.to_csv(rows))
    else:
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns and k not in (
                "started_at", "ended_at", "worker"))
        table = Table(title=title)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(_text(row.get(c), c) for c in columns))
        console.print(table)


def _text(value: Any, key: str = "") -> str:
    """A table cell: times (``*_at``, seconds since the epoch) as local date and time."""
    if value is None:
        return ""
    if isinstance(value, float) and key.endswith("_at"):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# -- services ------------------------------------------------------------------------------------


def _services_up(args: argparse.Namespace) -> int:
    services = LocalServices(_settings(args).state_dir)
    _, started = services.up()
    console.print(f"started: {', '.join(started)}" if started else "already running")
    return _services_status(args)


def _services_down(args: argparse.Namespace) -> int:
    stopped = LocalServices(_settings(args).state_dir).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _services_status(args: argparse.Namespace) -> int:
    table = Table(title="Local default services")
    for column in ("service", "state", "pid", "address", "data"):
        table.add_column(column)
    for status in LocalServices(_settings(args).state_dir).status():
        table.add_row(status.name, "running" if status.running else "stopped",
                      str(status.pid or ""), status.address or "", str(status.data_dir))
    console.print(table)
    return 0
