"""Commands for results: ``dashboard``, ``experiments export``, ``experiments compare``.

A thin adapter like :mod:`tuner.cli` (which calls :func:`add_commands` while building its
parser): arguments in, a library call, output out. Library errors (``TunerError``) are
turned into one-line messages by ``tuner.cli.main``.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from broker.store import TrialStore


def add_commands(groups: Any, experiments_subparsers: Any) -> None:
    """Add ``dashboard`` to the top-level ``groups`` and ``export``/``compare`` to the
    ``experiments`` subcommands (both ``argparse`` subparser actions)."""
    from tuner.dashboard.server import DEFAULT_HOST, DEFAULT_PORT
    from tuner.exports import FORMATS

    dashboard = groups.add_parser(
        "dashboard", help="serve the results dashboard (experiments, live charts, comparisons)",
        description="Serve the results dashboard on HOST:PORT until interrupted.")
    dashboard.add_argument("--host", default=DEFAULT_HOST,
                           help=f"address to bind (default {DEFAULT_HOST}; anyone who can "
                           "reach it can read every experiment)")
    dashboard.add_argument("--port", type=int, default=DEFAULT_PORT,
                           help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    dashboard.set_defaults(handler=_dashboard)

    export = experiments_subparsers.add_parser(
        "export", help="write one experiment's trials as CSV, JSON or TensorBoard HParams")
    export.add_argument("name", help="experiment name or id")
    export.add_argument("--format", choices=list(FORMATS), required=True)
    export.add_argument("--out", required=True, help="output folder (created if missing)")
    export.set_defaults(handler=_export)

    compare = experiments_subparsers.add_parser(
        "compare", help="compare experiments: best loss, when it was found, best parameters")
    compare.add_argument("names", nargs="+", metavar="NAME",
                         help="two or more experiment names or ids")
    compare.add_argument("--format", choices=["table", "json"], default="table")
    compare.set_defaults(handler=_compare)


def _dashboard(args: argparse.Namespace) -> int:
    from tuner import cli
    from tuner.dashboard import DashboardServer

    def use(store: TrialStore) -> int:
        try:
            server = DashboardServer(store, host=args.host, port=args.port)
        except OSError as exc:
            from broker.errors import ConfigError

            raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
        with server:
            server.start()
            cli.console.print(f"Dashboard at {server.url} (Ctrl-C to stop)")
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                cli.console.print("stopped")
        return 0

    return cli._with_store(args, use)


def _export(args: argparse.Namespace) -> int:
    from tuner import cli
    from tuner.exports import export

    def use(store: TrialStore) -> int:
        path = export(store, args.name, args.format, Path(args.out))
        cli.console.print(f"wrote {path}", highlight=False)
        return 0

    return cli._with_store(args, use)


def _compare(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tuner import cli, report
    from tuner.compare import compare

    def use(store: TrialStore) -> int:
        results = compare(store, args.names)
        if args.format == "json":
            sys.stdout.write(report.to_json([r.to_dict() for r in results]) + "\n")
            return 0
        # one column per experiment, one row per field: parameters make rows long
        rows = [r.row() for r in results]
        fields: list[str] = []
        for row in rows:
            fields.extend(k for k in row if k not in fields and k != "name")
        table = Table(title="Comparison")
        table.add_column("")
        for row in rows:
            table.add_column(str(row["name"]), overflow="fold")
        for field in fields:
            cells = (cli._text(row.get(field)) for row in rows)
            table.add_row(field.removeprefix("param."), *cells)
        cli.console.print(table)
        return 0

    return cli._with_store(args, use)
