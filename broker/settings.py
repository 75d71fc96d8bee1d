"""One settings object for every process: the tuner, the workers and the CLI.

Values come from the environment (names in :data:`ENV`), then from command-line flags
(passed as keyword overrides). Nothing else in the project reads ``os.environ`` for
configuration. With neither a broker URL nor a MongoDB URL configured, the *local
default* applies: :mod:`broker.services` starts a password-protected ``redis-server``
and an ``nx-27017`` MongoDB wire server on loopback, with data under ``state_dir``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker import defaults
from broker.errors import ConfigError

ENV: dict[str, str] = {
    "broker_url": "TUNER_BROKER_URL",
    "mongo_url": "TUNER_MONGO_URL",
    "mongo_db": "TUNER_MONGO_DB",
    "experiment": "TUNER_EXPERIMENT",
    "secret": "TUNER_SECRET",
    "machine_type": "TUNER_MACHINE_TYPE",
    "state_dir": "TUNER_HOME",
    "workspace": "TUNER_WORKSPACE",
    "max_evals": "TUNER_MAX_EVALS",
    "parallelism": "TUNER_PARALLELISM",
    "queue_ahead": "TUNER_QUEUE_AHEAD",
    "heartbeat_s": "TUNER_HEARTBEAT_S",
    "lease_s": "TUNER_LEASE_S",
    "max_attempts": "TUNER_MAX_ATTEMPTS",
    "visibility_timeout_s": "TUNER_VISIBILITY_TIMEOUT_S",
    "progress": "TUNER_PROGRESS",
    "result_retry_s": "TUNER_RESULT_RETRY_S",
    "mongo_outage_s": "TUNER_MONGO_OUTAGE_S",
    "allow_unauthenticated_mongo": "TUNER_ALLOW_UNAUTHENTICATED_MONGO",
    "trial_timeout_s": "TUNER_TRIAL_TIMEOUT_S",
    "trial_soft_timeout_s": "TUNER_TRIAL_SOFT_TIMEOUT_S",
    "force_visibility_timeout": "TUNER_FORCE_VISIBILITY_TIMEOUT",
    "weight": "TUNER_WEIGHT",
    "gpu": "TUNER_GPU",
    "worker_name": "TUNER_WORKER_NAME",
    "idle_processes": "TUNER_IDLE_PROCESSES",
    "flower_user": "TUNER_FLOWER_USER",
    "flower_password": "TUNER_FLOWER_PASSWORD",
}
"""Settings field -> environment variable. The README's configuration table lists these
(``tests/broker/test_settings.py`` checks that it does)."""

NOT_INHERITED = frozenset({"flower_user", "flower_password"})
"""Settings :meth:`Settings.to_env` leaves out: Flower's credentials stay with Flower,
no worker or tuning script needs them."""

GRADIENT_ENV = ("MONGO_DB_HOST", "MONGO_DB_PORT", "EXPERIMENT_NAME")
"""Also accepted, for tuning scripts written for Paperspace Gradient's ``hyper_tune``."""


