"""``python -m tuner flower``: Flower on the configured broker, with authentication.

Flower shows every worker (one per GPU) and every trial's task: its arguments are the
experiment id and trial id, its result (what :mod:`workers.tasks` returns) holds the
experiment, parameters, host, GPU, loss or error and the tail of the trial's log.

Flower lets whoever can reach it see every trial and control workers (shut them down,
change pools), so it binds to loopback by default and refuses to start without basic
authentication credentials (``TUNER_FLOWER_USER``/``TUNER_FLOWER_PASSWORD``) unless
told explicitly (``allow_unauthenticated``). Flower runs inside this process: the
broker password and the credentials never appear on a command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.celery_app import create_app
from broker.errors import ConfigError
from broker.settings import ENV, Secret, Settings

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 5555
USER_ENV = ENV["flower_user"]
PASSWORD_ENV = ENV["flower_password"]
MAX_TASKS = 100_000
"""Tasks Flower keeps in memory (one per trial run)."""
TASK_COLUMNS = "name,uuid,state,args,result,received,started,runtime,worker"
"""The task list shows each trial's ids (args) and its outcome (result) at a glance."""


@dataclass(frozen=True)
class FlowerOptions:
    """Where Flower listens and who may see it (``user``/``password``: basic
    authentication; ``allow_unauthenticated``: run without, explicitly)."""

    address: str = DEFAULT_ADDRESS
    port: int = DEFAULT_PORT
    user: str | None = None
    password: Secret | None = None
    allow_unauthenticated: bool = False
    url_prefix: str | None = None
    max_tasks: int = MAX_TASKS


def flower_argv(options: FlowerOptions) -> list[str]:
    """The ``celery flower`` arguments for ``options``; :class:`ConfigError` when no
    credentials are given and unauthenticated access was not asked for."""
    argv = ["flower", f"--address={options.address}", f"--port={options.port}",
            f"--max_tasks={options.max_tasks}", "--enable_events=True",
            f"--tasks_columns={TASK_COLUMNS}"]
    if options.url_prefix:
        argv.append(f"--url_prefix={options.url_prefix}")
    if options.user and options.password is not None:
        if ":" in options.user or "," in options.user:
            raise ConfigError(f"{USER_ENV} must not contain ':' or ','")
        password = options.password.reveal()
        if "," in password:
            raise ConfigError(f"{PASSWORD_ENV} must not contain ','")
        argv.append(f"--basic_auth={options.user}:{password}")
    elif options.user or options.password is not None:
        raise ConfigError(f"set both {USER_ENV} and {PASSWORD_ENV} for Flower's basic "
                          "authentication")
    elif not options.allow_unauthenticated:
        raise ConfigError(
            f"Flower needs credentials: set {USER_ENV} and {PASSWORD_ENV} (basic "
            "authentication), or pass --no-auth to run it without (anyone who reaches it "
            "can see every trial and shut workers down)")
    return argv


def run_flower(settings: Settings, options: FlowerOptions) -> int:
    """Run Flower against ``settings.broker_url`` until interrupted; its exit status."""
    argv = flower_argv(options)
    if not settings.broker_url:
        raise ConfigError("no broker configured")
    app = create_app(settings)
    return int(app.start(argv=argv) or 0)
