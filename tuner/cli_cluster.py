"""Commands for a cluster of SSH hosts: ``cluster provision|status|logs|stop``,
``flower``, ``experiments logs``, and the ``--hosts`` options of ``hyperparameters run``.

A thin adapter like :mod:`tuner.cli` (which calls :func:`add_commands` while building
its parser): arguments in, a call to :mod:`workers.provisioning` or
:mod:`tuner.flower`, a per-host summary out. Hosts come from ``--hosts`` or
``--inventory``, else from the cluster last provisioned from this folder
(``.tuner/cluster.json``). Library errors (``TunerError``) become one-line messages in
``tuner.cli.main``; a fleet operation that failed on some hosts prints every host's
outcome and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from broker.errors import ConfigError, TunerError
from broker.settings import Settings

console = Console()


# -- parser ----------------------------------------------------------------------------------


def add_commands(groups: Any, hyperparameters_run_parser: argparse.ArgumentParser,
                 experiments_subparsers: Any) -> None:
    """Add ``cluster`` and ``flower`` to the top-level ``groups``, the cluster options
    to ``hyperparameters run`` and ``logs`` to the ``experiments`` subcommands."""
    cluster = groups.add_parser("cluster", help="GPU workers on your SSH hosts",
                                description="Provision, inspect and stop workers on SSH hosts.")
    commands = cluster.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    prov = commands.add_parser(
        "provision", help="install the project and start one worker per GPU on each host",
        description="For each host, in parallel: check Python, create a venv, install this "
        "project and the workspace (and its requirements.txt), detect GPUs, start one worker "
        "per GPU. Idempotent: workers already running the same code are left alone.")
    _host_options(prov, trust=True)
    _provision_options(prov)
    prov.add_argument("--worker-count", type=int,
                      help="workers in total, spread over the hosts (default: one per GPU)")
    prov.add_argument("--format", choices=["table", "json"], default="table")
    prov.set_defaults(handler=_provision)

    status = commands.add_parser("status", help="per host: reachable, GPUs, workers, trials")
    _host_options(status)
    status.add_argument("--format", choices=["table", "json"], default="table")
    status.set_defaults(handler=_status)

    logs = commands.add_parser("logs", help="a host's worker logs")
    logs.add_argument("host", help="host name (as provisioned)")
    logs.add_argument("--gpu", help="only the worker of this GPU")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    logs.add_argument("--lines", "-n", type=int, default=100, help="lines to show (default 100)")
    _ssh_options(logs)
    logs.set_defaults(handler=_logs)

    stop = commands.add_parser("stop", help="stop the workers provisioning started",
                               description="Stop the workers provisioning started (all hosts "
                               "of the cluster, or --hosts); running trials go back to the "
                               "queue for the other workers. Nothing else is touched.")
    _host_options(stop)
    stop.add_argument("--format", choices=["table", "json"], default="table")
    stop.set_defaults(handler=_stop)

    bundle = commands.add_parser(
        "bundle", help="write the project wheel and the workspace archive (for Ansible)",
        description="Write what provisioning ships to the hosts, for ansible/site.yml: "
        "this project as a wheel (tuner_project_wheel) and the workspace as an archive "
        "without .git, venvs, caches and .tuner (tuner_workspace_archive).")
    bundle.add_argument("--workspace", default=".", help="the tuning code (default: .)")
    bundle.add_argument("--out", required=True, help="folder to write them to")
    bundle.set_defaults(handler=_bundle)

    flower = groups.add_parser(
        "flower", help="Flower (workers and trial tasks) with authentication",
        description="Run Flower against the configured broker. Credentials come from "
        "TUNER_FLOWER_USER and TUNER_FLOWER_PASSWORD.")
    flower.add_argument("--address", default=None,
                        help="address to bind (default 127.0.0.1; Flower can shut workers "
                        "down, keep it private)")
    flower.add_argument("--port", type=int, default=None, help="port (default 5555)")
    flower.add_argument("--url-prefix", help="serve under this path (behind a proxy)")
    flower.add_argument("--no-auth", action="store_true",
                        help="run without authentication (not recommended)")
    flower.set_defaults(handler=_flower)

    run = hyperparameters_run_parser
    cluster_group = run.add_argument_group(
        "cluster", "provision (or reuse) --worker-count workers on SSH hosts for this "
        "experiment instead of starting them on this machine")
    _host_options(cluster_group, trust=True,
                  with_hosts_help="hosts to run the workers on, e.g. gpu1,gpu2")
    cluster_group.add_argument("--stop-workers", action="store_true",
                               help="stop the workers this run started when it ends")
    for flag, kwargs in _provision_flags().items():
        if flag not in ("--workspace", "--worker-machine-type", "--worker-command"):
            cluster_group.add_argument(flag, **kwargs)

    trial_logs = experiments_subparsers.add_parser(
        "logs", help="the full stdout/stderr of one trial, from the worker that ran it")
    trial_logs.add_argument("name", help="experiment name or id")
    trial_logs.add_argument("tid", type=int, help="trial id")
    trial_logs.add_argument("--attempt", type=int, help="which run of the trial (default: last)")
    _ssh_options(trial_logs)
    trial_logs.set_defaults(handler=_experiments_logs)


def _ssh_options(parser: Any) -> None:
    parser.add_argument("--known-hosts", help="known_hosts file to verify host keys against "
                        "(default: the cluster's, else ~/.ssh/known_hosts)")


def _host_options(parser: Any, *, trust: bool = False,
                  with_hosts_help: str | None = None) -> None:
    parser.add_argument("--hosts", help=with_hosts_help or "comma-separated [user@]host[:port] "
                        "(or names of provisioned hosts)")
    parser.add_argument("--inventory", "-i", help="Ansible inventory (YAML or INI): the hosts "
                        "of group 'workers' with their ansible_*/tuner_* variables")
    parser.add_argument("--user", help="SSH user (default: your SSH config's, else yours)")
    parser.add_argument("--key", help="SSH private key file")
    parser.add_argument("--port", type=int, help="SSH port (default 22)")
    _ssh_options(parser)
    if trust:
        parser.add_argument("--trust-new-hosts", action="store_true",
                            help="accept and record the key of a host not in known_hosts "
                            "(first contact only; a changed key is always refused)")


def _provision_flags() -> dict[str, dict[str, Any]]:
    return {
        "--workspace": {"help": "the tuning code: a folder (default .) or git+URL[@REF]"},
        "--worker-machine-type": {"dest": "worker_machine_type",
                                  "help": "queue of the workers (a host's tuner_machine_type "
                                  "wins)"},
        "--worker-command": {"help": "shell command that starts one worker on a host "
                             "(default: python -m workers ...); it gets TUNER_GPU, "
                             "CUDA_VISIBLE_DEVICES, TUNER_WORKER_NAME and the settings"},
        "--cpu-workers": {"type": int, "default": 1,
                          "help": "workers on a host without GPUs (default 1)"},
        "--python": {"help": "interpreter on the hosts to create the venv from "
                     "(default python3)"},
        "--remote-dir": {"help": "folder on the hosts (default ~/.gpu-tuner)"},
        "--system-site-packages": {"action": "store_true", "default": None,
                                   "help": "let the venv see the host's system packages "
                                   "(e.g. a preinstalled PyTorch)"},
        "--project": {"help": "pip requirement for this project on the hosts (default: "
                      "ship the copy this machine runs)"},
        "--pip-arg": {"action": "append", "default": [], "dest": "pip_args",
                      "help": "extra argument for pip on the hosts (repeatable)"},
        "--join-timeout": {"type": float, "default": 90.0,
                           "help": "seconds started workers get to join the pool (default "
                           "90; 0: do not wait)"},
    }


def _provision_options(parser: Any) -> None:
    for flag, kwargs in _provision_flags().items():
        parser.add_argument(flag, **kwargs)


# -- hosts and settings ------------------------------------------------------------------------


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    from tuner import cli

    return cli._settings(args, **overrides)


def select_hosts(args: argparse.Namespace, settings: Settings, *,
                 required: bool = False) -> list[Any]:
    """The hosts an invocation is about (:func:`workers.provisioning.lookup.select_hosts`)."""
    from dataclasses import fields

    from workers.provisioning.lookup import HostQuery
    from workers.provisioning.lookup import select_hosts as select

    query = HostQuery(**{f.name: getattr(args, f.name, None) for f in fields(HostQuery)})
    return select(query, settings.state_dir.expanduser(), required=required)


def known_hosts(args: argparse.Namespace, settings: Settings) -> Path:
    from workers.provisioning import state
    from workers.provisioning.ssh import DEFAULT_KNOWN_HOSTS

    chosen = getattr(args, "known_hosts", None) or state.known_hosts(
        settings.state_dir.expanduser()) or DEFAULT_KNOWN_HOSTS
    return Path(chosen).expanduser()


def _options(args: argparse.Namespace, settings: Settings, *, worker_count: int | None,
             workspace: str | None = None) -> Any:
    from workers.provisioning import ProvisionOptions

    return ProvisionOptions(
        workspace=workspace or getattr(args, "workspace", None) or ".",
        machine_type=getattr(args, "worker_machine_type", None),
        worker_count=worker_count,
        worker_command=getattr(args, "worker_command", None),
        cpu_workers=args.cpu_workers,
        known_hosts=known_hosts(args, settings),
        trust_new_hosts=args.trust_new_hosts,
        project=args.project,
        pip_args=tuple(args.pip_args),
        join_timeout_s=args.join_timeout,
    )


# -- cluster provision / status / logs / stop ---------------------------------------------------


def _provision(args: argparse.Namespace) -> int:
    from tuner import cluster_report
    from workers.provisioning import provision

    settings = _settings(args, machine_type=args.worker_machine_type)
    hosts = select_hosts(args, settings, required=True)
    result = provision(hosts, settings, _options(args, settings,
                                                 worker_count=args.worker_count))
    return _report(result, args.format, cluster_report.provision_json,
                   cluster_report.print_provisioned)


def _status(args: argparse.Namespace) -> int:
    from tuner import cluster_report
    from workers.provisioning import cluster_status

    settings = _settings(args)
    hosts = select_hosts(args, settings)
    with _optional_store(settings) as store:
        result = cluster_status(hosts, known_hosts=known_hosts(args, settings), store=store,
                                lease_s=settings.lease_s)
    return _report(result, args.format, cluster_report.status_json, cluster_report.print_status)


def _report(result: Any, fmt: str, as_json: Callable[[Any], Any],
            as_table: Callable[[Any, Console], None]) -> int:
    """Print a fleet result as JSON or as a table; status 1 when a host failed."""
    if fmt == "json":
        console.print_json(data=as_json(result))
    else:
        as_table(result, console)
    return 0 if result.ok else 1


@contextmanager
def _optional_store(settings: Settings) -> Iterator[Any]:
    """The store when configured and reachable (status then shows heartbeats and
    trials), else ``None`` with a note: the hosts can still be inspected."""
    from broker.store import connect

    if settings.uses_local_default:
        yield None
        return
    try:
        store = connect(settings)
    except TunerError as exc:
        console.print(f"note: {exc}; showing the hosts only", style="yellow", markup=False)
        yield None
        return
    try:
        yield store
    finally:
        store.close()


def _logs(args: argparse.Namespace) -> int:
    from workers.provisioning import stream_worker_logs

    settings = _settings(args)
    chosen = argparse.Namespace(hosts=args.host, inventory=None, user=None, key=None, port=None)
    (host,) = select_hosts(chosen, settings)
    try:
        return stream_worker_logs(host, sys.stdout, gpu=args.gpu, lines=args.lines,
                                  follow=args.follow, known_hosts=known_hosts(args, settings))
    except KeyboardInterrupt:
        return 0


def _stop(args: argparse.Namespace) -> int:
    from tuner import cluster_report
    from workers.provisioning import state, stop_workers

    settings = _settings(args)
    hosts = select_hosts(args, settings)
    result = stop_workers(hosts, known_hosts=known_hosts(args, settings))
    state.forget_workers(settings.state_dir.expanduser(),
                         {n: r.stopped + r.not_running for n, r in result.succeeded.items()})
    return _report(result, args.format, cluster_report.stop_json, cluster_report.print_stopped)


def _bundle(args: argparse.Namespace) -> int:
    from workers.provisioning.bundle import project_wheel, workspace_archive

    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    for artifact, variable in ((project_wheel(), "tuner_project_wheel"),
                               (workspace_archive(Path(args.workspace)),
                                "tuner_workspace_archive")):
        path = out / artifact.filename
        path.write_bytes(artifact.data)
        console.print(f"{variable}: {path.resolve()}", markup=False, highlight=False)
    return 0


# -- flower ------------------------------------------------------------------------------------


def _flower(args: argparse.Namespace) -> int:
    from broker.services import resolve
    from tuner import flower

    settings = _settings(args)
    options = flower.FlowerOptions(
        address=args.address or flower.DEFAULT_ADDRESS, port=args.port or flower.DEFAULT_PORT,
        user=settings.flower_user, password=settings.flower_password,
        allow_unauthenticated=args.no_auth, url_prefix=args.url_prefix)
    flower.flower_argv(options)  # refuse missing credentials before anything else
    resolved, _ = resolve(settings, start=False)
    return flower.run_flower(resolved, options)


# -- experiments logs ---------------------------------------------------------------------------


def _experiments_logs(args: argparse.Namespace) -> int:
    from tuner import cli
    from workers.provisioning.lookup import trial_log

    def find(store: Any) -> dict[str, Any]:
        experiment = cli._experiment(store, args.name)
        doc = store.trial(experiment["_id"], args.tid)
        if doc is None:
            raise TunerError(f"experiment {experiment['name']} has no trial {args.tid}")
        return doc

    settings = _settings(args)
    doc = cli._with_store(args, find)
    text, note = trial_log(doc, args.attempt, settings.state_dir.expanduser(),
                           known_hosts=known_hosts(args, settings))
    if note:
        print(f"note: {note}", file=sys.stderr)
    sys.stdout.write(text)
    if text and not text.endswith("\n"):
        sys.stdout.write("\n")
    return 0 if not note else 1


# -- hyperparameters run --hosts ------------------------------------------------------------------


def cluster_request(args: argparse.Namespace, settings: Settings,
                    worker_count: int | None) -> Any:
    """The :class:`~workers.provisioning.pool.ClusterRequest` of a ``hyperparameters run``
    given ``--hosts``/``--inventory``: ``worker_count`` workers (``None``: one per GPU)
    on those hosts. ``None`` without them (workers run on this machine) or with a
    ``worker_count`` of 0 (the workers already running serve the experiment)."""
    from workers.provisioning import check_reachable
    from workers.provisioning.pool import ClusterRequest

    if not (args.hosts or args.inventory) or worker_count == 0:
        return None
    check_reachable(settings)  # before anything starts the loopback local default
    hosts = select_hosts(args, settings, required=True)
    other = [h for h in hosts if h.machine_type not in (None, settings.machine_type)]
    if other:
        raise ConfigError(
            f"the experiment runs on queue {settings.queue} but "
            + ", ".join(f"{h.name} is of machine type {h.machine_type}" for h in other)
            + " (tuner_machine_type): pass --worker-machine-type or choose other hosts")
    options = _options(args, settings, worker_count=worker_count,
                       workspace=str(settings.workspace))
    return ClusterRequest(hosts=hosts, options=options, stop_workers=args.stop_workers)


@contextmanager
def cluster_workers(request: Any, settings: Settings, out: Console) -> Iterator[int]:
    """Provision the experiment's workers (printing the per-host summary), yield their
    number, and with ``--stop-workers`` stop those started when the block ends."""
    from tuner import cluster_report
    from workers.provisioning.pool import experiment_workers

    def stopped(result: Any) -> None:
        for name, outcome in result.items():
            if isinstance(outcome, BaseException):
                out.print(f"{name}: could not stop workers: {outcome}", style="red",
                          markup=False, highlight=False)
            elif outcome.stopped:
                out.print(f"{name}: stopped {', '.join(outcome.stopped)}")

    with experiment_workers(request, settings,
                            on_provisioned=lambda r: cluster_report.print_provisioned(r, out),
                            on_stopped=stopped) as count:
        yield count
