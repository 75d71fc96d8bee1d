"""``python -m workers``: start one Celery worker that evaluates trials.

One worker per GPU (``--gpu N`` pins it with ``CUDA_VISIBLE_DEVICES``), concurrency 1,
consuming the queue of its machine type.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from broker.celery_app import create_app
from broker.errors import TunerError
from broker.notify import check_broker
from broker.services import resolve
from broker.settings import Settings
from broker.store import connect
from workers import context, presence, tasks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workers",
        description="Start a worker that evaluates trials from the broker.")
    parser.add_argument("--queues", "-Q", help="queues to consume (default: the queue of "
                        "--worker-machine-type, e.g. trials.default)")
    parser.add_argument("--worker-machine-type", "--machine-type", dest="machine_type",
                        help="machine type whose queue to consume (default: default)")
    parser.add_argument("--concurrency", "-c", type=int, default=1,
                        help="trials run at once by this worker (default 1: one per GPU)")
    parser.add_argument("--gpu", help="GPU index to pin with CUDA_VISIBLE_DEVICES")
    parser.add_argument("--workspace", help="folder holding the tuning code (default: .)")
    parser.add_argument("--name", help="worker name (default: gpuN@host or cpuPID@host)")
    parser.add_argument("--idle-processes", type=int,
                        help="trial processes of other experiments kept loaded beyond the "
                        "busy ones (default: --concurrency without --gpu, else 0)")
    parser.add_argument("--loglevel", "-l", default="info")
    parser.add_argument("--pool", default="threads",
                        help="Celery pool (default threads: the Celery process stays responsive "
                        "while the trial runs in its own process group)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(machine_type=args.machine_type, gpu=args.gpu,
                                     workspace=args.workspace,
                                     idle_processes=args.idle_processes)
        settings, _ = resolve(settings, start=False)
        settings = settings.replace(state_dir=settings.state_dir.resolve(),
                                    workspace=settings.workspace.resolve(),
                                    idle_processes=idle_processes(settings, args.concurrency))
        settings.require_secret()
        check_broker(settings.broker_url or "")
        connect(settings).close()
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if settings.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = settings.gpu
    name = args.name or settings.worker_name or default_name(settings.gpu)
    context.configure(settings)
    app = create_app(settings)
    tasks.register(app)
    presence.install(app, settings, name, slots=args.concurrency)
    app.worker_main([
        "worker", "--queues", args.queues or settings.queue, "--concurrency",
        str(args.concurrency), "--hostname", name, "--loglevel", args.loglevel,
        "--pool", args.pool, "--without-gossip", "--without-mingle", "--task-events",
    ])
    return 0


def idle_processes(settings: Settings, concurrency: int) -> int:
    """How many idle trial processes of other experiments the worker keeps loaded.

    A worker with several slots and no GPU pinned keeps one per slot, so slots that
    alternate between experiments sharing the pool reuse loaded objectives; a GPU
    worker keeps none, since an idle process would hold the GPU memory the next
    trial needs."""
    if settings.idle_processes is not None:
        return settings.idle_processes
    return concurrency if settings.gpu is None and concurrency > 1 else 0


def default_name(gpu: str | None) -> str:
    host = socket.gethostname()
    return f"gpu{gpu}@{host}" if gpu is not None else f"cpu{os.getpid()}@{host}"