class Secret:
    """A string that does not print itself: ``repr``/``str`` show ``'****'``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


_CREDENTIALS = re.compile(r"(://[^:/@]*):([^@]*)@")


def redact(url: str | None) -> str:
    """The URL with any password replaced by ``***``, for messages and logs."""
    return _CREDENTIALS.sub(r"\1:***@", url or "")


@dataclass(frozen=True)
class Settings:
    """Connection and behaviour settings, immutable; derive variants with :meth:`replace`."""

    broker_url: str | None = None
    mongo_url: str | None = None
    mongo_db: str = defaults.MONGO_DB
    experiment: str | None = None
    secret: Secret | None = field(default=None, repr=False)
    machine_type: str = defaults.DEFAULT_MACHINE_TYPE
    state_dir: Path = Path(defaults.STATE_DIR)
    workspace: Path = field(default_factory=Path.cwd)
    max_evals: int | None = None
    parallelism: int | None = None
    queue_ahead: int | None = None
    heartbeat_s: float = defaults.HEARTBEAT_S
    lease_s: float = defaults.LEASE_S
    max_attempts: int = defaults.MAX_ATTEMPTS
    visibility_timeout_s: float = defaults.VISIBILITY_TIMEOUT_S
    progress: bool = True
    result_retry_s: float = defaults.RESULT_RETRY_S
    mongo_outage_s: float = defaults.MONGO_OUTAGE_S
    allow_unauthenticated_mongo: bool = False
    trial_timeout_s: float | None = None
    trial_soft_timeout_s: float | None = None
    force_visibility_timeout: bool = False
    weight: float = 1.0
    gpu: str | None = None
    worker_name: str | None = None
    idle_processes: int | None = None
    flower_user: str | None = None
    flower_password: Secret | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.heartbeat_s <= 0 or self.lease_s <= self.heartbeat_s:
            raise ConfigError(
                f"lease ({self.lease_s} s) must be longer than the heartbeat "
                f"({self.heartbeat_s} s) and both positive"
            )
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if (self.broker_url is None) != (self.mongo_url is None):
            missing = ENV["broker_url"] if self.broker_url is None else ENV["mongo_url"]
            raise ConfigError(
                f"{missing} is not set: configure both the broker and MongoDB, "
                "or neither to use the local default services"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``environ`` (default ``os.environ``), then ``overrides``.

        Overrides whose value is ``None`` are ignored, so CLI flags that were not given
        can be passed through unconditionally.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for name, var in ENV.items():
            if env.get(var, "") != "":
                values[name] = _parse(name, types[name], env[var])
        if "mongo_url" not in values and env.get("MONGO_DB_HOST"):
            port = env.get("MONGO_DB_PORT", "27017")
            values["mongo_url"] = f"mongodb://{env['MONGO_DB_HOST']}:{port}"
        if "experiment" not in values and env.get("EXPERIMENT_NAME"):
            values["experiment"] = env["EXPERIMENT_NAME"]
        for name, value in overrides.items():
            if name not in types:
                raise TypeError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = _coerce(name, types[name], value)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def uses_local_default(self) -> bool:
        """True when no external services are configured."""
        return self.broker_url is None and self.mongo_url is None

    @property
    def queue(self) -> str:
        """The Celery queue for this machine type."""
        from broker.names import queue_for

        return queue_for(self.machine_type)

    def to_env(self) -> dict[str, str]:
        """Environment variables that reproduce these settings in a child process.

        Includes the Gradient-compatible names, so tuning scripts written for Gradient
        find MongoDB and their experiment name where they expect them; leaves out
        :data:`NOT_INHERITED`.
        """
        env: dict[str, str] = {}
        for name, var in ENV.items():
            value = getattr(self, name)
            if value is None or name in NOT_INHERITED:
                continue
            if isinstance(value, Secret):
                value = value.reveal()
            elif isinstance(value, bool):
                value = "1" if value else "0"
            env[var] = str(value)
        if self.experiment:
            env["EXPERIMENT_NAME"] = self.experiment
        host_port = _single_host(self.mongo_url)
        if host_port:
            env["MONGO_DB_HOST"], env["MONGO_DB_PORT"] = host_port
        return env

    def check_time_limits(self) -> None:
        """:class:`ConfigError` if the time limits are inconsistent, or if a trial may
        outlive the broker's visibility timeout (Redis would hand its message to a second
        worker) and that was not explicitly allowed."""
        hard, soft = self.trial_timeout_s, self.trial_soft_timeout_s
        if (hard is not None and hard <= 0) or (soft is not None and soft <= 0):
            raise ConfigError("trial time limits must be positive")
        if hard is not None and soft is not None and soft >= hard:
            raise ConfigError(f"the soft time limit ({soft} s) must be below the hard one "
                              f"({hard} s)")
        if hard is not None and hard >= self.visibility_timeout_s and not (
                self.force_visibility_timeout):
            raise ConfigError(
                f"the broker's visibility timeout ({self.visibility_timeout_s:.0f} s, "
                f"{ENV['visibility_timeout_s']}) is not longer than the trial time limit "
                f"({hard:.0f} s): raise it, or set {ENV['force_visibility_timeout']}=1")

    def require_secret(self) -> Secret:
        if self.secret is None or not self.secret.reveal():
            raise ConfigError(
                f"{ENV['secret']} is not set: the tuner signs each experiment spec with this "
                "shared secret and workers refuse unsigned specs (the local default "
                "generates one)"
            )
        return self.secret


def _single_host(url: str | None) -> tuple[str, str] | None:
    match = re.match(r"mongodb://(?:[^@/]*@)?([^:/,]+):(\d+)(?:/|$)", url or "")
    return (match.group(1), match.group(2)) if match else None


def _parse(name: str, kind: Any, text: str) -> Any:
    return _coerce(name, kind, text.strip())


def _coerce(name: str, kind: Any, value: Any) -> Any:
    kind = str(kind)
    try:
        if "Secret" in kind:
            return value if isinstance(value, Secret) else Secret(str(value))
        if "Path" in kind:
            return Path(value).expanduser()
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            return str(value).lower() not in ("0", "false", "no", "off", "")
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name} ({ENV.get(name, name)}): {exc}") from None
    return str(value)
